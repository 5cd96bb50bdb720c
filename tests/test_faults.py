"""Hostile clients and unlucky operators against both servers, as they are deployed: the
training server as `pyhexz server` (waitress) and the CPU player as `pyhexz cpu-server`
(gunicorn), real processes on local ports.

- slow clients: 256 connections that send headers and a few body bytes cannot stall the
  training server; each gets 408 once its request is overdue;
- malformed framing (a chunk size of `zz`), deeply nested JSON, wrong JSON types: 4xx and a
  log line, on both servers;
- a checkpoint file corrupt in storage: 503 saying so, not a 500;
- a bounded fuzz run of random and mutated requests at every route of both servers: no 5xx;
- credentials in URLs never reach a log line or a status page.
"""

from __future__ import annotations

import gzip
import json
import random
import select
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests

from conftest import child_env, free_port, stop_processes, training_server_over, wait_for
from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board
from pyhexz.search.driver import SearchConfig, uniform_evaluator
from pyhexz.train.selfplay import run_selfplay

NAME = "faults"
SECRET = "hunter2-secret"
TOKEN = "fault-token"


def _up(proc: subprocess.Popen, url: str, log: Path) -> bool:
    if proc.poll() is not None:
        raise AssertionError(f"exited {proc.returncode}: {log.read_text()[-3000:]}")
    try:
        return requests.get(url + "/healthz", timeout=5).status_code == 200
    except requests.RequestException:
        return False


