"""The `pyhexz` command line (also `python -m pyhexz`).

    pyhexz train --dir DIR              train on this machine (self-play + training)
    pyhexz selfplay --output-dir DIR    self-play games to files
    pyhexz worker --server-url URL      self-play streamed to a training server (Cloud Run)
    pyhexz server --storage DIR|gs://B  the training server (Flask on waitress)
    pyhexz arena P1 P2                  a match over the fixture openings, both seats
    pyhexz export CHECKPOINT OUT        a checkpoint as a hexz TorchScript (or ONNX) file
    pyhexz cpu-server [--model-path M]  the remote CPU player service (gunicorn)
    pyhexz ship-model CHECKPOINT ...    ship a trained checkpoint as the default model

Every flag can also be set by a HEXZ_* environment variable (for the containers), named after
the flag: --runs-per-move is HEXZ_RUNS_PER_MOVE. A flag on the command line wins. The flags, their
variables, defaults and checks all come from the config dataclasses (SearchConfig, TrainConfig,
LocalConfig, WorkerConfig, ServerConfig, CpuServerConfig and the small ones below) through
pyhexz.infra.config; `pyhexz CMD --help` lists them.

A mistake in what a command is given (a path that is not a directory, a model file that is
missing or corrupt, a bad setting) ends it at once with one line, `pyhexz CMD: error: ...`, and
exit status 2 (`main`; with --log-level DEBUG the traceback too); a self-play process that fails
is said once and stops the command with status 1.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Time budgets (the worker's --max-seconds) count from here, before torch is imported: the
# seconds that import takes are seconds of the Cloud Run task's timeout too.
STARTED = time.monotonic()

from pyhexz.cpu.config import CpuServerConfig  # noqa: E402
from pyhexz.infra.config import (  # noqa: E402
    Check,
    ConfigParser,
    above,
    at_least,
    backend_setting,
    check_settings,
    environ_for,
    setting,
)
from pyhexz.infra.extras import missing_extra_message  # noqa: E402
from pyhexz.infra.httpserver import HttpServing  # noqa: E402
from pyhexz.search.driver import SearchConfig, TreeConfig  # noqa: E402
from pyhexz.search.timed import served_tree_config  # noqa: E402
from pyhexz.train.config import LocalConfig  # noqa: E402
from pyhexz.training_server.config import ServerConfig  # noqa: E402
from pyhexz.worker.config import WorkerConfig  # noqa: E402

log = logging.getLogger("pyhexz.cli")


# --------------------------------------------------------------------------
# The settings of each command that belong to no library config
# --------------------------------------------------------------------------


@dataclass
class ProcessSettings:
    """The global flags, before the command: they apply to every process it starts."""

    log_level: str = setting("INFO", "DEBUG, INFO, WARNING")
    # HEXZ_THREADS: the variable gunicorn processes read too (infra/process.setup_torch).
    threads: int = setting(1, "torch threads per process", check=at_least(1))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class SelfPlayJob:
    output_dir: Path = setting(help="where game files go")
    model: str | None = setting(None, "checkpoint, TorchScript file or model directory "
                                   "(none: a fresh random network)")
    num_workers: int = setting(1, "self-play processes", check=at_least(1))
    max_games: int | None = setting(None, "stop after this many games in total",
                                       check=at_least(1))
    max_seconds: float | None = setting(None, "stop after this many seconds, counted from the "
                                        "command's start; games under way are cut off",
                                        check=above(0))
    seed: int | None = setting(None, "random seed (process i uses seed + i)")
    parallel_games: int = setting(32, "games each process plays at once (the network's batch "
                                  "size)", check=at_least(1))
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, mps")
    backend: str = backend_setting()
    search: SearchConfig = field(default_factory=SearchConfig)

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class ArenaJob:
    player1: str = setting(help="random | rollout[:RUNS|@SECONDS] | MODEL[:RUNS|@SECONDS], "
                           "MODEL: a path or default (the shipped model)", positional=True)
    player2: str = setting(help="the same choices as player1", positional=True)
    games: int | None = setting(None, "use only the first N openings (x2 seats)",
                                   check=at_least(1))
    openings: Path | None = setting(None, "JSONL openings (none: the hexz fixture)")
    json: bool = setting(False, "print the result as JSON")
    device: str = setting("cpu", "torch device for neural players")
    backend: str = backend_setting()
    seed: int = setting(0, "seed for random and rollout players")
    # neural players' tree options: by default the CPU player's (served_tree_config)
    tree: TreeConfig = field(default_factory=served_tree_config)

    def __post_init__(self) -> None:
        check_settings(self)


EXPORT_FORMATS = ("torchscript", "onnx")


@dataclass
class ExportJob:
    checkpoint: str = setting(help="pyhexz checkpoint file or model directory (onnx: a hexz "
                              "TorchScript file too)", positional=True)
    output: Path = setting(help="file to write", positional=True)
    format: str = setting("torchscript", "torchscript (the hexz signature) or onnx (the same "
                          "inputs and outputs, dynamic batch axis)",
                          check=Check(lambda v: v in EXPORT_FORMATS,
                                      "one of " + ", ".join(EXPORT_FORMATS)))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class ShipJob:
    """`pyhexz ship-model`: a trained checkpoint into the package as the default model."""

    checkpoint: str = setting(help="checkpoint file or folder, model folder or `train --dir` "
                              "folder (its newest published checkpoint)", positional=True)
    name: str = setting(help="the shipped model's name, a version (flagz-3x32-v1)")
    why: str = setting(help="why this checkpoint ships (recorded in meta.json)")
    model_name: str | None = setting(None, "the model in a `train --dir` folder with several")
    notes: Path | None = setting(None, "a text file: how it was trained beyond what its run "
                                 "recorded (other machines, hardware, restarts)")
    strength: Path | None = setting(None, "its strength table: the strength.json of "
                                    "benchmarks/strength.py")
    models_dir: Path | None = setting(None, "the models folder to write; none: the package's "
                                      "(src/pyhexz/models in a checkout)")
    training_dir: Path = setting(Path("training"), "where the resumable checkpoint (weights and "
                                 "optimizer state, not shipped) goes, in NAME/")
    keep_others: bool = setting(False, "keep the other shipped models instead of removing them")
    max_mb: float = setting(20.0, "the most MiB that may ship", check=above(0))

    def __post_init__(self) -> None:
        check_settings(self)


@dataclass
class Listen:
    host: str = setting("127.0.0.1", "listen address (0.0.0.0 in containers)")
    port: int = setting(8080, "listen port (cpu-server: $PORT when set, as Cloud Run sets it)",
                        check=at_least(0))

    def __post_init__(self) -> None:
        check_settings(self)


def _cloud_run_listen() -> Listen:
    return Listen(port=int(os.environ.get("PORT", "8080")))


@dataclass
class GunicornSettings:
    """How `pyhexz cpu-server` runs gunicorn; the service's own settings are CpuServerConfig."""

    # Cloud Run says the port in $PORT.
    listen: Listen = field(default_factory=_cloud_run_listen)
    http_threads: int = setting(8, "gunicorn threads: requests handled at once",
                                check=at_least(1))
    workers: int = setting(1, "gunicorn processes, each with its own model and search thread",
                           check=at_least(1))

    def __post_init__(self) -> None:
        check_settings(self)


