"""Network faults end to end: the training server and Redis in one network namespace, two
workers in two more, each joined to the server's by a veth pair of the test's own.

The kernel here (and CI's) has no `netem`, so the faults are made otherwise:
- 200 ms more on every round trip: a TCP relay in the worker's namespace (tests/netrelay.py)
  that holds each chunk 100 ms in each direction; the worker talks to the server and Redis
  through it;
- 10% packet loss: nftables, `numgen random mod 10 0 drop`, both directions of the link;
- a 30 s partition: nftables dropping everything on the link, then removed.
Worker 0 gets the faults, worker 1 (same relay, no delay) is the control. Later phases stop
Redis for 45 s and the training server for 30 s, and finally both workers get SIGTERM: every
game a worker saw acknowledged must be in the server (trained or pending), none twice, and
the workers must carry on after each fault.

Needs root, iproute2 and nftables (.ci/run installs it); skipped with the reason otherwise.
Set HEXZ_FAULT_REPORT=FILE to have the measured table written there as JSON; `pytest -s`
prints it (BENCHMARKS.md, "Fault runs").
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pytest

from conftest import child_env, settled_totals, stop_processes, wait_for
from pyhexz.infra.storage import CheckpointRepo, open_storage
from pyhexz.train.trainer import read_examples_archive

NAME = "netfaults"
RELAY = Path(__file__).with_name("netrelay.py")
SERVER_PORT, REDIS_PORT = 8080, 6379
ACCEPTED = re.compile(r"upload accepted game=(\w+) examples=(\d+)")
STALE = re.compile(r"reason=wrong_model game_model=(\d+) ")
ANSWERED = re.compile(r"upload (?:accepted|rejected) game=")   # final answers, not retries


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=60)


def _can_make_namespaces() -> str | None:
    """Why this machine cannot run the test, or None."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    for tool in ("ip", "nft", "redis-server"):
        if not shutil.which(tool):
            return f"{tool} is not installed (.ci/run installs nftables; iproute2, redis-server)"
    probe = f"h13p{os.getpid() % 100000}"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    try:
        r = _run("ip", "netns", "exec", probe, "nft", "add", "table", "inet", "probe",
                 check=False)
        if r.returncode != 0:
            return f"nftables does not work in a namespace here: {r.stderr.strip()}"
    finally:
        _run("ip", "netns", "del", probe, check=False)
    return None


@dataclass
class Lab:
    """The namespaces, links and processes of one run; `close` removes them all."""

    tmp: Path
    tag: str = field(default_factory=lambda: f"{os.getpid() % 10000}{uuid.uuid4().hex[:3]}")
    namespaces: list[str] = field(default_factory=list)
    procs: list[subprocess.Popen] = field(default_factory=list)

    def ns(self, role: str) -> str:
        return f"h13{role}{self.tag}"

    def add_namespace(self, role: str) -> str:
        name = self.ns(role)
        _run("ip", "netns", "add", name)
        self.namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def link(self, worker: int) -> tuple[str, str]:
        """A veth pair between the server's namespace and worker `worker`'s; returns (the
        server side's address, the worker side's interface)."""
        s_if, w_if = f"h13s{worker}{self.tag}"[:15], f"h13w{worker}{self.tag}"[:15]
        _run("ip", "link", "add", s_if, "type", "veth", "peer", "name", w_if)
        _run("ip", "link", "set", s_if, "netns", self.ns("s"))
        _run("ip", "link", "set", w_if, "netns", self.ns(f"w{worker}"))
        net = f"10.213.{worker + 1}"
        for ns, ifname, host in ((self.ns("s"), s_if, 1), (self.ns(f"w{worker}"), w_if, 2)):
            _run("ip", "-n", ns, "addr", "add", f"{net}.{host}/30", "dev", ifname)
            _run("ip", "-n", ns, "link", "set", ifname, "up")
        return f"{net}.1", w_if

    def start(self, ns: str, argv: list[str], log: Path, env: dict | None = None
              ) -> subprocess.Popen:
        proc = subprocess.Popen(["ip", "netns", "exec", ns, *argv], env=child_env(**(env or {})),
                                stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                start_new_session=True)
        self.procs.append(proc)
        return proc

    def nft(self, ns: str, *rules: str) -> None:
        for rule in rules:
            _run("ip", "netns", "exec", ns, "nft", *rule.split())

    def python_in(self, ns: str, code: str) -> str:
        return _run("ip", "netns", "exec", ns, sys.executable, "-c", code).stdout

    def close(self) -> None:
        stop_processes(self.procs)
        for ns in self.namespaces:   # their veth ends go with them
            _run("ip", "netns", "del", ns, check=False)


