"""The training server over real HTTP: in-process (werkzeug in a thread) and under gunicorn,
with a real Redis, the GCS emulator, real protobuf bytes and real self-play games."""

from __future__ import annotations

import gzip
import io
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from prometheus_client.parser import text_string_to_metric_families

from conftest import free_port, serve_app, wait_for
from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import decode
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.storage import CheckpointRepo, open_storage, sha256
from pyhexz.nn import load_model_bytes
from pyhexz.search.driver import SearchConfig, uniform_evaluator
from pyhexz.train.config import TrainConfig
from pyhexz.train.selfplay import run_selfplay
from pyhexz.train.trainer import read_examples_archive
from pyhexz.training_server.app import create_app
from pyhexz.training_server.config import ServerConfig
from pyhexz.training_server.metrics import ServerMetrics

Resp = pb.AddTrainingExamplesResponse
PROTO = {"Content-Type": "application/x-protobuf"}
TINY = dict(blocks=1, filters=8, batch_size=16, samples_per_example=0.5)
SEG = 1 << 20  # WAL segments are zero-filled when created: small ones keep tests quick


@pytest.fixture(scope="module")
def games() -> list[pb.AddTrainingExamplesRequest]:
    """Eight real self-play games (uniform priors, 2 runs a move), about 70 examples each."""
    out: list[pb.AddTrainingExamplesRequest] = []
    run_selfplay(lambda: (uniform_evaluator, pb.ModelKey(name="x", checkpoint=0)), out.append,
                 SearchConfig(runs_per_move=2), parallel_games=8, max_games=8, seed=11)
    return out


def keyed(req: pb.AddTrainingExamplesRequest, name: str, checkpoint: int = 0,
          game_id: str = "") -> pb.AddTrainingExamplesRequest:
    """A copy of a game whose examples carry model key name:checkpoint."""
    out = pb.AddTrainingExamplesRequest()
    out.CopyFrom(req)
    out.game_id = game_id or uuid.uuid4().hex[:12]
    for ex in out.examples:
        ex.model_key.name, ex.model_key.checkpoint = name, checkpoint
    return out


class Served:
    """The app on werkzeug's threaded server in a thread of this process."""

    def __init__(self, config: ServerConfig) -> None:
        from werkzeug.serving import make_server
        config.segment_bytes = SEG
        self.config = config
        self.app = create_app(config)
        self.service = self.app.config["service"]
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        assert self.service.wait_ready(60)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.service.close()


@pytest.fixture
def serve():
    import logging
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
    servers: list[Served] = []

    def start(config: ServerConfig) -> Served:
        servers.append(Served(config))
        return servers[-1]

    yield start
    for s in servers:
        s.stop()


def post(url: str, req, *, gzip_body: bool = False, headers: dict | None = None,
         body: bytes | None = None) -> tuple[requests.Response, Resp]:
    data = req.SerializeToString() if body is None else body
    h = dict(PROTO)
    if gzip_body:
        data = gzip.compress(data, compresslevel=1)
        h["Content-Encoding"] = "gzip"
    h.update(headers or {})
    r = requests.post(f"{url}/training/examples", data=data, headers=h, timeout=30)
    return r, Resp.FromString(r.content)


def status(url: str, token: str | None = None) -> dict:
    h = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.get(f"{url}/status", headers=h, timeout=30).json()


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """/metrics parsed with prometheus_client's own parser: (sample name, sorted labels) ->
    value. The parser raises on anything that is not valid exposition text."""
    return {(smp.name, tuple(sorted(smp.labels.items()))): smp.value
            for family in text_string_to_metric_families(text) for smp in family.samples}


def labels(**kw: str) -> tuple:
    """A sample's labels as `samples` keys them."""
    return tuple(sorted(kw.items()))


def archived(repo: CheckpointRepo, n: int) -> list[pb.AddTrainingExamplesRequest]:
    return [req for name in repo.example_archives(n)
            for _, req in read_examples_archive(repo.storage.read(repo.key(n, f"examples/{name}")))]


# --------------------------------------------------------------------------
# The whole path: ingest, train, storage (GCS emulator), Redis, announcement, HTTP download
# --------------------------------------------------------------------------


