"""The `pyhexz` command line (also `python -m pyhexz`).

    pyhexz train --dir DIR              train on this machine (self-play + training)
    pyhexz selfplay --output-dir DIR    self-play games to files
    pyhexz worker --server-url URL      self-play streamed to a training server (Cloud Run)
    pyhexz server --storage DIR|gs://B  the training server (Flask; production: gunicorn)
    pyhexz arena P1 P2                  a match over the fixture openings, both seats
    pyhexz export CHECKPOINT OUT        a checkpoint as a hexz TorchScript file
    pyhexz cpu-server --model-path M    the remote CPU player service (gunicorn)

Every flag can also be set by a HEXZ_* environment variable (for the containers), named after
the flag: --runs-per-move is HEXZ_RUNS_PER_MOVE. A flag on the command line wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

log = logging.getLogger("pyhexz.cli")

# Time budgets (the worker's --max-seconds) count from here, before torch is imported: the
# seconds that import takes are seconds of the Cloud Run task's timeout too.
STARTED = time.monotonic()


class _EnvDefaults(argparse.ArgumentParser):
    """An ArgumentParser whose flag defaults come from HEXZ_* variables when set."""

    def add_argument(self, *args, **kwargs):
        action = super().add_argument(*args, **kwargs)
        long = next((a for a in args if a.startswith("--")), None)
        if long and action.default is not argparse.SUPPRESS:
            env = "HEXZ_" + long[2:].upper().replace("-", "_")
            if env in os.environ:
                raw = os.environ[env]
                try:
                    action.default = action.type(raw) if action.type else (
                        raw.lower() in ("1", "true", "yes") if isinstance(action.const, bool) else raw)
                except (ValueError, argparse.ArgumentTypeError):
                    self.error(f"{env}={raw!r} is not a valid value for {long}")
            if action.help and action.help is not argparse.SUPPRESS:
                action.help += f" [{env}]"
        return action


def _positive(kind: Callable):
    def parse(s: str):
        v = kind(s)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {s}")
        return v
    parse.__name__ = kind.__name__
    return parse


pos_int, pos_float = _positive(int), _positive(float)


def plies(s: str) -> Optional[int]:
    if s == "all":
        return None
    v = int(s)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0 or 'all', got {s}")
    return v


def _add_search_flags(p: argparse.ArgumentParser, runs: int,
                      sample_plies: Optional[int] = None) -> None:
    p.add_argument("--runs-per-move", type=pos_int, default=runs, help="MCTS simulations per move")
    p.add_argument("--parallel-games", type=pos_int, default=32,
                   help="games each process plays at once (the network's batch size)")
    p.add_argument("--c-puct", type=pos_float, default=1.5, help="PUCT exploration constant")
    p.add_argument("--dirichlet-alpha", type=float, default=0.55, help="root noise concentration")
    p.add_argument("--dirichlet-weight", type=float, default=0.25, help="root noise weight")
    p.add_argument("--sample-plies", type=plies, default=sample_plies,
                   help="sample moves by visit count for this many plies of a self-play game, "
                        "then play the most visited; 'all': sample all game long")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")


def _search_config(a: argparse.Namespace):
    from pyhexz.search.driver import SearchConfig
    return SearchConfig(runs_per_move=a.runs_per_move, c_puct=a.c_puct,
                        dirichlet_alpha=a.dirichlet_alpha, dirichlet_weight=a.dirichlet_weight,
                        sample_plies=a.sample_plies)


def _add_train_flags(p: argparse.ArgumentParser, minibatch: int, window: int,
                     samples_per_example: float = 4.0, learning_rate: float = 3e-4) -> None:
    p.add_argument("--blocks", type=pos_int, default=5, help="residual blocks (new model)")
    p.add_argument("--filters", type=pos_int, default=64, help="filters per conv (new model)")
    p.add_argument("--minibatch-size", type=pos_int, default=minibatch,
                   help="new examples that trigger a training run")
    p.add_argument("--replay-window", type=pos_int, default=window, help="newest examples trained on")
    p.add_argument("--samples-per-example", type=pos_float, default=samples_per_example,
                   help="samples trained per new example")
    p.add_argument("--batch-size", type=pos_int, default=256, help="training batch size")
    p.add_argument("--learning-rate", type=pos_float, default=learning_rate,
                   help="initial Adam rate (falls linearly to 1e-4 over 200 checkpoints)")
    p.add_argument("--no-augment", action="store_true",
                   help="train on examples as played, without random board mirror images")


def _train_config(a: argparse.Namespace):
    from pyhexz.train.trainer import TrainConfig
    return TrainConfig(blocks=a.blocks, filters=a.filters, batch_size=a.batch_size,
                       learning_rate=a.learning_rate, samples_per_example=a.samples_per_example,
                       replay_window=a.replay_window, trigger_examples=a.minibatch_size,
                       augment=not a.no_augment, seed=a.seed)


def build_parser() -> argparse.ArgumentParser:
    parser = _EnvDefaults(prog="pyhexz", description=__doc__.split("\n\n")[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING")
    parser.add_argument("--threads", type=pos_int, default=1, help="torch threads per process")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_EnvDefaults)

    p = sub.add_parser("train", help="self-play and training on this machine")
    p.add_argument("--dir", type=Path, default=Path("runs/local"),
                   help="where checkpoints and games live")
    p.add_argument("--model-name", default="local", help="model name (a plain name)")
    p.add_argument("--num-workers", type=pos_int, default=max(1, (os.cpu_count() or 2) - 1),
                   help="self-play processes")
    p.add_argument("--minutes", type=pos_float, help="stop after this many minutes")
    p.add_argument("--checkpoints", type=pos_int, help="stop after this many new checkpoints")
    # The settings of the best run on two cores (BENCHMARKS.md, learn3), bar the network size.
    _add_train_flags(p, minibatch=4096, window=100_000, samples_per_example=8.0,
                     learning_rate=1e-3)
    p.add_argument("--seed", type=int, default=0, help="seed for training and self-play")
    _add_search_flags(p, runs=100, sample_plies=20)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("selfplay", help="self-play games written to files")
    p.add_argument("--model", help="checkpoint, TorchScript file or model directory "
                   "(default: a fresh random network)")
    p.add_argument("--num-workers", type=pos_int, default=1, help="self-play processes")
    p.add_argument("--max-games", type=pos_int, help="stop after this many games in total")
    p.add_argument("--max-seconds", type=pos_float, help="stop after this many seconds")
    p.add_argument("--output-dir", type=Path, required=True, help="where game files go")
    p.add_argument("--seed", type=int, help="random seed")
    _add_search_flags(p, runs=800)
    p.set_defaults(func=cmd_selfplay)

    p = sub.add_parser("worker", help="self-play streamed to a training server (Cloud Run task)")
    p.add_argument("--server-url", help="training server, e.g. http://10.0.0.2:8080 (required)")
    p.add_argument("--redis-url", help="Redis with the models (optional; else the server serves them)")
    p.add_argument("--model-name", help="model to play for (required with --redis-url)")
    p.add_argument("--max-seconds", type=pos_float, help="time budget of the task, uploads included")
    p.add_argument("--auth-token", help="bearer token the training server expects")
    p.add_argument("--num-workers", type=pos_int, default=1, help="self-play processes")
    p.add_argument("--grace-seconds", type=pos_float, default=8.0,
                   help="time to send finished games after SIGTERM or before --max-seconds")
    p.add_argument("--model-poll-seconds", type=pos_float, default=30.0,
                   help="re-read the latest model this often (pub/sub may miss announcements)")
    p.add_argument("--progress-seconds", type=pos_float, default=60.0, help="progress log interval")
    p.add_argument("--upload-buffer", type=pos_int, default=64,
                   help="finished games held while the server is unreachable")
    p.add_argument("--seed", type=int, help="random seed (default: fresh entropy)")
    _add_search_flags(p, runs=800)
    p.set_defaults(func=cmd_worker)

    p = sub.add_parser("arena", help="a match between two players over fixed openings")
    p.add_argument("player1", help="random | rollout:RUNS | MODEL_PATH[:RUNS]")
    p.add_argument("player2", help="random | rollout:RUNS | MODEL_PATH[:RUNS]")
    p.add_argument("--games", type=pos_int, help="use only the first N openings (x2 seats)")
    p.add_argument("--openings", type=Path, help="JSONL openings (default: the hexz fixture)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.add_argument("--device", default="cpu", help="torch device for neural players")
    p.add_argument("--seed", type=int, default=0, help="seed for random and rollout players")
    p.set_defaults(func=cmd_arena)

    p = sub.add_parser("server", help="the training server (Flask, for local debugging; "
                       "production runs create_app() under gunicorn with the same HEXZ_* variables)")
    p.add_argument("--storage", default="runs/server", help="checkpoints: a directory or "
                   "gs://bucket/prefix")
    p.add_argument("--model-name", default="flagz", help="model name (a plain name)")
    p.add_argument("--state-dir", help="write-ahead log directory, on a local persistent disk "
                   "(default STORAGE/wal/NAME; required with gs:// storage)")
    p.add_argument("--redis-url", help="publish models and announcements to this Redis")
    p.add_argument("--auth-token", help="require 'Authorization: Bearer TOKEN' (prefer the "
                   "environment variable: flags show in ps)")
    _add_train_flags(p, minibatch=4096, window=100_000)
    p.add_argument("--seed", type=int, default=0, help="training seed")
    p.add_argument("--max-model-age", type=int, default=5, help="accept examples from the latest "
                   "checkpoint and this many before it")
    p.add_argument("--max-pending", type=pos_int, help="untrained examples held before "
                   "REJECTED_AT_CAPACITY (default 8 minibatches)")
    p.add_argument("--max-request-bytes", type=pos_int, default=32 << 20,
                   help="request body limit, also after gunzip")
    p.add_argument("--wal-segment-bytes", type=pos_int, default=64 << 20,
                   help="size of a write-ahead log segment (preallocated)")
    p.add_argument("--trainer-nice", type=int, default=10, help="nice increment of the trainer "
                   "thread, so that answering requests comes first (0: none)")
    p.add_argument("--device", default="cpu", help="torch device: cpu, cuda, cuda:1, mps")
    p.add_argument("--eval-openings", type=int, default=8,
                   help="after each checkpoint, a match over this many fixture openings (x2 "
                        "seats) against the previous one and rollout MCTS, for the web UI's "
                        "Elo curve, in a background process; 0: off")
    p.add_argument("--eval-runs", type=pos_int, default=64, help="simulations per move in those "
                   "matches (the rollout baseline gets 200)")
    p.add_argument("--play-seconds", type=pos_float, default=1.0,
                   help="think time per move of the web UI's Play page opponents")
    p.add_argument("--host", default="127.0.0.1", help="listen address")
    p.add_argument("--port", type=int, default=8080, help="listen port")
    p.set_defaults(func=cmd_server)

    p = sub.add_parser("cpu-server", help="the remote CPU player service for game servers "
                       "(runs gunicorn with 'pyhexz.cpu:create_app()')")
    _add_cpu_server_flags(p)
    p.set_defaults(func=cmd_cpu_server)

    p = sub.add_parser("export", help="export a checkpoint as a hexz TorchScript file")
    p.add_argument("checkpoint", help="pyhexz checkpoint file or model directory")
    p.add_argument("output", type=Path, help="TorchScript file to write")
    p.set_defaults(func=cmd_export)
    return parser


def cmd_train(a: argparse.Namespace) -> int:
    from pyhexz.train import local
    cfg = local.LocalConfig(
        dir=a.dir, name=a.model_name, num_workers=a.num_workers, parallel_games=a.parallel_games,
        device=a.device, minutes=a.minutes, checkpoints=a.checkpoints, search=_search_config(a),
        train=_train_config(a))
    n = local.run(cfg)
    print(f"model {a.model_name}: checkpoint {n} in {a.dir}/models/flagz/{a.model_name}/checkpoints/{n}")
    return 0


def _selfplay_process(model: Optional[str], search, parallel_games: int, device: str,
                      max_games: Optional[int], max_seconds: Optional[float], output_dir: str,
                      seed: Optional[int], progress) -> None:
    from pyhexz.infra.process import init_worker_process
    init_worker_process()
    import torch

    from pyhexz import hexz_pb2 as pb
    from pyhexz.game.examples import GAME_FILE_SUFFIX, write_game_file
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.players import model_key_for_path, resolve_model_path
    from pyhexz.train.selfplay import run_selfplay
    if model:
        path = resolve_model_path(model)
        predictor = Predictor.from_path(path, device)
        name, n = model_key_for_path(path)
        key = pb.ModelKey(name=name, checkpoint=n)
    else:
        torch.manual_seed(seed or 0)
        predictor = Predictor(HexzNet(), device)
        key = pb.ModelKey(name="random-init", checkpoint=0)
    out = Path(output_dir)

    def sink(req) -> None:
        write_game_file(out / f"{req.execution_id}-{req.game_id}{GAME_FILE_SUFFIX}", req)
        progress.put(len(req.examples))

    stats = run_selfplay(lambda: (predictor, key), sink, search, parallel_games=parallel_games,
                         max_games=max_games, max_seconds=max_seconds, seed=seed)
    progress.put(("done", stats.nn_share))


def cmd_selfplay(a: argparse.Namespace) -> int:
    from pyhexz.infra.process import spawn_context
    a.output_dir.mkdir(parents=True, exist_ok=True)
    ctx = spawn_context()
    progress = ctx.Queue()
    per = None if a.max_games is None else [a.max_games // a.num_workers + (i < a.max_games % a.num_workers)
                                             for i in range(a.num_workers)]
    procs = [ctx.Process(target=_selfplay_process, daemon=True, args=(
        a.model, _search_config(a), a.parallel_games, a.device, None if per is None else per[i],
        a.max_seconds, str(a.output_dir), None if a.seed is None else a.seed + i, progress))
        for i in range(a.num_workers) if per is None or per[i] > 0]
    for p in procs:
        p.start()
    t0 = last = time.monotonic()
    games = examples = done = 0
    import queue
    try:
        while done < len(procs):
            try:
                item = progress.get(timeout=1)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break
                item = None
            if isinstance(item, tuple):
                done += 1
            elif item is not None:
                games += 1
                examples += item
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                el = last - t0
                log.info("selfplay elapsed=%.0fs games=%d examples=%d examples_per_s=%.1f",
                         el, games, examples, examples / el)
    except KeyboardInterrupt:
        log.info("selfplay interrupted; finished games are in %s", a.output_dir)
    for p in procs:
        p.join(timeout=5)
    el = time.monotonic() - t0
    print(f"selfplay: {games} games, {examples} examples in {el:.0f} s "
          f"({examples / max(el, 1e-9):.1f} examples/s) -> {a.output_dir}")
    return 0 if all(p.exitcode == 0 for p in procs) else 1


def cmd_worker(a: argparse.Namespace) -> int:
    from pyhexz.worker import job as worker
    if not a.server_url:
        raise ValueError("--server-url (or HEXZ_SERVER_URL) is required")
    return worker.run(worker.WorkerConfig(
        server_url=a.server_url, redis_url=a.redis_url, model_name=a.model_name,
        max_seconds=a.max_seconds, parallel_games=a.parallel_games, search=_search_config(a),
        device=a.device, auth_token=a.auth_token, num_workers=a.num_workers,
        grace_seconds=a.grace_seconds, model_poll_seconds=a.model_poll_seconds,
        progress_seconds=a.progress_seconds, upload_buffer=a.upload_buffer, seed=a.seed,
        started=STARTED))


def cmd_arena(a: argparse.Namespace) -> int:
    from pyhexz.train.arena import load_openings, play_match, result_json
    from pyhexz.search.players import make_player
    openings = load_openings(a.openings)
    if a.games:
        openings = openings[:a.games]
    n = len(openings)
    p1 = make_player(a.player1, device=a.device, seed=a.seed, max_games=2 * n)
    p2 = make_player(a.player2, device=a.device, seed=a.seed + 1, max_games=2 * n)
    result = play_match(p1, p2, openings, progress=True)
    print(result_json(result) if a.json else result.summary())
    return 0


def server_config(a: argparse.Namespace):
    """The training server's configuration from `pyhexz server` flags (or their HEXZ_* values)."""
    from pyhexz.training_server.config import ServerConfig
    return ServerConfig(
        model_name=a.model_name, storage=a.storage, state_dir=a.state_dir, redis_url=a.redis_url,
        auth_token=a.auth_token, device=a.device, max_model_age=a.max_model_age,
        max_pending=a.max_pending, max_request_bytes=a.max_request_bytes,
        segment_bytes=a.wal_segment_bytes, trainer_nice=a.trainer_nice, train=_train_config(a),
        eval_openings=a.eval_openings, eval_runs=a.eval_runs, play_seconds=a.play_seconds)


