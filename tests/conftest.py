"""Shared pytest fixtures.

The repository is cloned with the project's shared/ folder beside it, so the fixtures written by
the hexz Go server (FLAGZ.md section 10) live in `../shared/fixtures` relative to the repo root.
"""

import json
import os
from contextlib import contextmanager
from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
INITIAL_STATES = "flagz_initial_v1.jsonl"
# The torch device the model, self-play and training tests put their networks on.
TEST_DEVICE_VARIABLE = "HEXZ_TEST_DEVICE"


def model_device() -> str:
    """HEXZ_TEST_DEVICE (cpu, cuda, cuda:1), default cpu: benchmarks/gpu_check.sh sets it to
    run the network tests on a GPU, which has never run them otherwise; no CPU machine needs
    one. Not a fixture, so module-level helpers and module-scoped fixtures can ask too."""
    return os.environ.get(TEST_DEVICE_VARIABLE, "").strip() or "cpu"


def pytest_configure(config) -> None:
    """Checks HEXZ_TEST_DEVICE once, before any test, and makes a GPU compute what the tests'
    float32 reference values assume."""
    device = model_device()
    if device == "cpu":
        return  # no torch import for test runs that never touch a network
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise pytest.UsageError(f"{TEST_DEVICE_VARIABLE}={device!r}: {e}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise pytest.UsageError(f"{TEST_DEVICE_VARIABLE}={device!r}, but torch "
                                    f"{torch.__version__} sees no CUDA device")
        # cuDNN's default TF32 convolutions round to 10 mantissa bits: outputs would differ
        # from float32 CPU references by about 1e-3. Deterministic kernels keep the
        # same-seed-same-result tests meaningful.
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.deterministic = True
        torch.backends.cudnn.benchmark = False


@pytest.fixture(autouse=True)
def hexz_environ_restored():
    """`pyhexz.cli.main` puts the process settings into the environment for the processes a
    command starts (HEXZ_LOG_LEVEL, HEXZ_THREADS); a test that calls it in-process must not
    change the defaults of the tests after it."""
    before = {k: v for k, v in os.environ.items() if k.startswith("HEXZ_")}
    yield
    for k in [k for k in os.environ if k.startswith("HEXZ_") and k not in before]:
        del os.environ[k]
    os.environ.update(before)


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread, as every pyhexz process runs (process.setup_torch): on busy cores
    torch's default thread pool makes each tiny forward pass hundreds of times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared fixtures folder; tests that need it are skipped if it is missing."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES_DIR} (clone shared/ beside the repo)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def fixture_records(fixtures_dir: Path) -> list:
    """(id, GameEngineState) for each initial position the Go server wrote."""
    from google.protobuf import json_format

    from pyhexz import hexz_pb2

    path = fixtures_dir / INITIAL_STATES
    if not path.is_file():
        pytest.skip(f"fixture file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            state = json_format.ParseDict(obj["state"], hexz_pb2.GameEngineState())
            records.append((obj["id"], state))
    return records


@pytest.fixture(scope="session")
def fixture_states(fixture_records: list) -> list:
    """The 128 initial positions of flagz_initial_v1.jsonl as hexz_pb2.GameEngineState.

    Session-scoped and shared: tests must not mutate these messages (copy them first).
    """
    return [state for _, state in fixture_records]


def network_positions(fixture_states: list, real: int):
    """(boards, masks) for comparing network backends: the first 32 hexz fixture positions and
    `real` positions further into games (nn.backends.calibration_positions)."""
    import numpy as np

    from pyhexz.game.board import Board
    from pyhexz.nn.backends import calibration_positions
    boards, masks = zip(*(Board.from_proto(s).encode() for s in fixture_states[:32]),
                        strict=True)
    cb, cm = calibration_positions()
    return (np.concatenate([np.stack(boards), cb[:real]]),
            np.concatenate([np.stack(masks), cm[:real]]))


def wait_for(cond, seconds: float = 60.0, what: str = "", *, step: float = 0.05):
    """Polls cond() until it returns something truthy, which is returned; fails after
    `seconds` naming `what` (default: the condition itself)."""
    import time

    deadline = time.monotonic() + seconds
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:g} s waiting for {what or cond}")
        time.sleep(step)


SRC = str(Path(__file__).resolve().parents[1] / "src")


def child_env(**extra: str) -> dict:
    """The environment for a pyhexz child process: this checkout's src/ on the path, and only
    the HEXZ_* variables the test sets (one from the caller's shell must not change a flag)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEXZ_")}
    env["PYTHONPATH"] = SRC + os.pathsep + env.get("PYTHONPATH", "")
    return {**env, **extra}


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """A redis-server of our own on a free port (no persistence), restartable for fault tests."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.tmp = tmp
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        import shutil
        import subprocess
        import time

        import redis

        self.proc = subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> str:
    """A real Redis: our own redis-server when one is installed, else the one on 6379 (db 15).

    Tests use unique model names, so they never see each other's keys.
    """
    import shutil

    if shutil.which("redis-server"):
        server = RedisServer(tmp_path_factory.mktemp("redis"))
        server.start()
        yield server.url
        server.stop()
        return
    import redis

    url = "redis://127.0.0.1:6379/15"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1).ping()
    except redis.ConnectionError:
        pytest.skip("no redis-server installed and none on 127.0.0.1:6379")
    yield url