# --------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------


def build_parser() -> ConfigParser:
    """Every command's flags, made from its config dataclasses (pyhexz.infra.config); after
    parsing, `config` is the command's config (`serving`, `gunicorn`: the servers' own)."""
    parser = ConfigParser(prog="pyhexz", description=__doc__.split("\n\n")[0])
    parser.add_config(ProcessSettings, "process")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ConfigParser)
    # The config modules import no optional extra (no torch, Flask or redis either): every
    # command has its flags on a core install; running one imports what it needs.
    commands: list[tuple[str, str, Callable[[argparse.Namespace], int], dict[str, type]]] = [
        ("train", "self-play and training on this machine", cmd_train,
         {"config": LocalConfig}),
        ("selfplay", "self-play games written to files", cmd_selfplay, {"config": SelfPlayJob}),
        ("worker", "self-play streamed to a training server (Cloud Run task)", cmd_worker,
         {"config": WorkerConfig}),
        ("arena", "a match between two players over fixed openings", cmd_arena,
         {"config": ArenaJob}),
        ("server", "the training server (slow clients are read off the request threads; a "
         "request that does not arrive in time gets 408)", cmd_server,
         {"config": ServerConfig, "serving": HttpServing}),
        ("cpu-server", "the remote CPU player service for game servers (runs gunicorn with "
         "'pyhexz.cpu:create_app()')", cmd_cpu_server,
         {"config": CpuServerConfig, "gunicorn": GunicornSettings}),
        ("export", "export a checkpoint as a hexz TorchScript file", cmd_export,
         {"config": ExportJob}),
        ("ship-model", "ship a trained checkpoint with pyhexz as the default model "
         "(docs/shipped-model.md)", cmd_ship_model, {"config": ShipJob}),
    ]
    for name, help, func, configs in commands:
        p = sub.add_parser(name, help=help)
        p.set_defaults(func=func)
        for dest, cls in configs.items():
            p.add_config(cls, dest)
    return parser


