"""Evaluation of each new checkpoint: the matches behind the web UI's Elo curve.

After a checkpoint is published, a short arena (the first `openings` fixture openings, each from
both seats) plays it against the newest checkpoint evaluated before it and against the rollout
baseline. The result goes next to the checkpoint as `eval.json`, written atomically after the
checkpoint's meta.json, so it never blocks or changes publishing:

    models/flagz/{name}/checkpoints/{N}/eval.json
      {"checkpoint": N, "opponent": M, "config": {...}, "created": unix seconds,
       "matches": {"previous": MatchResult, "rollout": MatchResult}}

The Elo curve chains the "previous" matches: Elo(0) = 0 and Elo(N) = Elo(M) + the Elo difference
of N against M. An Elo difference is infinite after a clean sweep; it is clipped to +-MAX_ELO_STEP
so the curve stays drawable. Evaluation runs in its own process (`start_evaluator`), outside the
request path and off the trainer's core budget as far as the OS allows.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Protocol

from pyhexz.infra.storage import CheckpointRepo, StorageError

log = logging.getLogger(__name__)


class EventLike(Protocol):
    """threading.Event or multiprocessing.Event: what the evaluator loop waits on."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...

EVAL_FILE = "eval.json"
MAX_ELO_STEP = 400.0


@dataclass
class EvalConfig:
    openings: int = 8        # first N fixture openings, each played from both seats
    runs: int = 64           # neural MCTS simulations per move
    rollout_runs: int = 200  # the baseline's simulations per move
    device: str = "cpu"
    backend: str = "torch"   # nn/backends.py
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("openings", "runs", "rollout_runs"):
            if getattr(self, name) < 1:
                raise ValueError(f"evaluation {name} must be >= 1, got {getattr(self, name)}")


def _match_dict(r) -> dict:
    d = asdict(r)
    for k in ("elo", "elo_low", "elo_high"):
        if math.isinf(d[k]):
            d[k] = math.copysign(1e9, d[k])  # JSON has no infinity; the sign is what matters
    return d


def _ok(e: dict) -> bool:
    return "rollout" in e.get("matches", {})


def read_eval(repo: CheckpointRepo, n: int) -> dict | None:
    """Checkpoint n's eval.json, or None while it has none (or it cannot be read)."""
    key = repo.key(n, EVAL_FILE)
    try:
        return json.loads(repo.storage.read(key))
    except FileNotFoundError:
        return None
    except (ValueError, StorageError) as e:
        log.warning("eval unreadable checkpoint=%d error=%s", n, e)
        return None


def with_eval(repo: CheckpointRepo) -> set[int]:
    """The checkpoints that have an eval.json: one listing."""
    return {int(x) for x in repo.storage.list_holding(repo.prefix, EVAL_FILE) if x.isdigit()}


def evaluated(repo: CheckpointRepo) -> dict[int, dict]:
    """Checkpoint number -> its eval.json, for the checkpoints evaluated so far."""
    evals = {n: read_eval(repo, n) for n in sorted(with_eval(repo))}
    return {n: e for n, e in evals.items() if e is not None}


