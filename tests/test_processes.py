"""No command leaves a process behind (issue 17, item 5).

Each command that starts processes is started for real, its descendants are waited for, and
then its own process gets SIGTERM, SIGINT or SIGKILL (only it, as `kill PID` or a crash would;
not its process group). Every process it had started must then end: on SIGTERM and SIGINT
because the command stops them, on SIGKILL because each asked Linux to send it SIGTERM when its
parent dies (infra/process.die_with_parent). The waits are on /proc, with generous limits.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env, cmdline, descendant_pids, free_port, pid_gone, wait_for
from pyhexz.infra.process import die_with_parent, start_processes

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads Linux /proc; die_with_parent is Linux's prctl")

# Generous: every process imports torch, and the machine may be busy.
START_SECONDS = 300
# A self-play worker that is told to stop may send its finished games first (its grace
# period, 8 s by default); the rest stop at once.
GONE_SECONDS = 120


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _spawned(pids: list[int]) -> list[int]:
    """The spawned worker processes among `pids` (not spawn's resource tracker)."""
    return [p for p in pids if "spawn_main" in cmdline(p)]


def _forked(pids: list[int]) -> list[int]:
    return pids


# command -> (argv after `pyhexz`, how many workers make it started, which of its descendants
# are the workers). `{port}` is a free port, `{tmp}` the test's folder. A server is started
# when it also answers on its port.
COMMANDS = {
    "selfplay": (["selfplay", "--output-dir", "{tmp}/out", "--num-workers", "2",
                  "--max-seconds", "3600", "--runs-per-move", "8"], 2, _spawned),
    "train": (["train", "--dir", "{tmp}/run", "--num-workers", "2", "--blocks", "1",
               "--filters", "8", "--runs-per-move", "8"], 2, _spawned),
    # No server answers: the workers wait for a model for as long as they are let.
    "worker": (["worker", "--server-url", "http://127.0.0.1:{port}", "--num-workers", "2",
                "--max-seconds", "3600"], 2, _spawned),
    "server": (["server", "--storage", "{tmp}/store", "--port", "{port}", "--eval-openings",
                "2", "--blocks", "1", "--filters", "8"], 1, _spawned),
    # gunicorn (exec'd in its place) and its forked worker.
    "cpu-server": (["cpu-server", "--port", "{port}", "--rollout"], 1, _forked),
}

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGINT": signal.SIGINT, "SIGKILL": signal.SIGKILL}

CASES = [(command, sig) for command in COMMANDS for sig in SIGNALS
         # SIGINT is Ctrl-C: the commands a person runs in a terminal and stops so (the
         # server takes SIGINT as it takes SIGTERM, through the same handler).
         if sig != "SIGINT" or command in ("selfplay", "train")]


@pytest.mark.parametrize("command, sig", CASES, ids=[f"{c}-{s}" for c, s in CASES])
def test_no_process_outlives_its_command(tmp_path: Path, command: str, sig: str) -> None:
    if command in ("server", "cpu-server"):
        pytest.importorskip("flask")
    argv, workers, which = COMMANDS[command]
    port = free_port()
    argv = [a.format(tmp=tmp_path, port=port) for a in argv]
    proc = subprocess.Popen([sys.executable, "-m", "pyhexz", "--log-level", "WARNING", *argv],
                            cwd=tmp_path, env=child_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, start_new_session=True)
    started: list[int] = []
    try:
        def ready() -> bool:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            return (len(which(descendant_pids(proc.pid))) >= workers
                    and ("--port" not in argv or _listening(port)))
        wait_for(ready, START_SECONDS, f"{command}: {workers} worker processes")
        started = descendant_pids(proc.pid)
        os.kill(proc.pid, SIGNALS[sig])
        proc.wait(timeout=GONE_SECONDS)
        wait_for(lambda: all(pid_gone(p) for p in started), GONE_SECONDS,
                 f"{command} after {sig}: every process it started to end "
                 f"({[(p, cmdline(p)) for p in started if not pid_gone(p)]})")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in started:   # leave nothing behind even when the test fails
            if not pid_gone(p):
                os.kill(p, signal.SIGKILL)
    if sig != "SIGKILL":
        err = proc.stderr.read().decode() if proc.stderr else ""
        assert "Traceback" not in err, err


def _sleeper(ready) -> None:
    die_with_parent()
    ready.set()
    import time
    while True:
        time.sleep(1)


def test_die_with_parent_on_a_parent_that_is_killed(tmp_path: Path) -> None:
    """The helper itself: a spawned process of a process that is SIGKILLed ends too."""
    code = (
        "import multiprocessing as mp, sys, time\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "from test_processes import _sleeper\n"
        "if __name__ == '__main__':\n"
        "    ctx = mp.get_context('spawn')\n"
        "    ready = ctx.Event()\n"
        "    p = ctx.Process(target=_sleeper, args=(ready,), daemon=True)\n"
        "    p.start()\n"
        "    ready.wait()\n"
        "    print(p.pid, flush=True)\n"
        "    time.sleep(3600)\n")
    parent = subprocess.Popen([sys.executable, "-c", code, str(Path(__file__).parent)],
                              env=child_env(), stdout=subprocess.PIPE, text=True,
                              start_new_session=True)
    try:
        child = int(parent.stdout.readline()) if parent.stdout else 0
        assert child and not pid_gone(child)
        parent.kill()
        parent.wait()
        wait_for(lambda: pid_gone(child), GONE_SECONDS, "the child of a killed parent to end")
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


class _SignalledWhileStarting:
    """A process whose start() is interrupted by a signal half way, as a Ctrl-C can come
    while spawn is still writing a child's start-up data."""

    def __init__(self, log: list[str], name: str, sig: int | None = None) -> None:
        self.log, self.name, self.sig = log, name, sig

    def start(self) -> None:
        if self.sig is not None:
            os.kill(os.getpid(), self.sig)
        self.log.append(f"{self.name} started")


def test_a_signal_during_start_is_acted_on_once_every_process_has_started():
    log: list[str] = []
    # Ctrl-C's handler, set here: a test run started in the background (`cmd &`) inherits
    # SIGINT ignored, and then there is nothing to act on (the next test).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            start_processes([_SignalledWhileStarting(log, "a", signal.SIGINT),
                             _SignalledWhileStarting(log, "b")])
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # put back
    finally:
        signal.signal(signal.SIGINT, before)
    assert log == ["a started", "b started"]


def test_a_signal_this_process_ignores_stays_ignored_during_start():
    log: list[str] = []
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        start_processes([_SignalledWhileStarting(log, "a", signal.SIGINT),
                         _SignalledWhileStarting(log, "b")])
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)
    assert log == ["a started", "b started"]


def test_a_held_back_sigterm_goes_to_the_handler_there_was():
    log: list[str] = []
    before = signal.signal(signal.SIGTERM, lambda signum, frame: log.append(f"handled {signum}"))
    try:
        start_processes([_SignalledWhileStarting(log, "a", signal.SIGTERM),
                         _SignalledWhileStarting(log, "b")])
    finally:
        signal.signal(signal.SIGTERM, before)
    assert log == ["a started", "b started", f"handled {int(signal.SIGTERM)}"]
