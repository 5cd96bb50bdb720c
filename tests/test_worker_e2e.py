"""Workers end to end, all real processes: the training server (`pyhexz server`, as deployed), a
redis-server of the
test's own, and `python -m pyhexz worker` processes with a tiny network and few runs per move.

One run goes through the life of a training job: checkpoints 1 and 2 are trained from the
workers' games and the workers switch to them (visible in the model keys of later examples);
then a corrupt model in Redis, a Redis restart and a training server restart, each while the
workers play; at the end SIGTERM, and every example a worker had acknowledged is in the
server. A second test runs two worker processes without Redis against their time budget.
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from conftest import child_env, free_port, settled_totals, wait_for
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.storage import CheckpointRepo, open_storage, sha256
from pyhexz.train.trainer import read_examples_archive

NAME = "e2e"
ACCEPTED = re.compile(r"upload accepted game=(\w+) examples=(\d+)")
pytestmark = pytest.mark.skipif(importlib.util.find_spec("waitress") is None,
                                reason="waitress (the server extra) is not installed")


# --- processes -------------------------------------------------------------------------------

def _env(extra: dict) -> dict:
    return child_env(**extra)


class Server:
    """The training server as deployed (`pyhexz server`), restartable on the same storage and
    WAL."""

    def __init__(self, tmp: Path, redis_url: str | None, minibatch: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.store = tmp / "store"
        self.log = tmp / "server.log"
        self.env = _env({"HEXZ_MODEL_NAME": NAME, "HEXZ_STORAGE": str(self.store),
                         "HEXZ_MINIBATCH_SIZE": str(minibatch), "HEXZ_BLOCKS": "1",
                         "HEXZ_FILTERS": "8", "HEXZ_BATCH_SIZE": "64",
                         "HEXZ_SAMPLES_PER_EXAMPLE": "1", "HEXZ_MAX_PENDING": str(50 * minibatch),
                         "HEXZ_EVAL_OPENINGS": "0",   # `pyhexz server` evaluates by default
                         **({"HEXZ_REDIS_URL": redis_url} if redis_url else {})})
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyhexz", "server", "--port", str(self.port)],
            env=self.env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True)
        wait_for(self.healthy, 120, "the training server to start")

    def healthy(self) -> bool:
        try:
            return requests.get(f"{self.url}/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def status(self) -> dict:
        return requests.get(f"{self.url}/status", timeout=10).json()

    def stop(self) -> None:
        """SIGTERM, as a VM shutdown or a redeploy sends it: the server finishes what it serves."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(60)
        self.proc = None

    def repo(self) -> CheckpointRepo:
        return CheckpointRepo(open_storage(self.store), NAME)


class Worker:
    def __init__(self, tmp: Path, i: int, server_url: str, *flags: str) -> None:
        self.log = tmp / f"worker-{i}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pyhexz", "--log-level", "DEBUG", "worker",
             "--server-url", server_url, "--model-name", NAME, "--runs-per-move", "8",
             "--parallel-games", "4", "--progress-seconds", "5", "--grace-seconds", "4",
             "--seed", str(i), *flags],
            env=_env({}), stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
            start_new_session=True)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def models(self, since: int = 0) -> list[tuple[int, str]]:
        """(checkpoint, source) of every model it switched to, from offset `since` of its log."""
        return [(int(n), src) for n, src in re.findall(
            rf"worker model={NAME}:(\d+) sha256=\S+ source=(\w+)", self.text()[since:])]

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _archived(repo: CheckpointRepo) -> list[tuple[int, str, list[int]]]:
    """(checkpoint, game name, model-key checkpoints of its examples) for every archived game."""
    out = []
    for n in repo.checkpoints():
        for archive in repo.example_archives(n):
            data = repo.storage.read(repo.key(n, f"examples/{archive}"))
            for name, req in read_examples_archive(data):
                assert all(ex.model_key.name == NAME for ex in req.examples)
                out.append((n, name, [ex.model_key.checkpoint for ex in req.examples]))
    return out


def _settled_totals(server: Server) -> tuple[int, int]:
    """(examples trained, examples pending) once no training run is changing them."""
    return settled_totals(server.status, tries=100, step=0.3)


# --- the tests -------------------------------------------------------------------------------