def cmd_server(a: argparse.Namespace) -> int:
    from pyhexz.training_server.app import serve
    from pyhexz.training_server.wal import WALError
    try:
        serve(server_config(a), a.host, a.port)
    except WALError as e:  # e.g. another server owns the state directory
        print(f"pyhexz server: error: {e}", file=sys.stderr)
        return 2
    return 0


def _add_cpu_server_flags(p: argparse.ArgumentParser) -> None:
    import dataclasses

    from pyhexz.cpu.config import CpuServerConfig
    # The service reads the same settings from HEXZ_* variables under plain gunicorn, so the
    # flags are made from its config: one list of names, types and defaults.
    for f in dataclasses.fields(CpuServerConfig):
        p.add_argument("--" + f.name.replace("_", "-"), type=f.metadata["parse"],
                       default=f.default, help=f.metadata["help"])
    p.add_argument("--host", default="127.0.0.1", help="listen address (0.0.0.0 in containers)")
    p.add_argument("--port", type=int, default=os.environ.get("PORT", "8080"),
                   help="listen port (default: $PORT, as Cloud Run sets it, else 8080)")
    p.add_argument("--http-threads", type=pos_int, default=8,
                   help="gunicorn threads: requests handled at once")
    p.add_argument("--workers", type=pos_int, default=1,
                   help="gunicorn processes, each with its own model and search thread")