def test_ingest_train_publish_to_gcs_and_redis(serve, games, gcs_emulator, redis_url, tmp_path):
    name = f"full-{uuid.uuid4().hex[:6]}"
    store = gcs_emulator.url(f"{name}/runs")
    bus = ModelBus(redis_url, name)
    announced: list[int] = []
    listening = threading.Event()

    def listen() -> None:
        for n in bus.announcements(poll_seconds=0.05):
            listening.set()
            if n is not None:
                announced.append(n)
                if n == 1:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert listening.wait(10)
    s = serve(ServerConfig(model_name=name, storage=store, state_dir=str(tmp_path / "state"),
                           redis_url=redis_url,
                           train=TrainConfig(trigger_examples=200, **TINY)))
    # Checkpoint 0 is in storage and Redis from the start.
    assert status(s.url)["checkpoint"] == 0
    wait_for(lambda: bus.latest() == 0, 120)
    sent = [keyed(g, name, 0, f"g{i}") for i, g in enumerate(games[:4])]
    for i, req in enumerate(sent):
        r, resp = post(s.url, req, gzip_body=i % 2 == 0)
        assert (r.status_code, resp.status) == (200, Resp.ACCEPTED), resp.error_message
        assert (resp.latest_model.name, resp.latest_model.checkpoint) == (name, 0)
    total = sum(len(g.examples) for g in sent)
    assert total >= 200
    wait_for(lambda: status(s.url)["checkpoint"] == 1, 120)
    listener.join(30)
    assert announced == [0, 1]  # checkpoint 0 when the server created it

    repo = CheckpointRepo(open_storage(store), name)
    assert repo.checkpoints() == [0, 1]
    meta = repo.meta(1)
    assert meta["examples_trained"] == total and meta["new_examples"] == total
    assert meta["wal"]["position"] > 0
    assert set(meta["sha256"]) == {"model.pt", "scriptmodule.pt", "model.onnx",
                                   "examples/000001.zip"}
    # The archive holds exactly the requests sent, byte for byte (gzip or not on the wire).
    assert sorted(r.SerializeToString() for r in archived(repo, 1)) == \
        sorted(r.SerializeToString() for r in sent)
    script = repo.read_verified(1, "scriptmodule.pt")
    m = bus.fetch(1)
    assert m.data == script and m.sha256 == meta["sha256"]["scriptmodule.pt"] == sha256(script)
    assert m.onnx == repo.read_verified(1, "model.onnx")   # workers need not convert it
    assert bus.latest() == 1

    r = requests.get(f"{s.url}/models/latest", timeout=30)
    assert r.status_code == 200 and r.content == script
    assert r.headers["X-Model-Name"] == name and r.headers["X-Model-Checkpoint"] == "1"
    assert r.headers["X-Model-SHA256"] == sha256(r.content)
    net = load_model_bytes(r.content, source="GET /models/latest")
    arrays = decode(list(sent[0].examples))
    logits, value = net(torch.from_numpy(arrays.boards[:3]), torch.from_numpy(arrays.masks[:3]))
    assert logits.shape == (3, 220) and value.shape == (3, 1)
    r = requests.get(f"{s.url}/models/{name}/checkpoints/0?file=model.pt", timeout=30)
    assert r.status_code == 200 and r.content == repo.read_verified(0, "model.pt")
    assert r.headers["X-Model-SHA256"] == sha256(r.content)

    # Later answers name the new model; the status and metrics tell the story.
    r, resp = post(s.url, keyed(games[4], name, 1))
    assert resp.status == Resp.ACCEPTED and resp.latest_model.checkpoint == 1
    st = status(s.url)
    assert st["examples"]["received"] == total + len(games[4].examples)
    assert st["examples"]["trained"] == total
    assert st["examples"]["pending"] == len(games[4].examples)
    assert st["training"]["runs"] == 1 and st["training"]["last"]["policy_loss"] > 0
    assert st["redis"]["checkpoint"] == 1
    r = requests.get(f"{s.url}/metrics", timeout=30)
    assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    metrics = samples(r.text)
    assert metrics["pyhexz_checkpoint", labels(model=name)] == 1
    assert metrics["pyhexz_requests_total", labels(model=name, status="ACCEPTED")] == 5
    assert metrics["pyhexz_examples_received_total", labels(model=name)] == \
        st["examples"]["received"]
    assert st["games"]["received"] == 5   # one upload is one game
    assert metrics["pyhexz_games_received_total", labels(model=name)] == 5
    # The ingestion-latency histogram has seen each of the five uploads, once.
    accepted = labels(model=name, status="ACCEPTED")
    assert metrics["pyhexz_ingest_seconds_count", accepted] == 5
    assert metrics["pyhexz_ingest_seconds_bucket",
                   labels(model=name, status="ACCEPTED", le="+Inf")] == 5
    assert metrics["pyhexz_ingest_seconds_sum", accepted] > 0

    # Label values are escaped: quotes, backslashes and newlines come back as they were.
    odd = 'a "quoted"\\ name\nsecond line'
    st = dict(s.service.status(), model=odd, requests={'we"ird\\': 2})
    text = ServerMetrics(odd, lambda: st).text().decode()
    assert 'model="a \\"quoted\\"\\\\ name\\nsecond line"' in text
    again = samples(text)
    assert again["pyhexz_requests_total", labels(model=odd, status='we"ird\\')] == 2
    assert again["pyhexz_checkpoint", labels(model=odd)] == 1


