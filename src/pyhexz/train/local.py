"""Training on one machine: self-play worker processes feeding an in-process trainer.

    python -m pyhexz train --dir DIR

Everything lives under DIR with embedded defaults (no Redis, no cloud):

    DIR/models/flagz/{name}/checkpoints/{N}/...   the checkpoint repository (storage.py)
    DIR/models/flagz/{name}/incoming/*.pb.gz      finished games not yet in a checkpoint
    DIR/models/flagz/{name}/unfinished/           games under way when the job stopped

Crash-safety contract (after KataGo's): the job may be killed at any point and restarted with
the same directory. Each finished game is written to `incoming/` (atomically) before it counts;
a checkpoint records the names of the games it was trained from, and on restart the games in
`incoming/` that the newest checkpoint already holds are dropped, the others are trained in
the next run. So no finished game is lost and none is counted twice. Games still being played
when the job stops (Ctrl-C, SIGTERM) have no result yet: each process saves them to
`unfinished/` (train/unfinished.py) and the next start plays them on first. With `--minutes`
the workers also start no new games shortly before the end and let those under way finish
(selfplay.wind_down_before); the job ends when they have.

The first hour of a new run (issue 17): each process starts with `--start-games` games at once
and adds one each time a game ends, so that the first games end within a minute or two rather
than all 32 together after many minutes; a progress line every `progress_seconds` from the
start says how many moves were played and when the first games and the next checkpoint should
arrive (train/progress.py).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import queue
import signal
import time
from dataclasses import asdict
from pathlib import Path

from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import GAME_FILE_SUFFIX, read_game_file, write_game_file
from pyhexz.infra.process import init_worker_process, spawn_context, start_processes
from pyhexz.infra.storage import CheckpointRepo, LocalStorage, sha256
from pyhexz.search.driver import SearchConfig
from pyhexz.search.players import load_predictor, resolve_model_path
from pyhexz.train import unfinished
from pyhexz.train.config import LocalConfig
from pyhexz.train.progress import Progress, Work
from pyhexz.train.selfplay import SelfPlayStats, run_selfplay, wind_down_before
from pyhexz.train.ship import JOB_META
from pyhexz.train.trainer import InitModel, Trainer, trained_game_names

log = logging.getLogger(__name__)


# What each self-play process publishes after every round of moves, in its row of a shared
# array (the parent's progress line reads them).
_PUBLISHED = ("positions", "games", "under_way", "plies_under_way", "longest_under_way")


def _publish(published, index: int, stats: SelfPlayStats) -> None:
    base = index * len(_PUBLISHED)
    for i, attr in enumerate(_PUBLISHED):
        published[base + i] = getattr(stats, attr)


def _selfplay_worker(root: str, name: str, search: SearchConfig, parallel_games: int,
                     start_games: int, device: str, backend: str, latest, stop, out, seed: int,
                     end: float | None, published, index: int, resume: list[bytes]) -> None:
    init_worker_process()
    repo = CheckpointRepo(LocalStorage(root), name)
    current: dict = {"n": None}

    def model():
        n = latest.value
        if n != current["n"]:
            current.update(n=n, predictor=load_predictor(repo, n, device, backend),
                           key=pb.ModelKey(name=name, checkpoint=n))
            log.info("selfplay model=%s checkpoint=%d", name, n)
        return current["predictor"], current["key"]

    # `end` is a time.monotonic() value of the parent: the clock is system-wide.
    stats = run_selfplay(model, lambda req: out.put(req.SerializeToString()), search,
                         parallel_games=parallel_games, should_stop=stop.is_set,
                         should_start=wind_down_before(end, "selfplay"), seed=seed,
                         on_progress=lambda stats: _publish(published, index, stats),
                         start_games=start_games,
                         resume=[unfinished.decode(data) for data in resume])
    saved = unfinished.save(_unfinished_dir(Path(root), name), stats.unfinished)
    log.info("selfplay done games=%d examples=%d resumed=%d cut_off=%d saved_unfinished=%d "
             "network_leaves=%d transposition_hits=%d solves=%d", stats.games, stats.examples,
             stats.resumed, stats.cut_off, saved, stats.simulations, stats.transposition_hits,
             stats.solves)


def _unfinished_dir(root: Path, name: str) -> Path:
    return root / "models" / "flagz" / name / "unfinished"


def _work(published, num_workers: int) -> Work:
    """The self-play processes' published rows, summed."""
    width = len(_PUBLISHED)
    rows = [dict(zip(_PUBLISHED, published[i * width:(i + 1) * width], strict=True))
            for i in range(num_workers)]
    return Work(moves=sum(r["positions"] for r in rows),
                under_way=sum(r["under_way"] for r in rows),
                plies_under_way=sum(r["plies_under_way"] for r in rows),
                longest_under_way=max(r["longest_under_way"] for r in rows),
                games=sum(r["games"] for r in rows),
                game_moves=sum(max(0, r["positions"] - r["plies_under_way"]) for r in rows))