@pytest.fixture
def redis_server(tmp_path) -> "RedisServer":
    """A redis-server of this test's own, to stop and restart (skipped if none is installed)."""
    import shutil

    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def trained_repo_factory(tmp_path_factory):
    """make(name): a repository with checkpoints 0..2 of a tiny net, trained on real self-play
    games (uniform-prior search, a few runs per move), two games per checkpoint."""

    def make(name: str):
        from pyhexz import hexz_pb2 as pb
        from pyhexz.infra.storage import CheckpointRepo, LocalStorage
        from pyhexz.search.driver import SearchConfig, uniform_evaluator
        from pyhexz.train.config import TrainConfig
        from pyhexz.train.selfplay import run_selfplay
        from pyhexz.train.trainer import Trainer

        repo = CheckpointRepo(LocalStorage(tmp_path_factory.mktemp(name)), name)
        trainer = Trainer(repo, TrainConfig(blocks=1, filters=8, trigger_examples=1,
                                            batch_size=16, samples_per_example=0.2))
        for ckpt in (1, 2):
            games: list = []
            key = pb.ModelKey(name=name, checkpoint=ckpt - 1)
            run_selfplay(lambda key=key: (uniform_evaluator, key), games.append,
                         SearchConfig(runs_per_move=4), parallel_games=2, max_games=2, seed=ckpt)
            for i, g in enumerate(games):
                trainer.add(f"game-{ckpt}-{i}", g)
            trainer.train_and_publish()
        return repo

    return make


class GCSEmulator:
    """gcp-storage-emulator in this process, in memory; the official client reaches it through
    STORAGE_EMULATOR_HOST (set while it runs, so subprocesses started by tests inherit it)."""

    bucket = "pyhexz-test"

    def __init__(self) -> None:
        from gcp_storage_emulator.server import create_server

        self.port = free_port()
        self.host = f"http://127.0.0.1:{self.port}"
        self.server = create_server("127.0.0.1", self.port, in_memory=True,
                                    default_bucket=self.bucket)

    def url(self, prefix: str) -> str:
        return f"gs://{self.bucket}/{prefix}"


@pytest.fixture(scope="session")
def gcs_emulator():
    """A running GCS emulator; tests use unique prefixes in its one bucket."""
    import logging
    import os

    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    emulator = GCSEmulator()
    emulator.server.start()
    before = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = emulator.host
    yield emulator
    if before is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = before
    emulator.server.stop()


@contextmanager
def serve_app(app, port: int = 0):
    """A WSGI app behind a real HTTP server (werkzeug, threaded) in a thread; yields its URL.

    `port` 0 takes a free one; a given port lets a test bring a server up where a client has
    been knocking (a server restart)."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def stop_processes(procs: list) -> None:
    """Stops subprocesses started with start_new_session=True, their children too: SIGTERM to
    each process group, SIGKILL for what is still running after 15 s."""
    import os
    import signal
    import subprocess

    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def child_pids(pid: int) -> list[int]:
    """The children of a process, from Linux /proc (empty once it is gone)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return []


def descendant_pids(pid: int) -> list[int]:
    """Children, grandchildren, ... of a process (Linux /proc), parents before children."""
    out: list[int] = []
    todo = child_pids(pid)
    while todo:
        p = todo.pop(0)
        out.append(p)
        todo += child_pids(p)
    return out


def cmdline(pid: int) -> str:
    """A process's command line, '' once it is gone."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def pid_gone(pid: int) -> bool:
    """Whether a process has exited (a zombie waiting for its parent has)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True


def settled_totals(status, tries: int = 120, step: float = 0.5) -> tuple[int, int]:
    """(examples trained, examples pending) from a training server's `status()` dict once no
    training run is changing them (two equal readings with no run in progress)."""
    import time

    last = None
    for _ in range(tries):
        s = status()
        now = (s["examples"]["trained"], s["examples"]["pending"])
        if not s["training"]["in_progress"] and now == last:
            return now
        last = now
        time.sleep(step)
    raise AssertionError("the server kept training")


@contextmanager
def training_server_over(repo, state_dir: Path):
    """The training server's app over an existing checkpoint repository (its local storage),
    ready, behind a real HTTP server in a thread; yields its URL and closes the service."""
    from pyhexz.train.config import TrainConfig
    from pyhexz.training_server.app import create_app
    from pyhexz.training_server.config import ServerConfig

    app = create_app(ServerConfig(model_name=repo.name, storage=str(repo.storage.root),
                                  state_dir=str(state_dir), segment_bytes=1 << 20,
                                  train=TrainConfig(trigger_examples=10_000)))
    service = app.config["service"]
    try:
        assert service.wait_ready(60)
        with serve_app(app) as url:
            yield url
    finally:
        service.close()