@dataclass
class Row:
    """One line of the fault-run table."""

    scenario: str
    acknowledged: int = 0       # games acknowledged to the affected worker during the phase
    lost: int = 0
    duplicated: int = 0
    recover_seconds: float | None = None


class Worker:
    def __init__(self, lab: Lab, i: int, delay: float) -> None:
        self.ns = lab.add_namespace(f"w{i}")
        self.server_addr, self.ifname = lab.link(i)
        self.log = lab.tmp / f"worker-{i}.log"
        routes = [f"127.0.0.1:{port}={self.server_addr}:{port}"
                  for port in (SERVER_PORT, REDIS_PORT)]
        lab.start(self.ns, [sys.executable, str(RELAY), "--delay", str(delay), *routes],
                  lab.tmp / f"relay-{i}.log")
        self.proc = lab.start(self.ns, [
            sys.executable, "-m", "pyhexz", "--log-level", "DEBUG", "worker",
            "--server-url", f"http://127.0.0.1:{SERVER_PORT}",
            "--redis-url", f"redis://127.0.0.1:{REDIS_PORT}/0", "--model-name", NAME,
            "--runs-per-move", "8", "--parallel-games", "4", "--progress-seconds", "5",
            # The scenario's timing (a checkpoint every ~30 games, Server.start) is set for
            # fp32 self-play: int8, 2-3x faster, makes checkpoints come faster than a game
            # waits behind the 200 ms link, and the ages it checks would measure that instead.
            "--backend", "onnx",
            "--grace-seconds", "8", "--seed", str(i)], self.log)

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def model_at(self, offset: int) -> int:
        """The checkpoint it played at log offset `offset` (-1: none yet)."""
        found = re.findall(rf"worker model={NAME}:(\d+) ", self.text()[:offset])
        return int(found[-1]) if found else -1

    def accepted(self, since: int = 0) -> list[str]:
        return [g for g, _ in ACCEPTED.findall(self.text()[since:])]


class Server:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.ns = lab.add_namespace("s")
        self.store = lab.tmp / "store"
        self.log = lab.tmp / "server.log"
        self.proc: subprocess.Popen | None = None
        self.redis: subprocess.Popen | None = None

    def start(self) -> None:
        # A checkpoint every ~120 games: a worker's game waits in its upload buffer (held at
        # the back-pressure limit behind the 200 ms link) for well under the server's
        # max-model-age of 5 checkpoints, while a worker that stopped following models for
        # the 45 s Redis outage would fall further behind than that and lose games. (At ~30
        # games, an idle AVX-512 machine trained a checkpoint every 0.6 s, faster than a game
        # crossed the slow link's buffer: every game of worker 0 arrived too old.)
        self.proc = self.lab.start(self.ns, [
            sys.executable, "-m", "pyhexz", "server", "--host", "0.0.0.0",
            "--port", str(SERVER_PORT)], self.log, {
            "HEXZ_MODEL_NAME": NAME, "HEXZ_STORAGE": str(self.store),
            "HEXZ_REDIS_URL": f"redis://127.0.0.1:{REDIS_PORT}/0", "HEXZ_MINIBATCH_SIZE": "9600",
            "HEXZ_BLOCKS": "1", "HEXZ_FILTERS": "8", "HEXZ_BATCH_SIZE": "64",
            "HEXZ_SAMPLES_PER_EXAMPLE": "1", "HEXZ_MAX_PENDING": "40000",
            "HEXZ_EVAL_OPENINGS": "0", "HEXZ_WAL_SEGMENT_BYTES": str(1 << 20)})
        wait_for(lambda: self.status() is not None, 120, "the training server", step=1)

    def start_redis(self) -> None:
        self.redis = self.lab.start(self.ns, [
            shutil.which("redis-server") or "redis-server", "--port", str(REDIS_PORT),
            "--bind", "0.0.0.0", "--protected-mode", "no", "--save", "", "--appendonly", "no",
            "--dir", str(self.lab.tmp)], self.lab.tmp / "redis.log")

    def kill(self, proc: subprocess.Popen | None) -> None:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)

    def status(self) -> dict | None:
        out = self.lab.python_in(self.ns, (
            "import json, urllib.request\n"
            "try:\n"
            f"    print(urllib.request.urlopen('http://127.0.0.1:{SERVER_PORT}/status', "
            "timeout=10).read().decode())\n"
            "except Exception:\n"
            "    print('null')\n"))
        return json.loads(out)

    def archived_games(self) -> list[str]:
        repo = CheckpointRepo(open_storage(self.store), NAME)
        names = []
        for n in repo.checkpoints():
            for archive in repo.example_archives(n):
                data = repo.storage.read(repo.key(n, f"examples/{archive}"))
                names += [name.split("-", 1)[1] for name, _ in read_examples_archive(data)]
        return names