def _init_model(spec: str) -> InitModel:
    """The model `--init` names ("default": the shipped one, checked against its SHA-256)."""
    from pyhexz.nn import load_checkpoint
    path = resolve_model_path(spec)
    return InitModel(load_checkpoint(path), f"{spec} ({path})" if spec != str(path) else spec,
                     sha256(path.read_bytes()))


def run(cfg: LocalConfig, command: str | None = None) -> int:
    """Runs the job until --minutes / --checkpoints or Ctrl-C; returns the last checkpoint.

    Each checkpoint's meta.json records this session (`command`, the settings, when it
    started), so that how a model was trained can be read back from its run (train/ship.py).
    """
    root = Path(cfg.dir)
    repo = CheckpointRepo(LocalStorage(root), cfg.name)
    session = {JOB_META: {"command": command, "started": time.time(),
                          "settings": json.loads(json.dumps(asdict(cfg), default=str))}}
    init = _init_model(cfg.init) if cfg.init and repo.latest() is None else None
    trainer = Trainer(repo, cfg.train, cfg.device, init=init, created_meta=session)
    spool = root / "models" / "flagz" / cfg.name / "incoming"
    spool.mkdir(parents=True, exist_ok=True)
    _recover_spool(spool, trainer)
    unfinished_dir = _unfinished_dir(root, cfg.name)
    resume = unfinished.take(unfinished_dir)
    if resume:
        log.info("resuming unfinished games=%d from %s", len(resume), unfinished_dir)

    t0 = time.monotonic()
    end = None if cfg.minutes is None else t0 + cfg.minutes * 60
    ctx = spawn_context()
    latest = ctx.Value("i", trainer.checkpoint)
    stop = ctx.Event()
    games_q = ctx.Queue()
    published = ctx.Array("q", len(_PUBLISHED) * cfg.num_workers, lock=False)
    workers = [ctx.Process(target=_selfplay_worker, name=f"selfplay-{i}", daemon=True, args=(
        str(root), cfg.name, cfg.search, cfg.parallel_games, cfg.start_games, cfg.device,
        cfg.backend, latest, stop, games_q,
        # Fresh entropy: a restart from the same checkpoint must not replay the same games.
        int.from_bytes(os.urandom(8), "little"), end, published, i,
        resume[i::cfg.num_workers])) for i in range(cfg.num_workers)]
    start_processes(workers)
    log.info("train dir=%s model=%s checkpoint=%d workers=%d runs_per_move=%d "
             "start_games=%d parallel_games=%d", root, cfg.name, trainer.checkpoint,
             cfg.num_workers, cfg.search.runs_per_move, cfg.start_games, cfg.parallel_games)

    first_checkpoint = trainer.checkpoint
    games = examples = 0
    last_report = t0
    progress = Progress()
    train_seconds = 0.0   # the last training run's (the next checkpoint's estimate adds it)

    def receive(data: bytes | None) -> None:
        nonlocal games, examples
        if data is None:   # a torn message (_take)
            return
        req = pb.AddTrainingExamplesRequest.FromString(data)
        fname = f"{time.time_ns()}-{req.game_id}{GAME_FILE_SUFFIX}"
        write_game_file(spool / fname, req)  # durable before it counts
        examples += trainer.add(fname, req)
        games += 1

    signalled: list[int] = []

    def interrupt(signum, frame):
        # The first signal is noted and the loop stops at its next turn: an exception raised
        # here could land inside the queue's own locking and break it, losing the games still
        # in it. A second one is the user insisting: stop now.
        if signalled:
            raise KeyboardInterrupt
        signalled.append(signum)
    # Ctrl-C and SIGTERM (docker stop, Cloud Run) both stop the job gracefully. Installed
    # explicitly, because a job started in the background inherits an ignored SIGINT.
    previous = {s: signal.signal(s, interrupt) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while True:
            if signalled:
                log.info("train stopping reason=signal signal=%s",
                         signal.Signals(signalled[0]).name)
                break
            if end is not None and time.monotonic() >= end:
                log.info("train stopping reason=minutes")
                break
            if (cfg.checkpoints is not None
                    and trainer.checkpoint - first_checkpoint >= cfg.checkpoints):
                log.info("train stopping reason=checkpoints")
                break
            if not any(w.is_alive() for w in workers):
                if all(w.exitcode == 0 for w in workers):
                    # Only the wind-down ends a worker cleanly; `finally` takes its last games.
                    log.info("train stopping reason=minutes games_finished=all")
                    break
                raise RuntimeError("all self-play workers died; see their log lines above")
            try:
                receive(_take(games_q, 1.0))
            except queue.Empty:
                pass
            if trainer.ready():
                trained = [name for name, _ in trainer.pending]
                stats = trainer.train_and_publish(session)
                train_seconds = stats["seconds"]
                latest.value = trainer.checkpoint
                for name in trained:
                    (spool / name).unlink(missing_ok=True)
                log.info("checkpoint model=%s checkpoint=%d examples_trained=%d policy_loss=%.4f "
                         "value_loss=%.4f train_seconds=%.1f", cfg.name, trainer.checkpoint,
                         trainer.examples_trained, stats["policy_loss"], stats["value_loss"],
                         stats["seconds"])
            work = _work(published, cfg.num_workers)
            progress.observe(work.moves)
            now = time.monotonic()
            if now - last_report >= cfg.progress_seconds:
                last_report = now
                log.info("progress %s examples_per_s=%.1f window=%d", progress.line(
                    work, checkpoint=trainer.checkpoint, examples=examples,
                    pending=trainer.pending_examples, trigger=cfg.train.trigger_examples,
                    full_fraction=cfg.search.full_search_fraction, train_seconds=train_seconds),
                    examples / (now - t0), len(trainer.window))
    except KeyboardInterrupt:
        log.info("train stopping reason=signal (again)")
    finally:
        stop.set()
        # Keep what finished while the workers wind down.
        deadline = time.monotonic() + 60
        while any(w.is_alive() for w in workers) and time.monotonic() < deadline:
            try:
                receive(_take(games_q, 0.2))
            except queue.Empty:
                pass
            except KeyboardInterrupt:
                break
        while True:
            try:
                receive(_take(games_q, None))
            except (queue.Empty, KeyboardInterrupt):
                break
        for w in workers:
            w.join(timeout=5)
            if w.is_alive():
                w.terminate()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        kept = len(list(unfinished_dir.glob("*" + unfinished.SUFFIX)))
        log.info("train stopped checkpoint=%d games=%d examples=%d pending_in_spool=%d "
                 "unfinished_kept=%d", trainer.checkpoint, games, examples,
                 trainer.pending_examples, kept)
    return trainer.checkpoint


def _take(games_q, timeout: float | None) -> bytes | None:
    """The next finished game's bytes from the queue; queue.Empty when none comes within
    `timeout` (None: none is waiting now). None for a torn message: a self-play process that
    died in the middle of putting a game (a signal to the whole process group) lost that game
    with it, and the rest of the queue is still good, so it is skipped with a warning."""
    try:
        return games_q.get(timeout=timeout) if timeout is not None else games_q.get_nowait()
    except (EOFError, pickle.UnpicklingError) as e:
        log.warning("train skipped a torn message from a self-play process that died mid-send "
                    "error=%s", type(e).__name__)
        return None


def _recover_spool(spool: Path, trainer: Trainer) -> None:
    done = trained_game_names(trainer.repo, trainer.checkpoint)  # the trainer resumed the newest
    n = 0
    for f in sorted(spool.glob("*" + GAME_FILE_SUFFIX)):
        if f.name in done:
            f.unlink()  # trained before the last stop; its checkpoint has it
            continue
        n += trainer.add(f.name, read_game_file(f))
    for f in spool.glob(".*.tmp"):
        f.unlink()  # a write that never completed
    if n:
        log.info("recovered examples=%d from %s", n, spool)