def _directory(path: Path, flag: str) -> Path:
    """The folder a command writes to, created if missing: one clear error for a path that is
    a file (the command would otherwise fail deep inside, on some file below it)."""
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{flag} {path}: not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _check_device(spec: str) -> None:
    """A command's --device, checked before it starts anything (main): a name torch knows, and
    a GPU that is there (asked without creating a CUDA context in this process)."""
    import torch
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise ValueError(f"--device {spec!r}: {e}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {spec!r}: CUDA is not available on this machine")


def _user_error(e: BaseException) -> bool:
    """Whether `e` is a mistake in what the command was given rather than a bug: a bad value
    (ValueError, which ModelLoadError is), a path or file (OSError: missing, not a directory,
    not readable), a corrupt or unusable checkpoint or state directory."""
    from pyhexz.infra.storage import StorageError
    from pyhexz.training_server.wal import WALError
    return isinstance(e, (ValueError, OSError, StorageError, WALError))


def cmd_train(a: argparse.Namespace) -> int:
    from pyhexz.train import local
    cfg = a.config
    _directory(cfg.dir, "--dir")
    n = local.run(cfg, shlex.join(["pyhexz", *a.argv]))
    print(f"model {cfg.name}: checkpoint {n} in {cfg.dir}/models/flagz/{cfg.name}/checkpoints/{n}")
    return 0


# How long after its --max-seconds `selfplay` ends a process that has not stopped by itself
# (one still starting, say): each checks the budget between network batches, well within it.
SELFPLAY_OVERRUN_SECONDS = 5.0


def _selfplay_process(index: int, model: str | None, search, parallel_games: int, device: str,
                      backend: str, max_games: int | None, end: float | None, output_dir: str,
                      seed: int | None, progress, stop) -> None:
    """One self-play process of `selfplay`: ("game", examples) per game, then ("done", games
    cut off), or ("failed", index, message) for an error, which the parent says once (no
    traceback from the child for a known mistake, such as a model that does not load)."""
    from pyhexz.infra.process import init_worker_process
    init_worker_process()
    try:
        _selfplay_games(model, search, parallel_games, device, backend, max_games, end,
                        output_dir, seed, progress, stop)
    except Exception as e:
        if not _user_error(e):
            log.exception("selfplay process failed")   # a bug: its traceback helps
        progress.put(("failed", index, f"{type(e).__name__}: {e}"))
        sys.exit(1)


def _selfplay_games(model: str | None, search, parallel_games: int, device: str, backend: str,
                    max_games: int | None, end: float | None, output_dir: str,
                    seed: int | None, progress, stop) -> None:
    import torch

    from pyhexz import hexz_pb2 as pb
    from pyhexz.game.examples import GAME_FILE_SUFFIX, write_game_file
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.players import model_key_for_path, resolve_model_path
    from pyhexz.train.selfplay import run_selfplay, wind_down_before
    if model:
        path = resolve_model_path(model)
        predictor = Predictor.from_path(path, device, backend)
        name, n = model_key_for_path(path)
        key = pb.ModelKey(name=name, checkpoint=n)
    else:
        torch.manual_seed(seed or 0)
        predictor = Predictor(HexzNet(), device, backend)
        key = pb.ModelKey(name="random-init", checkpoint=0)
    out = Path(output_dir)

    def sink(req) -> None:
        write_game_file(out / f"{req.execution_id}-{req.game_id}{GAME_FILE_SUFFIX}", req)
        progress.put(("game", len(req.examples)))

    # `end` is the parent's time.monotonic() deadline (the clock is system-wide): the budget
    # counts from the command's start, this process's start-up included.
    stats = run_selfplay(lambda: (predictor, key), sink, search, parallel_games=parallel_games,
                         max_games=max_games, seed=seed, should_stop=stop.is_set,
                         max_seconds=None if end is None else end - time.monotonic(),
                         should_start=wind_down_before(end, "selfplay"))
    logging.getLogger("pyhexz.selfplay").info("selfplay done games=%d examples=%d cut_off=%d",
                                              stats.games, stats.examples, stats.cut_off)
    progress.put(("done", stats.cut_off))