def test_training_goes_on_while_redis_is_down_and_redis_catches_up(serve, games, redis_server,
                                                                    tmp_path):
    """Redis is a copy: a checkpoint published while Redis is down reaches it once it is back
    (here an empty Redis, as after a restart without persistence)."""
    name = "flaky-redis"
    s = serve(ServerConfig(model_name=name, storage=str(tmp_path / "store"),
                           redis_url=redis_server.url, redis_sync_seconds=0.2,
                           train=TrainConfig(trigger_examples=90, **TINY)))
    bus = ModelBus(redis_server.url, name)
    wait_for(lambda: bus.latest() == 0, 120)
    redis_server.stop()
    for g in games[:2]:
        assert post(s.url, keyed(g, name, 0))[1].status == Resp.ACCEPTED
    wait_for(lambda: status(s.url)["checkpoint"] == 1)
    st = status(s.url)
    assert st["ready"] and st["redis"]["checkpoint"] == 0
    assert requests.get(f"{s.url}/healthz", timeout=10).status_code == 200
    redis_server.start()
    wait_for(lambda: status(s.url)["redis"]["checkpoint"] == 1, 120)
    repo = CheckpointRepo(open_storage(tmp_path / "store"), name)
    assert bus.latest() == 1 and bus.fetch(1).data == repo.read_verified(1, "scriptmodule.pt")
    assert bus.fetch(1).onnx == repo.read_verified(1, "model.onnx")   # the sync brings it too


# --------------------------------------------------------------------------
# Restarts: the WAL replays exactly the untrained suffix
# --------------------------------------------------------------------------


def test_restart_trains_the_untrained_examples_exactly_once(serve, games, tmp_path):
    name = "restart"
    cfg = ServerConfig(model_name=name, storage=str(tmp_path / "store"), max_model_age=0,
                       train=TrainConfig(trigger_examples=250, **TINY))
    s = serve(cfg)
    first = [keyed(g, name, 0) for g in games[:3]]
    more = [keyed(g, name, 0) for g in games[3:5]]
    n_first = sum(len(g.examples) for g in first)
    assert n_first < 250 <= n_first + sum(len(g.examples) for g in more)
    for i, req in enumerate(first):  # gzip bodies are kept compressed in the WAL
        assert post(s.url, req, gzip_body=i != 1)[1].status == Resp.ACCEPTED
    s.stop()  # a stop looks like a crash to the WAL: only what was fsync'ed counts

    s = serve(cfg)
    st = status(s.url)
    assert st["examples"]["recovered"] == n_first == st["examples"]["pending"]
    assert st["checkpoint"] == 0
    for req in more:
        assert post(s.url, req)[1].status == Resp.ACCEPTED
    wait_for(lambda: status(s.url)["checkpoint"] == 1)
    repo = CheckpointRepo(open_storage(cfg.storage), name)
    assert repo.meta(1)["examples_trained"] == n_first + sum(len(g.examples) for g in more)
    assert sorted(r.SerializeToString() for r in archived(repo, 1)) == \
        sorted(r.SerializeToString() for r in first + more)
    # max_model_age 0: examples of checkpoint 0 are now too old.
    r, resp = post(s.url, keyed(games[5], name, 0))
    assert (r.status_code, resp.status) == (200, Resp.REJECTED_WRONG_MODEL)
    assert resp.latest_model.checkpoint == 1 and "accepts restart:1..1" in resp.error_message
    late = keyed(games[6], name, 1)
    assert post(s.url, late)[1].status == Resp.ACCEPTED
    s.stop()

    s = serve(cfg)  # nothing is counted twice: only the one request after checkpoint 1
    st = status(s.url)
    assert st["examples"]["recovered"] == len(late.examples) == st["examples"]["pending"]
    assert st["examples"]["trained"] == repo.meta(1)["examples_trained"]
    # Segments that checkpoint 1 holds entirely were deleted when it was published.
    assert 0 < st["wal"]["first"] <= repo.meta(1)["wal"]["position"]