@pytest.fixture
def lab(tmp_path):
    why = _can_make_namespaces()
    if why:
        pytest.skip(why)
    lab = Lab(tmp_path)
    try:
        yield lab
    finally:
        lab.close()


def _first_accepted_after(worker: Worker, mark: int, seconds: float, what: str) -> float:
    """Seconds until `worker` has a game accepted after log offset `mark`."""
    t0 = time.monotonic()
    wait_for(lambda: worker.accepted(mark), seconds, what, step=0.1)
    return round(time.monotonic() - t0, 1)


def test_latency_loss_partition_and_outages_lose_nothing_acknowledged(lab):
    server = Server(lab)
    workers = [Worker(lab, 0, delay=0.1), Worker(lab, 1, delay=0.0)]
    server.start_redis()
    server.start()
    faulty, control = workers
    rows: list[Row] = []
    for w in workers:
        wait_for(lambda w=w: len(w.accepted()) >= 2, 240, f"{w.log.name}'s first games",
                 step=0.5)

    # 1. 200 ms more per round trip (all along) and 10% loss each way on worker 0's link.
    mark = len(faulty.text())
    lab.nft(faulty.ns, "add table inet loss",
            "add chain inet loss out { type filter hook output priority 0 ; }",
            "add chain inet loss in { type filter hook input priority 0 ; }",
            f"add rule inet loss out oifname {faulty.ifname} numgen random mod 10 0 drop",
            f"add rule inet loss in iifname {faulty.ifname} numgen random mod 10 0 drop")
    wait_for(lambda: len(faulty.accepted(mark)) >= 3, 240, "uploads through loss and latency",
             step=0.5)
    rows.append(Row("200 ms more per round trip + 10% loss each way (worker 0)",
                    len(faulty.accepted(mark))))
    lab.nft(faulty.ns, "delete table inet loss")

    # 2. A 30 s partition of worker 0 from the server (and Redis).
    mark, control_mark = len(faulty.text()), len(control.text())
    lab.nft(faulty.ns, "add table inet cut",
            "add chain inet cut out { type filter hook output priority 0 ; }",
            "add chain inet cut in { type filter hook input priority 0 ; }",
            f"add rule inet cut out oifname {faulty.ifname} drop",
            f"add rule inet cut in iifname {faulty.ifname} drop")
    time.sleep(30)   # the fault itself lasts 30 s: that is the scenario, not a wait
    lab.nft(faulty.ns, "delete table inet cut")
    assert control.accepted(control_mark), "the control worker stalled during the partition"
    healed = len(faulty.text())
    recover = _first_accepted_after(faulty, healed, 180, "worker 0 after the partition")
    # What it held at the heal is sent: every game it had played by its first progress line
    # after the heal gets its answer (its buffer need not empty: self-play that outruns a
    # 200 ms link keeps it full, held at the back-pressure limit). The games played cut off
    # from new models may be too old for the server by now (it trains a checkpoint every few
    # seconds here): refused, not lost; counted.
    played = int(wait_for(lambda: re.search(r"worker progress .* games=(\d+) ",
                                            faulty.text()[healed:]), 180,
                          "worker 0's progress after the partition", step=0.5)[1])
    wait_for(lambda: len(ANSWERED.findall(faulty.text())) >= played, 180,
             f"worker 0 to get answers for the {played} games it had played", step=0.5)
    stale = faulty.text()[mark:].count("reason=wrong_model")
    rows.append(Row(f"30 s partition (worker 0; {stale} games played meanwhile refused as too "
                    "old afterwards)", len(faulty.accepted(mark)), recover_seconds=recover))

    # 3. Redis down for 45 s: models come from the server meanwhile; nothing is dropped as
    # too old (REJECTED_WRONG_MODEL) for want of a newer model.
    marks = [len(w.text()) for w in workers]
    server.kill(server.redis)
    time.sleep(45)
    from_server = sum(len(re.findall(r"worker model=\S+ .* source=server", w.text()[m:]))
                      for w, m in zip(workers, marks, strict=True))
    restarted, t0 = [len(w.text()) for w in workers], time.monotonic()
    server.start_redis()
    # Recovered: a worker takes a model from Redis again (the next checkpoint announced).
    wait_for(lambda: any("source=redis" in w.text()[m:] for w, m in zip(workers, restarted,
                                                                       strict=True)),
             240, "a model from the restarted Redis", step=0.2)
    recover = round(time.monotonic() - t0, 1)
    dropped = sum(w.text()[m:].count("reason=wrong_model") for w, m in zip(workers, marks,
                                                                          strict=True))
    # A game dropped for its age that was played only with models taken during the outage
    # means the worker fell behind for want of Redis (games played before it, still in a
    # buffer behind the partition's backlog, may be too old by now: counted above).
    behind = [g for w, m in zip(workers, marks, strict=True)
              for g in map(int, STALE.findall(w.text()[m:])) if g > w.model_at(m)]
    rows.append(Row(f"Redis down 45 s (both workers; {from_server} model switches from the "
                    f"server meanwhile; {dropped - len(behind)} games of earlier models refused "
                    "as too old)",
                    sum(len(w.accepted(m)) for w, m in zip(workers, marks, strict=True)),
                    lost=len(behind), recover_seconds=recover))
    assert from_server > 0, "no model taken from the server while Redis was down"
    assert behind == [], "games of models taken during the outage dropped as too old"

    # 4. The training server down for 30 s (kill -9), then back; then SIGTERM to both.
    marks = [len(w.text()) for w in workers]
    server.kill(server.proc)   # no answer after this: nothing is accepted until the restart
    time.sleep(30)
    t0 = time.monotonic()
    server.start()
    wait_for(lambda: any(w.accepted(m) for w, m in zip(workers, marks, strict=True)), 180,
             "an upload accepted by the restarted server", step=0.1)
    recover = round(time.monotonic() - t0, 1)   # from the restart, the server's start included
    signalled = time.monotonic()
    for w in workers:
        os.killpg(w.proc.pid, signal.SIGTERM)
    codes = [w.proc.wait(60) for w in workers]
    exit_seconds = round(time.monotonic() - signalled, 1)
    assert codes == [0, 0]
    finals = [re.search(r"worker done .* lost=(\d+)", w.text()) for w in workers]
    assert all(finals), "a worker has no final progress line"
    lost_at_stop = sum(int(f.group(1)) for f in finals if f)
    rows.append(Row("server down 30 s (kill -9), then SIGTERM to both workers "
                    f"(exited after {exit_seconds} s)",
                    sum(len(w.accepted(m)) for w, m in zip(workers, marks, strict=True)),
                    lost=lost_at_stop, recover_seconds=recover))

    # Nothing a worker saw acknowledged is missing, nothing is stored twice.
    acked: dict[str, int] = {}
    for w in workers:
        for game, n in ACCEPTED.findall(w.text()):
            acked[game] = int(n)
    trained, pending = settled_totals(server.status)
    archived = server.archived_games()
    duplicated = len(archived) - len(set(archived))
    for row in rows:
        row.duplicated = duplicated
    # Every acknowledged example is in the server. It may hold a game more than the workers
    # saw acknowledged: one stored whose answer never came back (the worker's grace period
    # ended first, or it gave the game up as lost), which is at-least-once, not a loss.
    assert trained + pending >= sum(acked.values())
    assert duplicated == 0
    assert "Traceback" not in server.log.read_text()
    for w in workers:
        assert "Traceback" not in w.text(), w.text()[-3000:]

    report = [asdict(r) for r in rows]
    print("\nfault runs:\n" + "\n".join(json.dumps(r) for r in report))
    if os.environ.get("HEXZ_FAULT_REPORT"):
        Path(os.environ["HEXZ_FAULT_REPORT"]).write_text(json.dumps(report, indent=1))