def test_two_workers_train_switch_and_ride_out_faults(redis_server, tmp_path):
    server = Server(tmp_path, redis_server.url, minibatch=1000)
    server.start()
    bus = ModelBus(redis_server.url, NAME)
    workers = [Worker(tmp_path, i, server.url, "--redis-url", redis_server.url,
                      "--model-poll-seconds", "5") for i in range(2)]
    try:
        # 1. Checkpoints 1 and 2 are trained from the workers' games; the workers switch.
        wait_for(lambda: (server.status()["checkpoint"] or 0) >= 2, 120, "checkpoints 1 and 2")
        for w in workers:
            wait_for(lambda w=w: {1, 2} <= {n for n, _ in w.models()}, 120,
                     f"{w.log.name} to load checkpoints 1 and 2")
        # The switch shows in the data once a checkpoint trains on games of checkpoint 1 or
        # later. Which checkpoint that is depends on the machine's speed: a fast worker can
        # fill checkpoint 2's minibatch with model-0 games before the switch reaches it.
        wait_for(lambda: max((k for _, _, keys in _archived(server.repo()) for k in keys),
                             default=-1) >= 1,
                 120, "a checkpoint trained on games of a switched model", step=0.5)
        archived = _archived(server.repo())
        assert {n for n, _, _ in archived} >= {1, 2}
        for n, _, keys in archived:
            assert max(keys) < n   # checkpoint n learnt only from models before it

        # 2. A corrupt model in Redis: refused with a clear line, the old model kept.
        bogus = 10**6
        bus.redis.hset(bus.checkpoint_key(bogus), mapping={"data": b"not the model",
                                                           "sha256": sha256(b"the model")})
        bus.redis.publish(bus.channel, bogus)
        for w in workers:
            wait_for(lambda w=w: f"model switch refused to={NAME}:{bogus}" in w.text(), 120,
                     f"{w.log.name} to refuse the corrupt model")
            line = next(x for x in w.text().splitlines() if "model refused source=redis" in x)
            assert " ERROR " in line and "SHA-256" in line and bus.checkpoint_key(bogus) in line
            assert all(n < bogus for n, _ in w.models())

        # 3. Redis restarts (empty: no persistence). Workers reconnect and follow new checkpoints.
        marks = [len(w.text()) for w in workers]
        before = server.status()["checkpoint"]
        redis_server.stop()
        time.sleep(1.0)
        redis_server.start()
        for w, mark in zip(workers, marks, strict=True):
            wait_for(lambda w=w, mark=mark: "model watch lost redis" in w.text()[mark:], 120,
                     f"{w.log.name} to notice the restart")
            wait_for(lambda w=w, mark=mark: any(n > before + 1 and src == "redis"
                                                for n, src in w.models(mark)),
                     120, f"{w.log.name} to take a new checkpoint from the restarted Redis")

        # 4. The training server restarts; the workers resend and carry on.
        marks = [len(w.text()) for w in workers]
        server.stop()
        before = max(server.repo().checkpoints())
        for w, mark in zip(workers, marks, strict=True):
            wait_for(lambda w=w, mark=mark: "upload failed" in w.text()[mark:], 120,
                     f"{w.log.name} to retry")
        server.start()
        wait_for(lambda: server.status()["checkpoint"] > before + 1, 120,
                 "training to go on after the restart")
        for w, mark in zip(workers, marks, strict=True):
            wait_for(lambda w=w, mark=mark: "upload accepted" in w.text()[mark:], 120,
                     f"{w.log.name} to carry on")

        # 5. SIGTERM: finished games are sent, exit 0. (Inside Cloud Run's 10 s: the worker's
        # grace period bounds it; the fault runs in BENCHMARKS.md measure the wall time.)
        for w in workers:
            os.killpg(w.proc.pid, signal.SIGTERM)
        for w in workers:
            assert w.proc.wait(120) == 0
        # Nothing a worker saw acknowledged is missing: trained + pending = acknowledged.
        acked = {}
        for w in workers:
            for game, n in ACCEPTED.findall(w.text()):
                acked[game] = int(n)
            done = re.search(r"worker done .* uploaded_examples=(\d+)", w.text())
            assert done, f"no final line in {w.log.name}"
        trained, pending = _settled_totals(server)
        assert trained + pending == sum(acked.values())
        archived = _archived(server.repo())
        names = [name.split("-", 1)[1] for _, name, _ in archived]
        assert len(names) == len(set(names)) and set(names) <= set(acked)
        assert sum(acked[g] for g in names) == trained
    finally:
        for w in workers:
            w.kill()
        server.stop()
    for w in workers:
        assert "Traceback" not in w.text(), w.text()[-3000:]
    assert "Traceback" not in server.log.read_text()


def _assert_sent_everything(w: Worker, processes: int) -> None:
    """Every process of `w` ended with its games sent and none lost."""
    lost = re.findall(r"worker done .* lost=(\d+)", w.text())
    assert len(lost) == processes and set(lost) == {"0"}, lost


def test_two_processes_without_redis_follow_the_server_and_keep_the_time_budget(tmp_path):
    server = Server(tmp_path, None, minibatch=600)
    server.start()
    workers: list[Worker] = []   # killed at the end whatever happened: no process left behind
    try:
        # 1. Two processes without Redis follow the server's checkpoints (upload answers and
        # /models/latest) as far as checkpoint 2, each on its own; then SIGTERM.
        w = Worker(tmp_path, 0, server.url, "--model-poll-seconds", "2", "--num-workers", "2")
        workers.append(w)

        def per_process() -> dict[str, list[tuple[int, str]]]:
            loads: dict[str, list[tuple[int, str]]] = {}
            for pid, n, src in re.findall(rf"pid=(\d+) worker model={NAME}:(\d+) sha256=\S+ "
                                          r"source=(\w+)", w.text()):
                loads.setdefault(pid, []).append((int(n), src))
            return loads

        wait_for(lambda: len(per_process()) == 2 and all(
            max(n for n, _ in m) >= 2 for m in per_process().values()), 300,
            "both processes to follow the server to checkpoint 2", step=0.5)
        os.killpg(w.proc.pid, signal.SIGTERM)
        assert w.proc.wait(120) == 0
        assert all(m[0] == (0, "server") and {src for _, src in m} == {"server"}
                   for m in per_process().values())
        _assert_sent_everything(w, 2)

        # 2. A time budget, counted from the command's start (before torch loads), for both
        # processes: each stops for it by itself, nothing lost. (How soon after the budget:
        # BENCHMARKS.md; it depends on the machine.)
        b = Worker(tmp_path, 1, server.url, "--max-seconds", "10", "--num-workers", "2")
        workers.append(b)
        assert b.proc.wait(300) == 0
        # Each process winds down for the budget (no new games once the last would not end
        # in time) or, if it is reached mid-game, stops there.
        stopped = set(re.findall(r"pid=(\d+) (?:worker winding down|worker stopping "
                                 r"reason=time_budget)", b.text()))
        assert len(stopped) == 2, b.text()[-3000:]
        _assert_sent_everything(b, 2)
        acked = sum(int(n) for log in (w, b) for _, n in ACCEPTED.findall(log.text()))
        assert sum(_settled_totals(server)) == acked
    finally:
        for worker in workers:
            worker.kill()
        server.stop()
