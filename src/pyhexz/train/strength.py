"""A model's strength table: the matches that prove a model worth shipping, over every fixture
opening from both seats, resumable and spread over processes (benchmarks/strength.py runs it).

The matches (`MATCHES`, targets from issue 16):

    budget-200  MODEL:200 vs rollout:2000   10x the opponent's simulations   score >= 0.90
    budget-800  MODEL:800 vs rollout:8000                                    score >= 0.90
    time-1s     MODEL@1 vs rollout@1        equal think time, 1 s a move     score >= 0.90
    previous    MODEL:800 vs PREVIOUS:800   the model it replaces            score >= 0.55

Each is played over the openings from both seats (train/arena.py); the table gives score, the
95% interval paired by opening and Elo. These matches take hours on a few cores (a rollout:8000
move is about a third of a second; a timed game a minute and a half), so the work is cut into
chunks of a few openings that worker processes take from a queue, one core each (a timed
player's think time is per core: run at most one worker per core). The parent appends each
finished chunk to OUT/results.jsonl and fsyncs it; a rerun with the same OUT plays only the
chunks that are missing, so a run can be stopped and continued, also on another machine with
OUT copied along. OUT/plan.json pins the players, the SHA-256 of the models and each match's
inference backend: results of another model cannot end up in this model's table.

The neural players run on `auto` by default, the backend the CPU player serves with (int8 where
it is exact enough): at equal think time the backend is a large part of the strength (about 4x
the simulations of torch in a second, BENCHMARKS.md), so a timed match measures what a game
server gets. Plans written before the backend was recorded ran torch, and keep it. The same
for the neural players' tree options (`served_tree_config`: the CPU player's evaluation cache,
which lets a timed search run about twice the simulations): recorded per match, and a
plan written before they were searches without the cache, as it did.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import statistics
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pyhexz.infra.process import init_worker_process, spawn_context, start_processes
from pyhexz.infra.storage import sha256
from pyhexz.search.driver import TreeConfig
from pyhexz.search.players import make_player, resolve_model_path
from pyhexz.search.timed import TimedPlayer, served_tree_config
from pyhexz.train.arena import MatchResult, load_openings, play_match, summarize

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
# The backend of a match in a plan that does not name one (written before it was recorded).
UNRECORDED_BACKEND = "torch"
# ... and its neural players' tree options (before they were recorded: no evaluation cache).
UNRECORDED_TREE: dict[str, Any] = {}
RESULTS_FILE = "results.jsonl"
TABLE_FILE = "strength.json"


@dataclass(frozen=True)
class Match:
    id: str
    player1: str      # "{model}" and "{previous}" stand for the models' specs
    player2: str
    target: float     # the score player 1 must reach
    what: str


MATCHES = (
    Match("budget-200", "{model}:200", "rollout:2000", 0.90, "10x the opponent's simulations"),
    Match("budget-800", "{model}:800", "rollout:8000", 0.90, "10x the opponent's simulations"),
    Match("time-1s", "{model}@1", "rollout@1", 0.90, "equal think time, 1 s a move on one core"),
    Match("previous", "{model}:800", "{previous}:800", 0.55, "against the model it replaces"),
)


@dataclass
class Plan:
    """What OUT holds results for: the models (with their SHA-256), the matches, the openings."""

    model: str
    model_sha256: str
    previous: str | None
    previous_sha256: str | None
    matches: list[dict[str, Any]]   # Match fields, players filled in
    openings: int
    chunk: int

    def tasks(self) -> list[tuple[str, tuple[int, ...]]]:
        """Every (match id, openings) chunk, match by match."""
        return [(m["id"], tuple(range(i, min(i + self.chunk, self.openings))))
                for m in self.matches for i in range(0, self.openings, self.chunk)]


def make_plan(model: str, previous: str | None, match_ids: list[str] | None, openings: int,
              chunk: int, matches: tuple[Match, ...] = MATCHES, backend: str = "auto") -> Plan:
    """The plan for `model` (a player spec's model: "default" or a path) over `matches`; the
    `previous` match only with a previous model. `backend`: the neural players' inference
    backend (nn/backends.py), recorded per match."""
    known = {m.id for m in matches}
    unknown = sorted(set(match_ids or []) - known)
    if unknown:
        raise ValueError(f"unknown matches {unknown}: choose from {sorted(known)}")
    if chunk < 1 or openings < 1:
        raise ValueError("openings and chunk must be >= 1")
    def needs_previous(m: Match) -> bool:
        return "{previous}" in m.player1 + m.player2
    chosen = [m for m in matches if (match_ids is None or m.id in match_ids)
              and (previous or not needs_previous(m))]
    asked = [m.id for m in matches if match_ids and m.id in match_ids and needs_previous(m)]
    if asked and not previous:
        raise ValueError(f"the match {asked[0]!r} needs the previous model (--previous)")

    def fill(spec: str) -> str:
        return spec.format(model=model, previous=previous)
    return Plan(model, _model_sha256(model), previous,
                _model_sha256(previous) if previous else None,
                [dict(asdict(m), player1=fill(m.player1), player2=fill(m.player2),
                      backend=backend, tree=asdict(served_tree_config())) for m in chosen],
                openings, chunk)


def _model_sha256(spec: str) -> str:
    return sha256(resolve_model_path(spec).read_bytes())


def _read_plan(out: Path) -> Plan | None:
    path = out / PLAN_FILE
    if not path.exists():
        return None
    return Plan(**json.loads(path.read_text(encoding="utf-8")))


def start(out: Path, plan: Plan) -> None:
    """Writes the plan into OUT, or checks that the one there is the same."""
    out.mkdir(parents=True, exist_ok=True)
    have = _read_plan(out)
    if have is None:
        (out / PLAN_FILE).write_text(json.dumps(asdict(plan), indent=1) + "\n", encoding="utf-8")
        return
    if (have.model_sha256, have.previous_sha256, have.openings, have.chunk) != (
            plan.model_sha256, plan.previous_sha256, plan.openings, plan.chunk):
        raise ValueError(f"{out} holds results of another plan (model, previous model, openings "
                         f"or chunk differ): continue with the same settings or use another "
                         f"output folder")
    # More matches than last time is fine: their chunks are simply missing so far.
    ids = {m["id"] for m in have.matches}
    have.matches += [m for m in plan.matches if m["id"] not in ids]
    (out / PLAN_FILE).write_text(json.dumps(asdict(have), indent=1) + "\n", encoding="utf-8")


def read_results(out: Path) -> dict[tuple[str, tuple[int, ...]], dict]:
    """The finished chunks in OUT, by (match id, openings). A torn last line (the process was
    killed while appending) is skipped: that chunk is played again."""
    path = out / RESULTS_FILE
    done: dict[tuple[str, tuple[int, ...]], dict] = {}
    if not path.exists():
        return done
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            r = json.loads(line)
            done[(r["match"], tuple(r["openings"]))] = r
        except (ValueError, KeyError, TypeError):
            log.warning("strength skips a torn line in %s", path)
    return done


def _append(out: Path, record: dict) -> None:
    with open(out / RESULTS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _chunk_seed(match_id: str, first: int) -> int:
    """A seed per chunk, the same whichever worker plays it."""
    return zlib.crc32(match_id.encode()) + 1000 * first


def _backend_of(player: object) -> str | None:
    """The inference backend a neural player runs on (None for rollout and random players):
    what `auto` chose, or the fallback to torch if the asked one could not run."""
    predictor = getattr(player, "predictor", None) or getattr(
        getattr(player, "searcher", None), "evaluate", None)
    return getattr(getattr(predictor, "backend", None), "name", None)


def _worker(tasks, results, players: dict[str, tuple[str, str, str, TreeConfig]],
            openings_path: str | None, device: str) -> None:
    init_worker_process()
    boards = load_openings(Path(openings_path) if openings_path else None)
    while True:
        task = tasks.get()
        if task is None:
            return
        match_id, indices = task
        try:
            seed = _chunk_seed(match_id, indices[0])
            spec1, spec2, backend, tree = players[match_id]
            n = 2 * len(indices)
            p1 = make_player(spec1, device=device, seed=seed, max_games=n, backend=backend,
                             tree=tree)
            p2 = make_player(spec2, device=device, seed=seed + 1, max_games=n, backend=backend,
                             tree=tree)
            t0 = time.perf_counter()
            r = play_match(p1, p2, [boards[i] for i in indices])
            record = {"match": match_id, "openings": list(indices), "outcomes": r.outcomes,
                      "seconds": round(time.perf_counter() - t0, 1)}
            record["backends"] = sorted({b for b in map(_backend_of, (p1, p2)) if b})
            sims = [statistics.median(p.iterations) for p in (p1, p2)
                    if isinstance(p, TimedPlayer) and p.iterations]
            if sims:
                record["simulations_per_move"] = sims
            results.put(record)
        except Exception as e:   # the parent stops the run and says why
            results.put({"error": f"{match_id} openings {indices[0]}..{indices[-1]}: "
                                  f"{type(e).__name__}: {e}"})
            return


def play(out: Path, plan: Plan, workers: int = 1, openings_path: Path | None = None,
         device: str = "cpu") -> int:
    """Plays the chunks of `plan` that OUT does not hold yet, in `workers` processes; returns
    how many it played. Ctrl-C stops it; what finished is kept."""
    start(out, plan)
    done = read_results(out)
    todo = [t for t in plan.tasks() if t not in done]
    total = len(plan.tasks())
    # OUT may hold other matches' chunks too (a plan grown by --matches): count this plan's.
    finished = total - len(todo)
    log.info("strength out=%s chunks_done=%d chunks_todo=%d workers=%d", out, finished,
             len(todo), workers)
    if not todo:
        return 0
    ctx = spawn_context()
    tasks, results = ctx.Queue(), ctx.Queue()
    for t in todo:
        tasks.put(t)
    n = max(1, min(workers, len(todo)))
    for _ in range(n):
        tasks.put(None)
    players = {m["id"]: (m["player1"], m["player2"], m.get("backend", UNRECORDED_BACKEND),
                         TreeConfig(**m.get("tree", UNRECORDED_TREE))) for m in plan.matches}
    procs = [ctx.Process(target=_worker, daemon=True, name=f"strength-{i}", args=(
        tasks, results, players, str(openings_path) if openings_path else None, device))
        for i in range(n)]
    start_processes(procs)
    t0 = time.monotonic()
    played = 0
    try:
        while played < len(todo):
            try:
                record = results.get(timeout=5)
            except queue.Empty:
                # A worker killed under us (out of memory, a signal) took its chunk with it:
                # the others would finish theirs and wait for tasks forever.
                killed = [p for p in procs if p.exitcode not in (None, 0)]
                if killed:
                    raise RuntimeError(
                        f"strength worker {killed[0].name} exited with status "
                        f"{killed[0].exitcode}; what finished is kept, run again to resume") \
                        from None
                if not any(p.is_alive() for p in procs):
                    raise RuntimeError("every strength worker has exited; see the log above") \
                        from None
                continue
            if "error" in record:
                raise RuntimeError(f"a strength match failed: {record['error']}")
            _append(out, record)
            played += 1
            el = time.monotonic() - t0
            log.info("strength match=%s openings=%d-%d chunks=%d/%d elapsed=%.0fs eta=%.0fs",
                     record["match"], record["openings"][0], record["openings"][-1],
                     finished + played, total, el, el / played * (len(todo) - played))
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join(5)
    return played


def table(out: Path) -> dict[str, Any]:
    """The strength table of what OUT holds: per match its score, the 95% interval paired by
    opening and Elo, the target and whether it is met; a match still missing chunks says how
    many openings it has so far (its figures cover those)."""
    plan = _read_plan(out)
    if plan is None:
        raise FileNotFoundError(f"{out} holds no strength run ({PLAN_FILE} is missing)")
    done = read_results(out)
    rows = []
    for m in plan.matches:
        chunks = [done[t] for t in plan.tasks() if t[0] == m["id"] and t in done]
        outcomes = [x for c in chunks for x in c["outcomes"]]
        row: dict[str, Any] = {"match": m["id"], "what": m["what"], "player1": m["player1"],
                               "player2": m["player2"], "target": m["target"],
                               "openings": sum(len(c["openings"]) for c in chunks),
                               "complete": len(chunks) == len(range(0, plan.openings, plan.chunk))}
        if outcomes:
            r = summarize(m["player1"], m["player2"], outcomes,
                          sum(c["seconds"] for c in chunks), games_per_opening=2)
            row.update(_figures(r))
            row["met"] = row["complete"] and r.score >= m["target"]
            # What ran (auto's choice, a fallback): from the results; older ones lack it.
            row["backends"] = sorted({b for c in chunks for b in c.get("backends", [])}) or [
                m.get("backend", UNRECORDED_BACKEND)]
            sims = [c["simulations_per_move"] for c in chunks if "simulations_per_move" in c]
            if sims:
                row["simulations_per_move"] = [statistics.median(s[i] for s in sims)
                                               for i in range(len(sims[0]))]
        rows.append(row)
    return {"model": plan.model, "model_sha256": plan.model_sha256,
            "previous": plan.previous, "previous_sha256": plan.previous_sha256,
            "openings": plan.openings, "seats": 2, "matches": rows,
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _figures(r: MatchResult) -> dict[str, Any]:
    def elo(x: float) -> float | None:
        return None if x in (float("inf"), float("-inf")) else round(x, 1)
    return {"games": r.games, "wins": r.wins, "draws": r.draws, "losses": r.losses,
            "score": round(r.score, 4), "score_paired_low": round(r.score_paired_low, 4),
            "score_paired_high": round(r.score_paired_high, 4), "elo": elo(r.elo),
            "elo_paired_low": elo(r.elo_paired_low), "elo_paired_high": elo(r.elo_paired_high),
            "cpu_seconds": round(r.seconds, 1)}


def markdown(t: dict[str, Any]) -> str:
    """The table as Markdown, for BENCHMARKS.md."""
    def elo(x: float | None, score: float) -> str:
        if x is None:   # an infinite Elo: a score of 0 or 1
            return "-inf" if score <= 0 else "+inf"
        return f"{x:+.0f}"
    lines = ["| match | players | games | score | 95% (paired) | Elo [95%] | target | met |",
             "|---|---|---:|---:|---|---|---:|---|"]
    for r in t["matches"]:
        if "score" not in r:
            lines.append(f"| {r['match']} | {r['player1']} vs {r['player2']} | 0 | - | - | - | "
                         f"{r['target']:.2f} | not played |")
            continue
        met = "yes" if r["met"] else ("no" if r["complete"] else
                                      f"incomplete ({r['openings']}/{t['openings']} openings)")
        lines.append(
            f"| {r['match']} | {r['player1']} vs {r['player2']} | {r['games']} | "
            f"{r['score']:.3f} | [{r['score_paired_low']:.3f}, {r['score_paired_high']:.3f}] | "
            f"{elo(r['elo'], r['score'])} [{elo(r['elo_paired_low'], r['score_paired_low'])}, "
            f"{elo(r['elo_paired_high'], r['score_paired_high'])}] | {r['target']:.2f} | "
            f"{met} |")
    return "\n".join(lines)


__all__ = ["MATCHES", "Match", "Plan", "make_plan", "play", "table", "markdown", "read_results",
           "TABLE_FILE"]