def _start(argv: list[str], env: dict, log: Path, port: int) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "pyhexz", *argv, "--port", str(port)],
                            env=child_env(**env), stdout=log.open("ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _up(proc, url, log), 120, f"{argv[0]} to answer /healthz", step=0.2)
    except BaseException:
        stop_processes([proc])
        raise
    return proc, url


@pytest.fixture(scope="module")
def one_game() -> pb.AddTrainingExamplesRequest:
    games: list = []
    run_selfplay(lambda: (uniform_evaluator, pb.ModelKey(name=NAME, checkpoint=0)), games.append,
                 SearchConfig(runs_per_move=2), parallel_games=1, max_games=1, seed=3)
    return games[0]


@pytest.fixture(scope="module")
def training_server(tmp_path_factory):
    """`pyhexz server` with a tiny network and a short request deadline; (url, log path)."""
    tmp = tmp_path_factory.mktemp("training-server")
    log = tmp / "server.log"
    proc, url = _start(
        ["server", "--storage", str(tmp / "store"), "--request-timeout", "15"],
        {"HEXZ_MODEL_NAME": NAME, "HEXZ_BLOCKS": "1", "HEXZ_FILTERS": "8",
         "HEXZ_MINIBATCH_SIZE": "100000", "HEXZ_EVAL_OPENINGS": "0",
         "HEXZ_WAL_SEGMENT_BYTES": str(1 << 20), "HEXZ_AUTH_TOKEN": TOKEN,
         "HEXZ_PLAY_SECONDS": "0.05"}, log, free_port())
    yield url, log
    stop_processes([proc])
    assert "Traceback" not in log.read_text()


@pytest.fixture(scope="module")
def cpu_server(tmp_path_factory):
    """`pyhexz cpu-server` following a training server whose URL holds a password (and is not
    there, so the follower keeps logging that URL); (url, log path)."""
    tmp = tmp_path_factory.mktemp("cpu-server")
    log = tmp / "cpu.log"
    follow = f"http://pyhexz:{SECRET}@127.0.0.1:{free_port()}"
    proc, url = _start(
        ["cpu-server", "--max-think-ms", "60", "--default-think-ms", "20"],
        {"HEXZ_SERVER_URL": follow, "HEXZ_MODEL_POLL_SECONDS": "0.5", "HOME": str(tmp),
         "HEXZ_LOG_LEVEL": "INFO"}, log, free_port())
    yield url, log
    stop_processes([proc])


def _auth() -> dict:
    return {"Authorization": f"Bearer {TOKEN}"}


def _raw(url: str, data: bytes, timeout: float = 30, end: bool = False) -> bytes:
    """Sends bytes as they are on a fresh connection; the answer's first bytes ('' if the
    server closed without one). end: then close our side, so that a server waiting for the
    rest of a cut-off request sees the end at once rather than at its read timeout (15-30 s a
    case; stalled clients have tests of their own above)."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=timeout) as s:
        s.sendall(data)
        if end:
            s.shutdown(socket.SHUT_WR)
        try:
            return s.recv(4096)
        except (ConnectionResetError, TimeoutError):
            return b""


def _status(answer: bytes) -> int | None:
    line = answer.split(b"\r\n", 1)[0].split()
    return int(line[1]) if len(line) >= 2 and line[1].isdigit() else None


# --------------------------------------------------------------------------
# Slow clients
# --------------------------------------------------------------------------


def test_slow_clients_cannot_stall_the_training_server(training_server, one_game):
    url, log = training_server
    host, port = url.removeprefix("http://").split(":")
    slow = []
    try:
        for _ in range(256):
            s = socket.create_connection((host, int(port)), timeout=30)
            s.sendall(b"POST /training/examples HTTP/1.1\r\nHost: x\r\n"
                      b"Content-Type: application/x-protobuf\r\nContent-Length: 100000\r\n\r\n"
                      b"1234567")
            slow.append(s)
        # While all 256 wait for their bodies, the server answers others at once: /healthz
        # and a real upload get through before any of the slow requests is given up on.
        assert requests.get(url + "/healthz", timeout=30).json()["ok"] is True
        req = pb.AddTrainingExamplesRequest()
        req.CopyFrom(one_game)
        req.game_id = uuid.uuid4().hex
        r = requests.post(url + "/training/examples", data=gzip.compress(req.SerializeToString()),
                          headers={**_auth(), "Content-Type": "application/x-protobuf",
                                   "Content-Encoding": "gzip"}, timeout=30)
        assert pb.AddTrainingExamplesResponse.FromString(r.content).status == \
            pb.AddTrainingExamplesResponse.ACCEPTED
        readable, _, _ = select.select(slow, [], [], 0)
        assert readable == [], "a slow request was answered before /healthz and the upload"
        # Then each slow request gets 408 when its deadline (15 s here) has passed.
        for s in slow:
            assert _status(s.recv(4096)) == 408
    finally:
        for s in slow:
            s.close()
    wait_for(lambda: "requests timed out" in log.read_text(), 120, "the timeouts' log line")


# --------------------------------------------------------------------------
# The 500s of the issue, one by one
# --------------------------------------------------------------------------

BAD_CHUNKED = (b"POST %s HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: %s\r\nAuthorization: Bearer " + TOKEN.encode() +
               b"\r\n\r\nzz\r\nabc\r\n0\r\n\r\n")


@pytest.mark.parametrize("which, path, ctype", [
    ("training", b"/training/examples", b"application/x-protobuf"),
    ("cpu", b"/hexz/cpu/suggest", b"application/json"),
    ("cpu", b"/hexz/cpu/suggest", b"application/x-protobuf"),
])
def test_malformed_chunked_bodies_get_400_and_a_log_line(training_server, cpu_server, which,
                                                         path, ctype):
    url, log = training_server if which == "training" else cpu_server
    before = len(log.read_text())
    assert _status(_raw(url, BAD_CHUNKED % (path, ctype))) == 400
    wait_for(lambda: "request refused" in log.read_text()[before:], 120, "the log line")
    assert requests.get(url + "/healthz", timeout=30).status_code == 200


@pytest.mark.parametrize("which", ["training", "cpu"])
def test_play_move_with_deep_or_mistyped_json_gets_400(training_server, cpu_server, which):
    url, log = training_server if which == "training" else cpu_server
    state = requests.post(url + "/ui/api/play/new", json={"seed": 1}, headers=_auth(),
                          timeout=30).json()["state"]
    cases = [
        ("[" * 100_000).encode(),
        json.dumps({"state": state, "seat": 1, "move": None, "opponent": [1]}).encode(),
        json.dumps({"state": state, "seat": 1, "move": None, "opponent": {"a": 1}}).encode(),
        json.dumps([1, 2]).encode(),
    ]
    for body in cases:
        r = requests.post(url + "/ui/api/play/move", data=body, timeout=30,
                          headers={**_auth(), "Content-Type": "application/json"})
        assert r.status_code == 400, (body[:60], r.status_code, r.text[:300])
        assert r.json()["error"]
    for body in (b"[1]", b"{" * 50_000):
        r = requests.post(url + "/ui/api/play/new", data=body, timeout=30,
                          headers={**_auth(), "Content-Type": "application/json"})
        assert r.status_code == 400, (body[:20], r.text[:300])
    assert "request refused" in log.read_text()


def test_a_corrupt_checkpoint_file_gets_503_saying_so(trained_repo_factory, tmp_path, caplog):
    name = f"corrupt-{uuid.uuid4().hex[:6]}"
    repo = trained_repo_factory(name)
    path = repo.storage.root / repo.key(1, "scriptmodule.pt")
    path.write_bytes(path.read_bytes()[:-5] + b"xxxxx")
    with training_server_over(repo, tmp_path / "wal") as url, caplog.at_level("INFO", "pyhexz"):
        for route in (f"/models/{name}/checkpoints/1",
                      "/ui/api/checkpoints/1/files/scriptmodule.pt"):
            r = requests.get(url + route, timeout=30)
            assert r.status_code == 503, (route, r.status_code, r.text)
            assert "SHA-256 mismatch, the file is corrupt" in r.json()["error"]
        assert requests.get(f"{url}/models/{name}/checkpoints/2", timeout=30).ok
    assert "SHA-256 mismatch" in caplog.text


# --------------------------------------------------------------------------
# Fuzz: random and mutated requests at every route of both servers
# --------------------------------------------------------------------------

TRAINING_ROUTES = [
    ("POST", "/training/examples"), ("GET", "/models/latest"), ("HEAD", "/models/latest"),
    ("GET", "/models/{name}/checkpoints/{n}"), ("GET", "/status"), ("GET", "/metrics"),
    ("GET", "/healthz"), ("GET", "/"), ("GET", "/ui/"), ("GET", "/ui/{page}"),
    ("GET", "/ui/static/{file}"), ("GET", "/ui/api/pages"), ("GET", "/ui/api/status"),
    ("GET", "/ui/api/checkpoints"), ("GET", "/ui/api/charts/{chart}.svg"),
    ("GET", "/ui/api/checkpoints/{n}/files/{file}"), ("GET", "/ui/api/games"),
    ("GET", "/ui/api/games/{n}/{name}"), ("GET", "/ui/api/play/opponents"),
    ("POST", "/ui/api/play/new"), ("POST", "/ui/api/play/move"),
]
CPU_ROUTES = [
    ("POST", "/hexz/cpu/suggest"), ("GET", "/status"), ("GET", "/healthz"), ("GET", "/"),
    ("GET", "/ui/play"), ("GET", "/ui/api/pages"), ("GET", "/ui/api/play/opponents"),
    ("POST", "/ui/api/play/new"), ("POST", "/ui/api/play/move"),
]
ODD = ["", "0", "-1", "99999999999999999999", "flagz", NAME, "..", "%2e%2e", "a b", "é",
       "model.pt", "scriptmodule.pt", "../meta.json", "training", "play", "loss", "x" * 300]
CONTENT_TYPES = ["application/x-protobuf", "application/json", "application/octet-stream",
                 "text/plain", "", "multipart/form-data; boundary=x", "application/json; q=\x7f"]
ENCODINGS = [None, "gzip", "identity", "br", "gzip, gzip", "\x00"]


def _mutate(rng: random.Random, data: bytes) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(4)
        if op == 0 and b:
            b[rng.randrange(len(b))] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            del b[rng.randrange(len(b)):]
        elif op == 2:
            b[rng.randrange(len(b) + 1):0] = rng.randbytes(rng.randint(1, 40))
        elif b:
            i = rng.randrange(len(b))
            b[i:i] = b[i:i + rng.randint(1, 200)]
    return bytes(b)


def _bodies(one_game: pb.AddTrainingExamplesRequest, state: str) -> list[bytes]:
    """Valid bodies of each route kind, which the fuzzer mutates."""
    board = Board.new(5)
    proto_state = board.to_proto()
    return [
        one_game.SerializeToString(),
        gzip.compress(one_game.SerializeToString()),
        json.dumps({"maxThinkTime": 20_000_000, "gameEngineState": state}).encode(),
        pb.SuggestMoveRequest(game_engine_state=proto_state,
                              max_think_time_ms=20).SerializeToString(),
        json.dumps({"state": state, "seat": 1, "move": [0, 0, 5], "opponent": "rollout"}).encode(),
        json.dumps({"seed": 3}).encode(),
    ]


def _random_json(rng: random.Random, depth: int = 0):
    kind = rng.randrange(7 if depth < 4 else 4)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.choice([0, -1, 2**70, 1.5, float("1e308")])
    if kind == 2:
        return rng.choice(["", "rollout", "cpu", "x" * 1000, "\u0000"])
    if kind == 3:
        return rng.choice(ODD)
    if kind in (4, 5):
        keys = ["state", "seat", "move", "opponent", "seed", "maxThinkTime", "gameEngineState",
                "maxIterations"]
        return {rng.choice(keys): _random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))}
    return [_random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]


def _fuzz_request(rng: random.Random, routes: list, bodies: list[bytes]) -> tuple:
    method, template = rng.choice(routes)
    if rng.random() < 0.15:
        method = rng.choice(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"])
    path = template.format(name=rng.choice(ODD), n=rng.choice(["0", "1", "7", "99999"]),
                           page=rng.choice(ODD), file=rng.choice(ODD), chart=rng.choice(ODD))
    if rng.random() < 0.2:
        path += "?" + rng.choice(["file=model.pt", "file=../x", "file=", "a=%zz", "x" * 500])
    headers = {**_auth()} if rng.random() < 0.9 else {"Authorization": rng.choice(
        ["", "Bearer", "Bearer wrong", "Basic " + TOKEN, "\u00e9"])}
    headers["Content-Type"] = rng.choice(CONTENT_TYPES)
    encoding = rng.choice(ENCODINGS)
    if encoding is not None:
        headers["Content-Encoding"] = encoding
    if rng.random() < 0.2:
        headers["X-Request-Deadline"] = rng.choice(["2030-01-01T00:00:00Z", "yesterday",
                                                    "2020-01-01T00:00:00+00:00", ""])
    roll = rng.random()
    if roll < 0.4:
        body = _mutate(rng, rng.choice(bodies))
    elif roll < 0.6:
        body = json.dumps(_random_json(rng)).encode()
    elif roll < 0.8:
        body = rng.randbytes(rng.randint(0, 2000))
    else:
        body = rng.choice(bodies)
    return method, path, headers, body


def _fuzz(url: str, routes: list, bodies: list[bytes], seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    failures = []
    session = requests.Session()
    for _ in range(n):
        method, path, headers, body = _fuzz_request(rng, routes, bodies)
        try:
            r = session.request(method, url + path, data=body, headers=headers, timeout=60)
        except requests.ConnectionError:
            session = requests.Session()   # the server closed a connection it would not read
            continue
        if r.status_code >= 500:
            failures.append(f"{method} {path[:80]} {headers} body={body[:60]!r} -> "
                            f"{r.status_code} {r.text[:200]!r}")
    # Broken framing below HTTP's request parser: an answer, if any, is never a 5xx.
    raw_cases = [
        b"POST /training/examples HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nab",
        b"POST /hexz/cpu/suggest HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\nabc",
        b"POST /ui/api/play/move HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        b"GET /status HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(40),   # TLS on a plain port
        b"POST /training/examples HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"ffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    ]
    for data in raw_cases:
        status = _status(_raw(url, data, end=True))
        if status is not None and status >= 500:
            failures.append(f"raw {data[:60]!r} -> {status}")
    return failures


def test_fuzzed_requests_never_get_a_5xx(training_server, cpu_server, one_game):
    state = requests.post(cpu_server[0] + "/ui/api/play/new", json={"seed": 2},
                          timeout=30).json()["state"]
    bodies = _bodies(one_game, state)
    failures = _fuzz(training_server[0], TRAINING_ROUTES, bodies, seed=13, n=150)
    failures += _fuzz(cpu_server[0], CPU_ROUTES, bodies, seed=14, n=100)
    assert not failures, "\n".join(failures[:20])
    for url, _ in (training_server, cpu_server):
        assert requests.get(url + "/healthz", timeout=30).status_code == 200


# --------------------------------------------------------------------------
# Secrets
# --------------------------------------------------------------------------


def test_credentials_in_urls_are_hidden_in_logs_and_status(cpu_server, tmp_path):
    url, log = cpu_server
    wait_for(lambda: "cannot reach" in log.read_text(), 120, "the follower's failures")
    status = requests.get(url + "/status", timeout=30).text
    assert SECRET not in status and "pyhexz:***@127.0.0.1" in status
    text = log.read_text()
    assert SECRET not in text and "pyhexz:***@" in text

    # The worker: its start, its waits for a model, its upload failures.
    worker_log = tmp_path / "worker.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "pyhexz", "worker", "--server-url",
         f"http://pyhexz:{SECRET}@127.0.0.1:{free_port()}", "--max-seconds", "60"],
        env=child_env(HEXZ_REDIS_URL=f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
                      HEXZ_MODEL_NAME=NAME),
        stdout=worker_log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_for(lambda: worker_log.read_text().count("worker waiting for a model") >= 2, 120,
                 "the worker's waits")
    finally:
        stop_processes([proc])
    text = worker_log.read_text()
    assert SECRET not in text and ":***@127.0.0.1" in text, text[-2000:]