def cmd_selfplay(a: argparse.Namespace) -> int:
    from pyhexz.infra.process import sigterm_as_ctrl_c, spawn_context, start_processes
    job: SelfPlayJob = a.config
    _directory(job.output_dir, "--output-dir")
    if job.model:
        # A model that is missing or does not load fails here, before any process starts.
        from pyhexz.nn import load_model
        from pyhexz.search.players import resolve_model_path
        load_model(resolve_model_path(job.model), "cpu")
    ctx = spawn_context()
    progress = ctx.Queue()
    stop = ctx.Event()
    end = None if job.max_seconds is None else STARTED + job.max_seconds
    n = job.num_workers
    per = None if job.max_games is None else [job.max_games // n + (i < job.max_games % n)
                                              for i in range(n)]
    procs = [ctx.Process(target=_selfplay_process, daemon=True, args=(
        i, job.model, job.search, job.parallel_games, job.device, job.backend,
        None if per is None else per[i], end, str(job.output_dir),
        None if job.seed is None else job.seed + i, progress, stop))
        for i in range(n) if per is None or per[i] > 0]
    start_processes(procs)
    sigterm_as_ctrl_c()
    t0 = last = time.monotonic()
    games = examples = done = cut_off = 0
    failed: str | None = None
    overran = False
    import pickle
    import queue

    def take(item) -> None:
        nonlocal games, examples, done, cut_off, failed
        if item is None:
            return
        if item[0] == "failed":
            failed = failed or f"self-play process {item[1]} failed: {item[2]}"
        elif item[0] == "done":
            done += 1
            cut_off += item[1]
        else:
            games += 1
            examples += item[1]

    died_seen: float | None = None   # when a process was first seen dead without a word
    try:
        while done < len(procs) and failed is None:
            try:
                item = progress.get(timeout=1)
            except (EOFError, pickle.UnpicklingError):
                item = None   # torn: a process died while it sent (it is found below)
            except queue.Empty:
                item = None
            take(item)
            # Checked on every item, not only when the queue is quiet: the live processes'
            # games can arrive faster than once a second and would hide a death forever.
            died = [i for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if died and failed is None:
                died_seen = died_seen or time.monotonic()
                if time.monotonic() - died_seen >= 5:
                    # Its last words ("failed") had 5 s to arrive; else it was killed (a
                    # signal, out of memory) without one.
                    failed = (f"self-play process {died[0]} exited with status "
                              f"{procs[died[0]].exitcode}")
            elif item is None and not any(p.is_alive() for p in procs):
                break
            if end is not None and time.monotonic() >= end + SELFPLAY_OVERRUN_SECONDS:
                overran = True
                break
            if time.monotonic() - last >= 10:
                last = time.monotonic()
                el = last - t0
                log.info("selfplay elapsed=%.0fs games=%d examples=%d examples_per_s=%.1f",
                         el, games, examples, examples / el)
    except KeyboardInterrupt:
        log.info("selfplay interrupted; finished games are in %s", job.output_dir)
    if failed is not None:
        for p in procs:
            p.terminate()
        for p in procs:
            p.join()
        print(f"pyhexz selfplay: error: {failed} ({games} games in {job.output_dir})",
              file=sys.stderr)
        return 1
    stop.set()   # between two network batches, each process stops and reports
    ended = []   # processes still starting (or stuck) after the budget: ended here, no failure
    for p in procs:
        p.join(timeout=5)
        if p.is_alive():
            p.terminate()
            p.join()
            ended.append(p)
    while True:   # what the processes sent after the loop
        try:
            take(progress.get_nowait())
        except (queue.Empty, EOFError, OSError, pickle.UnpicklingError):
            break
    if overran and done < len(procs):
        log.warning("selfplay: %d of %d processes ended without a report, still running %.0f s "
                    "past --max-seconds (starting up?)", len(procs) - done, len(procs),
                    SELFPLAY_OVERRUN_SECONDS)
    el = time.monotonic() - STARTED
    print(f"selfplay: {games} games, {examples} examples in {el:.0f} s "
          f"({examples / max(el, 1e-9):.1f} examples/s), {cut_off} games cut off unfinished "
          f"-> {job.output_dir}")
    return 0 if all(p.exitcode == 0 or p in ended for p in procs) else 1


def cmd_worker(a: argparse.Namespace) -> int:
    from pyhexz.worker import job as worker
    return worker.run(dataclasses.replace(a.config, started=STARTED))


def cmd_arena(a: argparse.Namespace) -> int:
    from pyhexz.search.players import make_player
    from pyhexz.train.arena import load_openings, play_match, result_json
    job: ArenaJob = a.config
    openings = load_openings(job.openings)
    if job.games:
        openings = openings[:job.games]
    n = len(openings)
    p1 = make_player(job.player1, device=job.device, seed=job.seed, max_games=2 * n,
                     tree=job.tree, backend=job.backend)
    p2 = make_player(job.player2, device=job.device, seed=job.seed + 1, max_games=2 * n,
                     tree=job.tree, backend=job.backend)
    result = play_match(p1, p2, openings, progress=True)
    print(result_json(result) if job.json else result.summary())
    return 0


def cmd_server(a: argparse.Namespace) -> int:
    from pyhexz.training_server.app import serve
    serve(a.config, a.serving)   # a WALError (another server owns the state directory): main
    return 0


def cmd_cpu_server(a: argparse.Namespace) -> int:
    # The service needs the `server` extra: without it, fail here in one line (main names the
    # extra), not in gunicorn after the exec.
    import flask  # noqa: F401
    import gunicorn  # noqa: F401

    from pyhexz.cpu.app import load_model_path
    # A model path that does not load fails here in one line (main), not in a gunicorn worker.
    load_model_path(a.config)
    # The service (and infra/process for logging and threads) reads its settings from HEXZ_*
    # variables under gunicorn: hand them over, checked already (bad settings fail here,
    # before gunicorn starts).
    env = dict(os.environ)
    for name, value in {**environ_for(a.process), **environ_for(a.config)}.items():
        env.pop(name, None)
        if value is not None:
            env[name] = value
    g: GunicornSettings = a.gunicorn
    argv = [sys.executable, "-m", "gunicorn", "--bind", f"{g.listen.host}:{g.listen.port}",
            "--workers", str(g.workers), "--threads", str(g.http_threads), "--timeout", "0",
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
    job: ExportJob = a.config
    path = resolve_model_path(job.checkpoint)
    if job.format == "torchscript":
        export_torchscript(load_checkpoint(path).model, job.output)
        print(f"exported {path} -> {job.output}")
        return 0
    from pyhexz.nn import load_model
    from pyhexz.nn.onnxfile import opset_of, write_onnx
    module = load_model(path)
    try:
        data = write_onnx(module, job.output)
    except Exception as e:   # noqa: BLE001 - torch's exporter raises many kinds
        raise ValueError(f"{path} cannot be exported to ONNX: "
                         f"{type(e).__name__}: {str(e).strip()[:200]}") from None
    print(f"exported {path} -> {job.output} (onnx, opset {opset_of(data)}, dynamic batch)")
    return 0


def cmd_ship_model(a: argparse.Namespace) -> int:
    import json

    from pyhexz.train.ship import ShipOptions, ship_model
    job: ShipJob = a.config
    try:
        strength = json.loads(job.strength.read_text()) if job.strength else None
    except ValueError as e:
        raise ValueError(f"{job.strength}: not a strength table (JSON): {e}") from None
    target = ship_model(job.checkpoint, ShipOptions(
        name=job.name, why=job.why, root=job.models_dir, training_dir=job.training_dir,
        notes=job.notes.read_text() if job.notes else None, strength=strength,
        model_name=job.model_name, keep_others=job.keep_others,
        max_bytes=int(job.max_mb * 2**20)))
    meta = json.loads((target / "meta.json").read_text())
    for f, entry in meta["files"].items():
        print(f"{target / f}  {entry['size']:>10,} bytes  sha256 {entry['sha256']}")
    print(f"shipped {job.name} as the default model (resumable checkpoint: "
          f"{job.training_dir / job.name})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv   # the command line, as `train` records it in its checkpoints
    from pyhexz.infra.process import configure_logging, setup_torch
    configure_logging(args.process.log_level)
    setup_torch(args.process.threads)
    # The processes a command starts (spawned, gunicorn's) read these from their environment.
    os.environ.update({k: v for k, v in environ_for(args.process).items() if v is not None})
    try:
        device = getattr(args.config, "device", None)
        if isinstance(device, str):
            _check_device(device)
        return args.func(args)
    except ModuleNotFoundError as e:
        # A service command on an install without its extra: one line that names the extra.
        message = missing_extra_message(e, args.command)
        if message is None:
            raise
        print(message, file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C before the command's own handling of it (starting up)
        print(f"pyhexz {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if not _user_error(e):
            raise
        log.debug("pyhexz %s failed", args.command, exc_info=True)
        print(f"pyhexz {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
