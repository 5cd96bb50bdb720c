"""Mistakes a new user makes get one clear line, not a traceback (issue 17, item 4).

Each test runs the real `pyhexz` command as a subprocess, with the mistake as a user makes it,
and checks what the user sees: a non-zero exit status, no traceback, and one line on stderr
that names the problem.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import child_env, child_pids, cmdline, pid_gone, serve_app, wait_for
from pyhexz.infra.storage import MODEL_FILE, CheckpointRepo, LocalStorage
from pyhexz.nn import HexzNet, save_checkpoint

# Generous: a command imports torch before it fails, and the machine may be busy.
TIMEOUT = 300


def pyhexz(*argv: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pyhexz", *argv], cwd=cwd, env=child_env(**env),
                          capture_output=True, text=True, timeout=TIMEOUT)


def one_line_error(r: subprocess.CompletedProcess, *, status: int = 2) -> str:
    """The one line the command said on stderr, after checking that it failed with `status`
    and without a traceback."""
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert r.returncode == status and len(lines) == 1, (r.returncode, r.stderr)
    return lines[0]


@pytest.fixture
def corrupt_model(tmp_path: Path) -> Path:
    path = tmp_path / "corrupt.pt"
    path.write_bytes(b"PK\x03\x04 this is not a model")
    return path


def tiny_checkpoint(path: Path, name: str = "local", n: int = 0) -> bytes:
    torch.manual_seed(n)
    save_checkpoint(path, HexzNet(1, 8), model_name=name, checkpoint=n)
    return path.read_bytes()


def test_train_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    line = one_line_error(pyhexz("train", "--dir", "afile", cwd=tmp_path))
    assert line == "pyhexz train: error: --dir afile: not a directory"


def test_selfplay_output_dir_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("not a directory")
    line = one_line_error(pyhexz("selfplay", "--output-dir", "afile", cwd=tmp_path))
    assert line == "pyhexz selfplay: error: --output-dir afile: not a directory"


def test_selfplay_with_a_missing_model(tmp_path: Path) -> None:
    line = one_line_error(pyhexz("selfplay", "--output-dir", "out", "--model", "nope.pt",
                                 "--max-seconds", "60", cwd=tmp_path))
    assert line.startswith("pyhexz selfplay: error: nope.pt: no model file"), line
    assert not list((tmp_path / "out").iterdir())


def test_selfplay_with_a_corrupt_model(tmp_path: Path, corrupt_model: Path) -> None:
    line = one_line_error(pyhexz("selfplay", "--output-dir", "out", "--model", str(corrupt_model),
                                 "--max-seconds", "60", cwd=tmp_path))
    assert line.startswith("pyhexz selfplay: error: cannot load model file"), line
    assert "corrupt.pt" in line


@pytest.mark.parametrize("argv", [["selfplay", "--output-dir", "out"], ["train", "--dir", "run"]],
                         ids=["selfplay", "train"])
def test_a_device_that_is_not_there(tmp_path: Path, argv: list[str]) -> None:
    """Checked once, in main, for every command with a --device, before any process starts."""
    line = one_line_error(pyhexz(*argv, "--device", "nope", cwd=tmp_path))
    assert line.startswith(f"pyhexz {argv[0]}: error: --device 'nope'"), line


def test_train_dir_with_a_corrupt_checkpoint(tmp_path: Path) -> None:
    root = tmp_path / "run"
    repo = CheckpointRepo(LocalStorage(root), "local")
    repo.publish(0, {MODEL_FILE: tiny_checkpoint(tmp_path / "ck.pt")}, {})
    (root / "models/flagz/local/checkpoints/0/model.pt").write_bytes(b"corrupt")
    line = one_line_error(pyhexz("train", "--dir", "run", cwd=tmp_path))
    assert line.startswith("pyhexz train: error: models/flagz/local/checkpoints/0/model.pt: "
                           "SHA-256 mismatch"), line


def test_cpu_server_with_a_corrupt_model_fails_before_gunicorn(tmp_path: Path,
                                                               corrupt_model: Path) -> None:
    pytest.importorskip("gunicorn")
    line = one_line_error(pyhexz("cpu-server", "--model-path", str(corrupt_model), "--port",
                                 "0", cwd=tmp_path))
    assert line.startswith("pyhexz cpu-server: error: cannot load model file"), line


def test_the_2023_flask_command_with_a_corrupt_model_is_one_line(tmp_path: Path,
                                                                 corrupt_model: Path) -> None:
    """`flask --app pyhexz.server run` (the 2023 README's command) builds the app from HEXZ_*
    variables: a model that cannot load is one ERROR line and exit status 3 (which also makes
    gunicorn's arbiter stop rather than start the failing worker again), not Flask's traceback."""
    pytest.importorskip("flask")
    r = subprocess.run([sys.executable, "-m", "flask", "--app", "pyhexz.server", "run",
                        "--port", "0"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=TIMEOUT, env=child_env(HEXZ_MODEL_PATH=str(corrupt_model)))
    line = one_line_error(r, status=3)
    assert "ERROR pyhexz.cpu.app" in line and "cpu player cannot start: cannot load model file" \
        in line and "corrupt.pt" in line, line


def test_worker_with_a_refused_token_says_so_and_stops(tmp_path: Path) -> None:
    """A wrong token is not a model that has not arrived yet: one ERROR line, exit at once."""
    pytest.importorskip("flask")
    from pyhexz.train.config import TrainConfig
    from pyhexz.training_server.app import create_app
    from pyhexz.training_server.config import ServerConfig
    app = create_app(ServerConfig(model_name="tok", storage=str(tmp_path / "store"),
                                  auth_token="secret", train=TrainConfig(blocks=1, filters=8)))
    try:
        with serve_app(app) as url:
            argv = ["--log-level", "WARNING", "worker", "--server-url", url, "--auth-token",
                    "wrong", "--max-seconds", "600"]
            r = pyhexz(*argv, cwd=tmp_path)
            r2 = pyhexz(*argv, "--num-workers", "2", cwd=tmp_path)
    finally:
        app.config["service"].close()
    line = one_line_error(r)
    assert " ERROR " in line and "token refused" in line and "HTTP 401" in line, line
    assert "wrong" not in line   # the token itself is not logged
    # Two processes: the first refused says it and the command's status is its; the other
    # says it too, unless the stop that follows reaches it before its own first request.
    assert r2.returncode == 2 and "Traceback" not in r2.stderr, r2.stderr
    assert 1 <= r2.stderr.count("token refused") <= 2, r2.stderr


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
def test_selfplay_stops_at_once_when_a_process_dies(tmp_path: Path) -> None:
    """A self-play process killed under it (out of memory, a signal) ends `selfplay` at once
    with one line and status 1; the other process does not play on to the budget. One run per
    move, so that the live process's games arrive several a second: the death must not hide
    behind them (it did: it was looked for only when the queue was quiet for 1 s)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhexz", "--log-level", "WARNING", "selfplay", "--output-dir",
         "out", "--num-workers", "2", "--max-seconds", "3600", "--runs-per-move", "1"],
        cwd=tmp_path, env=child_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True)
    try:
        # The two self-play processes (spawn also starts a resource tracker).
        def selfplay_children() -> list[int]:
            return [k for k in child_pids(proc.pid) if "spawn_main" in cmdline(k)]
        kids = wait_for(lambda: (lambda k: k if len(k) == 2 else None)(selfplay_children()),
                        TIMEOUT, "two self-play processes")
        os.kill(kids[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    r = subprocess.CompletedProcess(proc.args, proc.returncode, "", err)
    line = one_line_error(r, status=1)
    assert line.startswith("pyhexz selfplay: error: self-play process "), line
    assert "exited with status -9" in line, line
    assert all(pid_gone(k) for k in kids)