def test_examples_from_another_wal_are_not_mistaken_for_trained(serve, games, tmp_path):
    """A new state directory (lost disk, new VM) with an existing storage: checkpoints of the
    old WAL say nothing about the new one, whose records all count as new."""
    name = "lineage"
    cfg = dict(model_name=name, storage=str(tmp_path / "store"),
               train=TrainConfig(trigger_examples=90, **TINY))
    s = serve(ServerConfig(state_dir=str(tmp_path / "a"), **cfg))
    assert sum(len(g.examples) for g in games[:2]) >= 90
    for g in games[:2]:
        post(s.url, keyed(g, name, 0))
    wait_for(lambda: status(s.url)["checkpoint"] == 1)
    s.stop()
    s = serve(ServerConfig(state_dir=str(tmp_path / "b"), **cfg))
    req = keyed(games[2], name, 1)
    assert post(s.url, req)[1].status == Resp.ACCEPTED
    s.stop()
    s = serve(ServerConfig(state_dir=str(tmp_path / "b"), **cfg))
    st = status(s.url)
    assert st["checkpoint"] == 1 and st["examples"]["recovered"] == len(req.examples)


def test_two_servers_on_one_storage_the_second_writer_stops_loudly(serve, games, tmp_path):
    name = "twins"
    cfg = dict(model_name=name, storage=str(tmp_path / "store"),
               train=TrainConfig(trigger_examples=90, **TINY))
    a = serve(ServerConfig(state_dir=str(tmp_path / "a"), **cfg))
    b = serve(ServerConfig(state_dir=str(tmp_path / "b"), **cfg))
    for g in games[:2]:
        assert post(a.url, keyed(g, name, 0))[1].status == Resp.ACCEPTED
    wait_for(lambda: status(a.url)["checkpoint"] == 1)
    repo = CheckpointRepo(open_storage(cfg["storage"]), name)
    published = repo.read_verified(1, "model.pt")
    for g in games[2:4]:  # b still believes in checkpoint 0 and tries to write checkpoint 1
        assert post(b.url, keyed(g, name, 0))[1].status == Resp.ACCEPTED
    wait_for(lambda: status(b.url)["failure"])
    assert "CheckpointExistsError" in status(b.url)["failure"]
    assert requests.get(f"{b.url}/healthz", timeout=10).status_code == 503
    r, resp = post(b.url, keyed(games[4], name, 0))
    assert (r.status_code, resp.status) == (503, Resp.REJECTED_AT_CAPACITY)
    assert repo.checkpoints() == [0, 1] and repo.read_verified(1, "model.pt") == published


def test_a_storage_failure_at_start_is_retried_until_it_clears(games, tmp_path):
    """Storage that fails while the trainer starts is retried (with the one Backoff), not
    fatal: meanwhile /healthz says why and uploads get 503; then the server comes up alone."""
    name = "late-storage"
    store = tmp_path / "store"
    store.mkdir()
    (store / "models").write_text("a file where the models directory belongs")
    app = create_app(ServerConfig(model_name=name, storage=str(store), segment_bytes=SEG,
                                  state_dir=str(tmp_path / "state"), startup_wait_seconds=0.1,
                                  train=TrainConfig(trigger_examples=90, **TINY)))
    service = app.config["service"]
    try:
        with serve_app(app) as url:
            health = wait_for(lambda: (lambda r: r.json() if r.json()["failure"] else None)(
                requests.get(f"{url}/healthz", timeout=10)))
            assert health["ok"] is False and health["failure"].startswith("starting: ")
            assert requests.get(f"{url}/healthz", timeout=10).status_code == 503
            r, resp = post(url, keyed(games[0], name))
            assert (r.status_code, resp.status) == (503, Resp.REJECTED_AT_CAPACITY)
            assert resp.error_message.startswith("starting: ")
            (store / "models").unlink()
            assert service.wait_ready(120)   # the next try is at most a minute (the cap) away
            assert requests.get(f"{url}/healthz", timeout=10).json() == {"ok": True,
                                                                        "failure": None}
            r, resp = post(url, keyed(games[0], name))
            assert (r.status_code, resp.status) == (200, Resp.ACCEPTED), resp.error_message
    finally:
        service.close()


# --------------------------------------------------------------------------
# kill -9 under gunicorn, mid-training
# --------------------------------------------------------------------------


def _gunicorn(env: dict, port: int, log: Path) -> subprocess.Popen:
    exe = Path(sys.executable).with_name("gunicorn")
    return subprocess.Popen(
        [str(exe), "--workers", "1", "--threads", "8", "--bind", f"127.0.0.1:{port}",
         "--no-control-socket", "pyhexz.training_server:create_app()"],
        env={**os.environ, **env}, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True)