def cmd_cpu_server(a: argparse.Namespace) -> int:
    import dataclasses

    from pyhexz.cpu.config import CpuServerConfig
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(CpuServerConfig)}
    CpuServerConfig(**values)   # bad settings fail here, before gunicorn starts
    env = dict(os.environ, HEXZ_LOG_LEVEL=a.log_level, HEXZ_TORCH_THREADS=str(a.threads))
    for name, value in values.items():
        env.pop(CpuServerConfig.env_name(name), None)
        if value is not None:
            env[CpuServerConfig.env_name(name)] = str(value)
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"{a.host}:{a.port}",
            "--workers", str(a.workers), "--threads", str(a.http_threads), "--timeout", "0",
            "pyhexz.cpu:create_app()"]
    log.info("cpu-server exec %s", " ".join(argv[1:]))
    sys.stdout.flush()
    sys.stderr.flush()
    # exec, not a child: gunicorn gets the signals, and no process forks after torch started.
    os.execve(sys.executable, argv, env)
    return 1   # not reached


def cmd_export(a: argparse.Namespace) -> int:
    from pyhexz.nn import export_torchscript, load_checkpoint
    from pyhexz.search.players import resolve_model_path
    path = resolve_model_path(a.checkpoint)
    export_torchscript(load_checkpoint(path).model, a.output)
    print(f"exported {path} -> {a.output}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from pyhexz.infra.process import configure_logging, setup_torch
    configure_logging(args.log_level)
    setup_torch(args.threads)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"pyhexz {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