def evaluate(repo: CheckpointRepo, n: int, cfg: EvalConfig | None = None,
             done: dict[int, dict] | None = None) -> dict:
    """Plays checkpoint n against its predecessor and the rollout baseline; writes eval.json.

    `cfg`: None plays with the EvalConfig defaults. `done`: the evaluations so far, if the
    caller has them (else they are read).
    """
    if cfg is None:
        cfg = EvalConfig()
    from pyhexz.search.players import NeuralPlayer, RolloutPlayer, load_predictor
    from pyhexz.train.arena import load_openings, play_match

    openings = load_openings()[:cfg.openings]
    done = evaluated(repo) if done is None else done
    player = NeuralPlayer(load_predictor(repo, n, cfg.device, cfg.backend), cfg.runs,
                          name=f"{repo.name}:{n}",
                          max_games=2 * len(openings))
    matches = {}
    previous = max((m for m, e in done.items() if m < n and _ok(e)), default=None)
    if previous is not None:
        other = NeuralPlayer(load_predictor(repo, previous, cfg.device, cfg.backend),
                             cfg.runs,
                             name=f"{repo.name}:{previous}", max_games=2 * len(openings))
        matches["previous"] = _match_dict(play_match(player, other, openings))
    baseline = RolloutPlayer(cfg.rollout_runs, seed=cfg.seed)
    matches["rollout"] = _match_dict(play_match(player, baseline, openings))
    result = {"checkpoint": n, "opponent": previous, "config": asdict(cfg),
              "created": time.time(), "matches": matches}
    repo.storage.write(repo.key(n, EVAL_FILE), json.dumps(result, indent=1).encode())
    log.info("evaluated model=%s checkpoint=%d vs_previous=%s vs_rollout=%.3f", repo.name, n,
             f"{matches['previous']['score']:.3f}" if "previous" in matches else "-",
             matches["rollout"]["score"])
    return result


def elo_curve(evals: dict[int, dict]) -> list[dict]:
    """[{checkpoint, elo, rollout_score}] in checkpoint order, Elo chained through "previous"."""
    evals = {n: e for n, e in evals.items() if _ok(e)}
    elo: dict[int, float] = {}
    for n in sorted(evals):
        e = evals[n]
        prev = e.get("opponent")
        if prev is None:
            elo[n] = 0.0
        elif prev in elo and "previous" in e["matches"]:
            step = max(-MAX_ELO_STEP, min(MAX_ELO_STEP, e["matches"]["previous"]["elo"]))
            elo[n] = elo[prev] + step
    return [{"checkpoint": n, "elo": elo.get(n),
             "rollout_score": evals[n]["matches"]["rollout"]["score"]} for n in sorted(evals)]


def next_to_evaluate(repo: CheckpointRepo, done: dict[int, dict] | None = None) -> int | None:
    """The newest checkpoint without eval.json: a busy evaluator skips ahead, never falls behind."""
    done = evaluated(repo) if done is None else done
    todo = [n for n in repo.checkpoints() if n not in done]
    return todo[-1] if todo else None


def evaluator_loop(storage_url: str, name: str, cfg: EvalConfig, stop: EventLike,
                   poll_seconds: float = 10.0) -> None:
    """Evaluates new checkpoints until `stop` is set; one failure is logged, not fatal.

    The evaluations are read once at start and then kept here: this loop is their one writer.
    """
    from pyhexz.infra.storage import open_storage

    repo = CheckpointRepo(open_storage(storage_url), name)
    done = evaluated(repo)
    while not stop.is_set():
        n = next_to_evaluate(repo, done)
        if n is None:
            stop.wait(poll_seconds)
            continue
        try:
            done[n] = evaluate(repo, n, cfg, done)
        except Exception as e:  # noqa: BLE001 - a bad checkpoint must not stop the evaluator
            log.error("evaluation failed model=%s checkpoint=%d error=%s", name, n, e)
            done[n] = {"checkpoint": n, "error": str(e), "opponent": None, "matches": {}}
            repo.storage.write(repo.key(n, EVAL_FILE), json.dumps(done[n]).encode())


def _evaluator_process(storage_url: str, name: str, cfg: EvalConfig, stop) -> None:
    import os

    from pyhexz.infra.process import init_worker_process
    init_worker_process()
    os.nice(10)  # training and serving come first
    evaluator_loop(storage_url, name, cfg, stop)


def start_evaluator(storage_url: str, name: str, cfg: EvalConfig):
    """Starts the evaluator in a spawned process; returns (process, stop_event)."""
    from pyhexz.infra.process import spawn_context, start_processes

    ctx = spawn_context()
    stop = ctx.Event()
    proc = ctx.Process(target=_evaluator_process, args=(storage_url, name, cfg, stop),
                       name="pyhexz-evaluator", daemon=True)
    start_processes([proc])
    return proc, stop