def _healthy(url: str) -> bool:
    try:
        return requests.get(f"{url}/healthz", timeout=2).status_code == 200
    except requests.RequestException:  # not listening yet, or the worker is still booting
        return False


def test_kill_9_during_training_then_restart_recovers(games, tmp_path):
    name = "crash"
    token = "s3cret"
    env = {"HEXZ_MODEL_NAME": name, "HEXZ_STORAGE": str(tmp_path / "store"),
           "HEXZ_MINIBATCH_SIZE": "150", "HEXZ_BLOCKS": "2", "HEXZ_FILTERS": "16",
           "HEXZ_BATCH_SIZE": "64", "HEXZ_SAMPLES_PER_EXAMPLE": "2000",  # a long run to kill
           "HEXZ_AUTH_TOKEN": token, "HEXZ_LOG_LEVEL": "WARNING",
           "HEXZ_WAL_SEGMENT_BYTES": str(SEG)}
    auth = {"Authorization": f"Bearer {token}"}
    port, log = free_port(), tmp_path / "server.log"
    url = f"http://127.0.0.1:{port}"
    proc = _gunicorn(env, port, log)
    try:
        wait_for(lambda: _healthy(url), 120, step=0.2)
        # A second server on the same state directory refuses to start.
        second = subprocess.run(
            [sys.executable, "-m", "pyhexz", "server", "--port", str(free_port())],
            env={**os.environ, **env}, capture_output=True, text=True, timeout=60)
        assert second.returncode == 2 and "in use by another process" in second.stderr
        sent = [keyed(g, name, 0) for g in games[:3]]
        for req in sent:
            r, resp = post(url, req, headers=auth)
            assert resp.status == Resp.ACCEPTED, (r.status_code, resp.error_message)
        wait_for(lambda: status(url, token)["training"]["in_progress"], 120, step=0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        repo = CheckpointRepo(open_storage(tmp_path / "store"), name)
        assert repo.checkpoints() == [0]

        # Restart with a short run: the three requests are pending again and get trained.
        proc = _gunicorn({**env, "HEXZ_SAMPLES_PER_EXAMPLE": "0.5"}, port, log)
        wait_for(lambda: _healthy(url), 120, step=0.2)
        wait_for(lambda: status(url, token)["checkpoint"] == 1, 120)
        st = status(url, token)
        total = sum(len(g.examples) for g in sent)
        assert st["examples"]["recovered"] == total and st["examples"]["pending"] == 0
        assert repo.meta(1)["examples_trained"] == total
        assert sorted(r.SerializeToString() for r in archived(repo, 1)) == \
            sorted(r.SerializeToString() for r in sent)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(30)
    assert "Traceback" not in log.read_text()


# --------------------------------------------------------------------------
# Bad input: 4xx with a message, and the server keeps serving
# --------------------------------------------------------------------------


def _example_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_bad_requests_get_4xx_and_the_server_keeps_serving(serve, games, tmp_path):
    name, token = "guarded", "tok-123"
    s = serve(ServerConfig(model_name=name, storage=str(tmp_path / "store"), auth_token=token,
                           max_request_bytes=1 << 20, max_pending=400,
                           train=TrainConfig(trigger_examples=400, **TINY)))
    auth = {"Authorization": f"Bearer {token}"}
    good = keyed(games[0], name, 0)

    def bad(expect: int, match: str, req=good, **kw) -> None:
        r, resp = post(s.url, req, headers={**auth, **kw.pop("headers", {})}, **kw)
        assert r.status_code == expect, (r.status_code, resp.error_message)
        assert resp.status == Resp.REJECTED_OTHER, resp.error_message
        assert match in resp.error_message, resp.error_message

    # Authorization: every endpoint but /healthz.
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        r, resp = post(s.url, good, headers=headers)
        assert r.status_code == 401 and resp.status == Resp.REJECTED_OTHER
        assert "Bearer" in r.headers["WWW-Authenticate"]
        for path in ("/status", "/metrics", "/models/latest", f"/models/{name}/checkpoints/0"):
            assert requests.get(s.url + path, headers=headers, timeout=10).status_code == 401
    assert requests.get(f"{s.url}/healthz", timeout=10).json()["ok"] is True

    # Malformed bodies.
    bad(400, "not a binary AddTrainingExamplesRequest", body=b"\xff\xff\xff garbage")
    bad(400, "has no examples", req=pb.AddTrainingExamplesRequest(game_id="empty"))
    ex = good.examples[5]
    mask = np.load(io.BytesIO(ex.action_mask))
    probs = np.load(io.BytesIO(ex.move_probs))
    broken = {
        "move_probs must be non-negative and sum to 1": dict(
            move_probs=_example_bytes(probs * 0.5)),
        "move_probs puts weight on illegal moves": dict(move_probs=_example_bytes(
            ((~mask) / (~mask).sum()).astype(np.float32))),
        "board or move_probs has non-finite values": dict(board=_example_bytes(
            np.full((11, 11, 10), np.nan, np.float32))),
        "expected float32 (11, 11, 10)": dict(board=_example_bytes(
            np.zeros((11, 10, 11), np.float32))),
        "result 2.0 is not -1, 0 or 1": dict(result=2.0),
        "board and action_mask are not a Flagz position": dict(board=_example_bytes(
            np.zeros((11, 11, 10), np.float32))),
    }
    for match, fields in broken.items():
        req = keyed(games[0], name, 0)
        for k, v in fields.items():
            setattr(req.examples[5], k, v)
        bad(400, f"example 5: {match}" if "expected" not in match else match, req=req)
    bad(400, "not valid gzip", body=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    bad(400, "truncated", body=gzip.compress(good.SerializeToString())[:-20],
        headers={"Content-Encoding": "gzip"})
    bad(400, "7 bytes after the end of its compressed data",
        body=gzip.compress(good.SerializeToString()) + b"garbage",
        headers={"Content-Encoding": "gzip"})
    # A whole request of all-zero planes (the 16 examples) is refused, not trained.
    zeros = keyed(games[0], name, 0)
    del zeros.examples[16:]
    for ex in zeros.examples:
        ex.board = _example_bytes(np.zeros((11, 11, 10), np.float32))
    bad(400, "example 0: board and action_mask are not a Flagz position", req=zeros)
    bad(415, "Content-Type must be application/x-protobuf",
        headers={"Content-Type": "application/json"})
    bad(415, "Content-Encoding must be gzip", headers={"Content-Encoding": "br"})
    # Size limits: the body, and the body after gunzip (a small bomb).
    bad(413, "exceeds the limit", body=b"\0" * ((1 << 20) + 1))
    bad(413, "decompressed body exceeds", body=gzip.compress(b"\0" * (4 << 20)),
        headers={"Content-Encoding": "gzip"})
    # Examples of another model, or from the future.
    for key in (("other", 0), (name, 7)):
        r, resp = post(s.url, keyed(games[0], *key), headers=auth)
        assert (r.status_code, resp.status) == (200, Resp.REJECTED_WRONG_MODEL)
        assert (resp.latest_model.name, resp.latest_model.checkpoint) == (name, 0)
    # Model downloads with bad names or files.
    for path, code in (("/models/..%2Fx/checkpoints/0", 404), ("/models/a..b/checkpoints/0", 400),
                       (f"/models/{name}/checkpoints/99", 404),
                       (f"/models/{name}/checkpoints/0?file=../../meta.json", 400),
                       ("/models/latest?file=meta.json", 400), ("/nothing", 404)):
        r = requests.get(s.url + path, headers=auth, timeout=10)
        assert r.status_code == code, (path, r.status_code, r.text)
        assert r.json()["error"]

    # Still serving: a good request is accepted, until the pending limit is reached.
    accepted = 0
    for i in range(8):
        r, resp = post(s.url, keyed(games[i], name, 0), headers=auth, gzip_body=True)
        if resp.status != Resp.ACCEPTED:
            break
        accepted += len(games[i].examples)
    assert (r.status_code, resp.status) == (503, Resp.REJECTED_AT_CAPACITY)
    assert r.headers["Retry-After"] and "waiting for training (limit 400)" in resp.error_message
    assert 0 < accepted <= 400
    st = status(s.url, token)
    assert st["examples"]["pending"] == accepted and st["ready"]
    assert st["requests"]["REJECTED_OTHER"] >= 15 and st["requests"]["REJECTED_AT_CAPACITY"] == 1
    # Every answer to POST /training/examples, rejections included, is in the latency
    # histogram once, under its status.
    m = samples(requests.get(f"{s.url}/metrics", headers=auth, timeout=10).text)
    observed = {dict(k)["status"]: v for (n, k), v in m.items()
                if n == "pyhexz_ingest_seconds_count"}
    assert observed == {k: v for k, v in st["requests"].items() if k != "duplicate_games"}
    assert requests.get(f"{s.url}/healthz", timeout=10).status_code == 200


def test_rates_count_the_last_minute_on_their_clock():
    """Rate: events per second over its window, on an injected clock (no waiting)."""
    from pyhexz.training_server.status import Rate
    now = [1000.0]
    r = Rate(60.0, clock=lambda: now[0])
    r.add(30)
    now[0] += 30
    r.add(90)
    assert r.rate(uptime=10.0) == 12.0          # 120 in 10 s of uptime
    assert r.rate(uptime=3600.0) == 2.0         # 120 in the last minute
    now[0] += 45                                # the first event is older than a minute
    assert r.rate(uptime=3600.0) == 1.5


def test_decode_takes_other_npy_layouts_too():
    """Arrays saved in another layout (Fortran order) take decode's slow path, same values."""
    from pyhexz.game.board import Board
    from pyhexz.game.examples import make_example

    b = Board.new(0)
    for i in range(4):
        b.random_move(i)
    board, mask = b.encode()
    visits = mask.astype(np.float32) * 3
    ex = make_example(board, mask, visits, turn=b.turn, move=b.legal_moves()[0],
                      move_number=b.move, model_key=pb.ModelKey(name="m", checkpoint=0))
    fortran = pb.TrainingExample()
    fortran.CopyFrom(ex)
    fortran.board = _example_bytes(np.asfortranarray(board))
    a, b = decode([ex]), decode([fortran])
    assert np.array_equal(a.boards, b.boards) and np.array_equal(a.probs, b.probs)
    bad_bool = pb.TrainingExample()
    bad_bool.CopyFrom(ex)
    raw = bytearray(ex.action_mask)
    raw[-1] = 7
    bad_bool.action_mask = bytes(raw)
    with pytest.raises(ValueError, match="action_mask: bool bytes not 0 or 1"):
        decode([ex, bad_bool])


def test_web_ui_status_workers_and_checkpoint_matches(serve, games, tmp_path):
    """The UI on the training server: public pages, token-guarded data, connected workers, and
    the evaluator process writing each checkpoint's matches for the Elo curve."""
    name = f"ui-{uuid.uuid4().hex[:6]}"
    s = serve(ServerConfig(model_name=name, storage=str(tmp_path / "store"), auth_token="tok",
                           eval_openings=1, eval_runs=4, play_seconds=0.05,
                           train=TrainConfig(trigger_examples=50, **TINY)))
    proc, stop = s.app.config["evaluator"]
    try:
        auth = {"Authorization": "Bearer tok"}
        for g in games[:2]:
            req = keyed(g, name)
            req.execution_id = "worker-a"
            r, resp = post(s.url, req, headers=auth)
            assert resp.status == Resp.ACCEPTED, resp.error_message
        assert requests.get(f"{s.url}/ui/training", timeout=10).status_code == 200
        assert requests.get(f"{s.url}/", timeout=10, allow_redirects=False).status_code == 302
        assert requests.get(f"{s.url}/ui/api/status", timeout=10).status_code == 401
        st = wait_for(lambda: (lambda j: j if j["checkpoint"] >= 1 else None)(
            requests.get(f"{s.url}/ui/api/status", headers=auth, timeout=10).json()))
        assert st["workers"]["active"] == 1
        rows = wait_for(lambda: (lambda rows: rows if "rollout" in rows[1]["matches"] else None)(
            requests.get(f"{s.url}/ui/api/checkpoints", headers=auth, timeout=10)
            .json()["checkpoints"]), 120, step=1)
        assert rows[1]["matches"]["rollout"]["games"] == 2
        # The Training page's summary, worded on the server from the same facts.
        o = requests.get(f"{s.url}/ui/api/overview", headers=auth, timeout=10).json()
        items = {i["id"]: i for i in o["summary"]}
        assert o["model"] == name and o["state"] == "running" and o["failures"] == []
        assert items["workers"]["text"] == "1"
        assert items["games_per_second"]["note"].endswith("2 games since start")
        assert items["strength"]["text"].endswith("% score")   # checkpoint 1 is evaluated
        assert requests.get(f"{s.url}/ui/api/overview", timeout=10).status_code == 401
        opps = requests.get(f"{s.url}/ui/api/play/opponents", headers=auth, timeout=10).json()
        assert opps["opponents"][0]["id"] == "checkpoint:1"
    finally:
        stop.set()
        proc.join(10)
    assert proc.exitcode is not None


def test_a_resent_game_is_accepted_once_even_across_restarts(serve, games, tmp_path):
    """A worker resends a game whose answer it lost: ACCEPTED again, stored and trained once."""
    name = f"dup-{uuid.uuid4().hex[:6]}"
    cfg = dict(model_name=name, storage=str(tmp_path / "store"), state_dir=str(tmp_path / "st"),
               train=TrainConfig(trigger_examples=10_000, **TINY))
    s = serve(ServerConfig(**cfg))
    a, b = keyed(games[0], name, game_id="game-a"), keyed(games[1], name, game_id="game-b")
    for req in (a, a, b):
        assert post(s.url, req)[1].status == Resp.ACCEPTED
    st = status(s.url)
    assert st["examples"]["pending"] == len(a.examples) + len(b.examples)
    assert st["requests"]["duplicate_games"] == 1
    s.stop()
    # Restarted: the WAL replay remembers the untrained games.
    s = serve(ServerConfig(**cfg))
    assert post(s.url, b)[1].status == Resp.ACCEPTED
    assert status(s.url)["examples"]["pending"] == len(a.examples) + len(b.examples)
    s.stop()
    # Trained into checkpoint 1, then restarted: the checkpoint's game names remember them.
    cfg["train"] = TrainConfig(trigger_examples=50, **TINY)
    s = serve(ServerConfig(**cfg))
    wait_for(lambda: status(s.url)["checkpoint"] >= 1)
    s.stop()
    s = serve(ServerConfig(**cfg))
    assert post(s.url, a)[1].status == Resp.ACCEPTED
    st = status(s.url)
    assert st["examples"]["pending"] == 0 and st["requests"]["duplicate_games"] == 1
    repo = CheckpointRepo(open_storage(cfg["storage"]), name)
    games_trained = [r.game_id for r in archived(repo, 1)]
    assert sorted(games_trained) == ["game-a", "game-b"]


def test_game_ids_are_kept_exactly_or_refused(serve, games, tmp_path):
    """De-duplication keys on the exact game id: ids the server could only keep altered
    (characters outside [A-Za-z0-9_.-], longer than 64) are refused with 400, never ACCEPTED
    and dropped as someone else's duplicate."""
    name = f"ids-{uuid.uuid4().hex[:6]}"
    s = serve(ServerConfig(model_name=name, storage=str(tmp_path / "store"),
                           train=TrainConfig(trigger_examples=10_000, **TINY)))
    r, resp = post(s.url, keyed(games[0], name, game_id="coll_a"))
    assert resp.status == Resp.ACCEPTED
    for i, bad_id in enumerate(["coll/a", "coll a", "coll+a", "x" * 64 + "y" * 36]):
        r, resp = post(s.url, keyed(games[1 + i % 3], name, game_id=bad_id))
        assert (r.status_code, resp.status) == (400, Resp.REJECTED_OTHER), bad_id
        assert "game_id" in resp.error_message and "64" in resp.error_message
    # Ids that differ only after their 64th character would collide if truncated; the
    # longest allowed id is kept whole, and two distinct ones are two games.
    long_a, long_b = "a" * 63 + "1", "a" * 63 + "2"
    for g, gid in ((games[1], long_a), (games[2], long_b)):
        assert post(s.url, keyed(g, name, game_id=gid))[1].status == Resp.ACCEPTED
    # A game without an id is not de-duplicated: each copy is stored.
    anon = keyed(games[3], name)
    anon.game_id = ""
    for _ in range(2):
        assert post(s.url, anon)[1].status == Resp.ACCEPTED
    st = status(s.url)
    assert st["examples"]["pending"] == sum(len(g.examples) for g in games[:3]) \
        + 2 * len(games[3].examples)
    assert st["requests"].get("duplicate_games", 0) == 0


def test_a_resent_game_is_accepted_even_when_its_model_has_become_too_old(serve, games,
                                                                          tmp_path):
    """A game stored before its answer was lost is ACCEPTED when resent, even once its model
    is older than --max-model-age allows: REJECTED_WRONG_MODEL would make the worker drop a
    game the server trains (and count it as not delivered)."""
    name = f"stale-{uuid.uuid4().hex[:6]}"
    s = serve(ServerConfig(model_name=name, storage=str(tmp_path / "store"), max_model_age=0,
                           train=TrainConfig(trigger_examples=50, **TINY)))
    req = keyed(games[0], name, 0, game_id="lost-answer")
    for g in (req, keyed(games[2], name, 0, game_id="another")):   # a minibatch's worth
        assert post(s.url, g)[1].status == Resp.ACCEPTED
    wait_for(lambda: status(s.url)["checkpoint"] >= 1)
    r, resp = post(s.url, req)
    assert (r.status_code, resp.status) == (200, Resp.ACCEPTED), resp.error_message
    assert status(s.url)["requests"]["duplicate_games"] == 1
    r, resp = post(s.url, keyed(games[1], name, 0, game_id="new-and-stale"))
    assert resp.status == Resp.REJECTED_WRONG_MODEL
