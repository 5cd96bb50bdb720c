"""The worker's pieces with real parts: Redis (ModelBus) for models and hot-swaps, real HTTP
for uploads.

The upload tests talk to a small Flask app that answers as scripted (503, at capacity, wrong
model, ...): a double of a remote failure, to test the worker's own retry policy. Everything
that needs the training server itself runs against the real one (test_worker_e2e.py).
"""

from __future__ import annotations

import gzip
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from flask import Flask, request

from conftest import free_port, serve_app, training_server_over, wait_for
from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import make_example
from pyhexz.infra.http import Backoff, ServerClient
from pyhexz.infra.modelbus import ModelBus
from pyhexz.infra.storage import sha256
from pyhexz.nn import HexzNet, export_torchscript
from pyhexz.nn.follow import LiveModel, ModelFetcher
from pyhexz.search.driver import SearchConfig
from pyhexz.worker.config import WorkerConfig
from pyhexz.worker.uploader import Uploader

Status = pb.AddTrainingExamplesResponse.Status
FAST = Backoff(0.01, 0.05)


# --- helpers ---------------------------------------------------------------------------------

class ScriptedServer:
    """POST /training/examples answering from a script; records what arrived."""

    def __init__(self, answers: list[tuple[int, pb.AddTrainingExamplesResponse | bytes]]) -> None:
        self.answers = list(answers)
        self.received: list[tuple[pb.AddTrainingExamplesRequest, dict]] = []
        self.app = Flask("scripted")
        self.app.add_url_rule("/training/examples", "examples", self._examples, methods=["POST"])

    def _examples(self):
        assert request.headers["Content-Encoding"] == "gzip"
        req = pb.AddTrainingExamplesRequest.FromString(gzip.decompress(request.get_data()))
        self.received.append((req, dict(request.headers)))
        code, body = self.answers.pop(0) if self.answers else (200, accepted())
        return (body if isinstance(body, bytes) else body.SerializeToString(), code,
                {"Content-Type": "application/x-protobuf"})


def accepted(checkpoint: int = 0, name: str = "m") -> pb.AddTrainingExamplesResponse:
    return pb.AddTrainingExamplesResponse(
        status=Status.ACCEPTED, latest_model=pb.ModelKey(name=name, checkpoint=checkpoint))


def game(game_id: str, n: int = 3, checkpoint: int = 0) -> pb.AddTrainingExamplesRequest:
    import numpy as np

    from pyhexz.game.board import Board
    board = Board.new(1)
    planes, mask = board.encode()
    visits = mask.reshape(-1).astype(np.float32)
    key = pb.ModelKey(name="m", checkpoint=checkpoint)
    examples = [make_example(planes, mask, visits, turn=board.turn, move=(0, 0, 5), move_number=i,
                             model_key=key) for i in range(n)]
    return pb.AddTrainingExamplesRequest(examples=examples, execution_id="test", game_id=game_id)


def script_bytes(tmp_path: Path, seed: int) -> bytes:
    torch.manual_seed(seed)
    path = tmp_path / f"model-{seed}.pt"
    export_torchscript(HexzNet(1, 8), path)
    return path.read_bytes()


# --- backoff ---------------------------------------------------------------------------------

def test_backoff_is_full_jitter_under_an_exponential_cap():
    b = Backoff(base=0.5, cap=4.0)
    for attempt, bound in [(0, 0.5), (1, 1.0), (2, 2.0), (3, 4.0), (10, 4.0), (1000, 4.0)]:
        delays = [b.delay(attempt) for _ in range(400)]
        assert all(0.0 <= d <= bound for d in delays)
        # Spread over the whole range, not clustered: what keeps many workers apart.
        assert min(delays) < 0.2 * bound and max(delays) > 0.8 * bound


# --- uploads ---------------------------------------------------------------------------------

def upload_through(answers: list, game_ids: list[str], accepted_games: int, token: str = "",
                   hints: list | None = None, checkpoints: dict[str, int] | None = None,
                   ) -> tuple[ScriptedServer, Uploader]:
    """Sends the games (played with model m:0, or as `checkpoints` says) to a server answering
    `answers`, until `accepted_games` are accepted."""
    server = ScriptedServer(answers)
    on_model = (lambda key, force: hints.append((key.checkpoint, force))) if hints is not None \
        else (lambda key, force: None)
    with serve_app(server.app) as url:
        up = Uploader(ServerClient(url, token), on_model=on_model, backoff=FAST).start()
        for g in game_ids:
            assert up.put(game(g, checkpoint=(checkpoints or {}).get(g, 0)))
        wait_for(lambda: up.stats.games == accepted_games, what=f"{accepted_games} accepted games")
        assert up.close(1.0) == 0
    return server, up


def test_upload_retries_5xx_then_delivers_the_same_game_once():
    hints: list = []
    server, up = upload_through([(503, b"busy"), (500, b"<html>oops</html>"), (200, accepted(2))],
                                ["g1"], 1, token="s3cret", hints=hints)
    assert [r.game_id for r, _ in server.received] == ["g1", "g1", "g1"]
    assert all(h["Authorization"] == "Bearer s3cret" for _, h in server.received)
    assert all(len(r.examples) == 3 for r, _ in server.received)
    assert (up.stats.retries, up.stats.examples, up.stats.lost) == (2, 3, 0)
    assert hints == [(2, False)]


def test_capacity_backs_off_and_resends():
    server, up = upload_through(
        [(200, pb.AddTrainingExamplesResponse(status=Status.REJECTED_AT_CAPACITY)), (429, b""),
         (200, accepted())], ["g1", "g2"], 2)
    assert [r.game_id for r, _ in server.received] == ["g1", "g1", "g1", "g2"]
    assert up.stats.at_capacity == 2


def test_wrong_model_drops_the_game_and_forces_a_switch(caplog):
    wrong = pb.AddTrainingExamplesResponse(status=Status.REJECTED_WRONG_MODEL,
                                           latest_model=pb.ModelKey(name="m", checkpoint=7))
    hints: list = []
    with caplog.at_level(logging.INFO, "pyhexz"):
        server, up = upload_through([(200, wrong), (200, accepted(7))], ["old", "new"], 1,
                                    hints=hints, checkpoints={"new": 7})
    assert [r.game_id for r, _ in server.received] == ["old", "new"]
    assert (up.stats.wrong_model, up.stats.retries) == (1, 0)
    assert hints == [(7, True), (7, False)]
    assert "reason=wrong_model" in caplog.text and "game dropped" in caplog.text


def test_a_game_too_old_drops_the_buffered_games_as_old_unsent_and_halves_the_buffer(caplog):
    """A slow link's buffer outlasted the server's model window: the games behind the refused
    one that are no newer would be refused too, so they are not sent; the buffer halves and
    grows back by one per accepted game."""
    wrong = pb.AddTrainingExamplesResponse(status=Status.REJECTED_WRONG_MODEL,
                                           latest_model=pb.ModelKey(name="m", checkpoint=7))
    server = ScriptedServer([(200, wrong)])
    with serve_app(server.app) as url, caplog.at_level(logging.INFO, "pyhexz"):
        up = Uploader(ServerClient(url), buffer_games=8, backoff=FAST)
        for g, ckpt in [("a", 1), ("b", 1), ("c", 0), ("d", 5), ("e", 2)]:
            assert up.put(game(g, checkpoint=ckpt))   # all five buffered before the first send
        up.start()
        wait_for(lambda: up.stats.games == 2, what="the two newer games accepted")
        assert up.close(1.0) == 0
    assert [r.game_id for r, _ in server.received] == ["a", "d", "e"]
    assert (up.stats.wrong_model, up.stats.lost) == (3, 0)
    assert up.limit() == 5 // 2 + 2   # halved from the five waiting, then one per acceptance
    assert "dropped=2 games played with models up to 1 unsent; buffer limit now 2" in caplog.text


@pytest.mark.parametrize("code, body", [
    (400, pb.AddTrainingExamplesResponse(status=Status.REJECTED_OTHER,
                                         error_message="example 0: board has shape (3,)")),
    (401, b"missing bearer token"),
    (200, pb.AddTrainingExamplesResponse(status=Status.REJECTED_OTHER, error_message="nope")),
])
def test_other_refusals_drop_the_game_with_a_clear_log_line(caplog, code, body):
    with caplog.at_level(logging.INFO, "pyhexz"):
        server, up = upload_through([(code, body)], ["bad", "good"], 1)
    assert [r.game_id for r, _ in server.received] == ["bad", "good"]
    assert (up.stats.rejected, up.stats.retries) == (1, 0)
    line = next(r for r in caplog.records if "upload rejected" in r.getMessage())
    assert line.levelno == logging.ERROR and f"http={code}" in line.getMessage()
    if isinstance(body, pb.AddTrainingExamplesResponse):
        assert body.error_message in line.getMessage()


def test_server_down_then_up_resends_every_finished_game():
    port = free_port()
    up = Uploader(ServerClient(f"http://127.0.0.1:{port}", timeout=2), buffer_games=8,
                  backoff=Backoff(0.05, 0.2)).start()
    for i in range(3):
        assert up.put(game(f"g{i}"))
    wait_for(lambda: up.stats.retries >= 3, what="failed attempts while the server is down")
    assert up.stats.games == 0 and up.pending == 3
    server = ScriptedServer([])
    with serve_app(server.app, port):
        wait_for(lambda: up.stats.games == 3, what="the games after the server came up")
        assert up.close(1.0) == 0
    assert sorted(r.game_id for r, _ in server.received) == ["g0", "g1", "g2"]


def test_full_buffer_holds_self_play_back_and_stop_bounds_the_drain():
    up = Uploader(ServerClient(f"http://127.0.0.1:{free_port()}", timeout=1), buffer_games=2,
                  backoff=Backoff(0.05, 0.2)).start()
    stop = threading.Event()
    results = []

    def play() -> None:
        for i in range(4):
            results.append(up.put(game(f"g{i}"), stop.is_set))
    player = threading.Thread(target=play)
    player.start()
    # One game in flight and one in the buffer: the third put waits.
    wait_for(lambda: len(results) == 2, what="two games queued")
    assert player.is_alive() and up.pending == 2
    stop.set()
    player.join(5)
    # Stopping, with the buffer full to its size: the last two games cannot be kept.
    assert results == [True, True, False, False]
    assert up.close(deadline=time.monotonic() + 0.5) == 2
    assert up.stats.lost == 4


def test_failing_uploads_hold_self_play_to_one_game_and_stopping_still_queues():
    """Back-pressure: while uploads fail (here: at capacity) the buffer holds one game, so a
    worker never has more finished games than it can send in its grace period; a game that
    finishes once the worker stops is queued regardless and sent in the grace period."""
    capacity = pb.AddTrainingExamplesResponse(status=Status.REJECTED_AT_CAPACITY)
    server = ScriptedServer([(503, capacity)] * 5)
    with serve_app(server.app) as url:
        up = Uploader(ServerClient(url), buffer_games=8, backoff=FAST, grace_seconds=8).start()
        seen_when_queued = []

        def play() -> None:
            for i in range(3):
                assert up.put(game(f"g{i}"))
                seen_when_queued.append(len(server.received))
        player = threading.Thread(target=play)
        player.start()
        player.join(30)
        # g1 waited for g0 to get through the five refusals; then uploads are quick and the
        # limit (what fits in half the grace period) lets g2 straight in.
        assert seen_when_queued[0] == 0 and seen_when_queued[1] >= 6
        wait_for(lambda: up.stats.games == 3, what="three games accepted")
        assert up.stats.waited > 0 and up.stats.at_capacity == 5
        # The server fails again: one game in flight is the limit, but a stopping worker's
        # last games are queued anyway.
        server.answers[:] = [(503, capacity)] * 10_000
        assert up.put(game("g3"))
        wait_for(lambda: up.limit() == 1, what="the limit to drop while uploads fail")
        assert up.put(game("g4"), stopping=lambda: True)
        server.answers.clear()   # the server takes games again, in the grace period
        assert up.close(deadline=time.monotonic() + 30) == 0
    assert [r.game_id for r, _ in server.received].count("g4") == 1
    assert up.stats.games == 5 and up.stats.lost == 0


def test_bad_server_url_is_refused():
    with pytest.raises(ValueError, match="http:// or https://"):
        ServerClient("localhost:8080")


# --- models from Redis: start, hot-swap, refusals --------------------------------------------

@pytest.fixture
def name() -> str:
    return f"w-{uuid.uuid4().hex[:8]}"


def live_model(redis_url: str, name: str, **kw) -> LiveModel:
    # No training server here: the port is closed, so Redis is the only source.
    client = ServerClient(f"http://127.0.0.1:{free_port()}", timeout=1)
    return LiveModel(ModelFetcher(client, ModelBus(redis_url, name), name=name),
                     tick_seconds=0.1, backoff=Backoff(0.05, 0.3), **kw)


@contextmanager
def running(redis_url: str, name: str, tmp_path: Path, **kw):
    """Checkpoint 0 published, a LiveModel started on it; yields (bus, live), closes it after."""
    bus = ModelBus(redis_url, name)
    bus.publish(0, script_bytes(tmp_path, 0))
    live = live_model(redis_url, name, **kw)
    assert live.wait_first(threading.Event())
    live.start()
    try:
        yield bus, live
    finally:
        live.close()


def test_waits_for_the_first_model_then_hot_swaps_on_announcement(redis_url, name, tmp_path,
                                                                   caplog):
    bus = ModelBus(redis_url, name)
    live = live_model(redis_url, name)
    stop = threading.Event()
    got = []
    with caplog.at_level(logging.INFO, "pyhexz"):
        waiter = threading.Thread(
            target=lambda: got.append(live.wait_first(stop, Backoff(0.05, 0.1))), daemon=True)
        waiter.start()
        try:
            time.sleep(0.3)
            # Nothing in Redis, no server either: it keeps asking, and says why.
            assert waiter.is_alive() and "worker waiting for a model" in caplog.text
            assert "Connection refused" in caplog.text
            bus.publish(0, script_bytes(tmp_path, 0))
            waiter.join(10)
        finally:
            stop.set()
    assert got == [True] and live.current()[1] == pb.ModelKey(name=name, checkpoint=0)
    live.start()
    try:
        bus.publish(1, script_bytes(tmp_path, 1))
        wait_for(lambda: live.current()[1].checkpoint == 1, what="the swap to checkpoint 1")
        assert live.swaps == 1 and live.model.sha256 == bus.fetch(1).sha256
        # The swapped-in model evaluates (it is a working Predictor, not just a key).
        probs, values = live.current()[0](*_batch())
        assert probs.shape == (2, 220) and values.shape == (2,)
    finally:
        live.close()


def _batch():
    import numpy as np

    from pyhexz.game.board import Board
    planes, mask = Board.new(3).encode()
    return np.stack([planes, planes]), np.stack([mask, mask])


def test_corrupt_model_in_redis_is_refused_and_the_old_one_kept(redis_url, name, tmp_path, caplog):
    with running(redis_url, name, tmp_path) as (bus, live):
        with caplog.at_level(logging.INFO, "pyhexz"):
            good = script_bytes(tmp_path, 1)
            bus.publish(1, good)
            wait_for(lambda: live.current()[1].checkpoint == 1, what="checkpoint 1")
            # Checkpoint 2 arrives with bytes that do not match their SHA-256.
            bus.redis.hset(bus.checkpoint_key(2), mapping={"data": good[:-10] + b"x" * 10,
                                                           "sha256": sha256(good)})
            bus.redis.set(bus.latest_key, 2)
            bus.redis.publish(bus.channel, 2)
            wait_for(lambda: live.refused >= 1, what="the refusal")
            time.sleep(0.3)
        assert live.current()[1].checkpoint == 1 and live.model.sha256 == sha256(good)
        refusal = [r for r in caplog.records if "model refused source=redis" in r.getMessage()]
        assert refusal and refusal[0].levelno == logging.ERROR
        message = refusal[0].getMessage()
        assert "SHA-256" in message and bus.checkpoint_key(2) in message
        assert "keeping " + name + ":1" in caplog.text
        # Fixed bytes for 2 are taken at the next announcement.
        bus.publish(2, script_bytes(tmp_path, 2))
        wait_for(lambda: live.current()[1].checkpoint == 2, what="the repaired checkpoint 2")


def test_an_announcement_is_taken_even_when_a_poll_is_due(redis_url, name, tmp_path):
    # poll_seconds=0: every signal finds a poll due (as on a busy machine, where ticks come
    # late). The poll reads the pointer, which still names 1; the announced 2 must be taken
    # anyway: it used to be dropped, so a worker missed models announced at such moments.
    with running(redis_url, name, tmp_path, poll_seconds=0.0) as (bus, live):
        bus.publish(1, script_bytes(tmp_path, 1))
        wait_for(lambda: live.current()[1].checkpoint == 1, what="checkpoint 1")
        bus.redis.hset(bus.checkpoint_key(2), mapping={"data": script_bytes(tmp_path, 2),
                                                       "sha256": "0" * 64})
        bus.redis.publish(bus.channel, 2)   # announced; the pointer still says 1
        wait_for(lambda: live.refused >= 1, what="the announced checkpoint to be tried")
        assert live.current()[1].checkpoint == 1


def test_bytes_that_are_not_a_model_are_refused(redis_url, name, tmp_path, caplog):
    with running(redis_url, name, tmp_path) as (bus, live):
        with caplog.at_level(logging.INFO, "pyhexz"):
            bus.publish(1, b"PK\x03\x04 this is not a TorchScript archive")   # checksum is right
            wait_for(lambda: live.refused >= 1, what="the refusal")
        assert live.current()[1].checkpoint == 0
        assert "model switch refused to=" + name + ":1" in caplog.text


def test_upload_answers_and_the_periodic_check_find_missed_announcements(redis_url, name, tmp_path):
    with running(redis_url, name, tmp_path, poll_seconds=0.5) as (bus, live):
        # Stored without an announcement: what a worker sees when pub/sub dropped the message.
        data = script_bytes(tmp_path, 1)
        bus.redis.hset(bus.checkpoint_key(1), mapping={"data": data, "sha256": sha256(data)})
        live.offer(pb.ModelKey(name=name, checkpoint=1))   # as from an upload answer
        wait_for(lambda: live.current()[1].checkpoint == 1, what="the offered checkpoint")
        data = script_bytes(tmp_path, 2)
        bus.redis.hset(bus.checkpoint_key(2), mapping={"data": data, "sha256": sha256(data)})
        bus.redis.set(bus.latest_key, 2)
        wait_for(lambda: live.current()[1].checkpoint == 2, what="the periodic pointer check")
        # Older keys are ignored unless the server insists (REJECTED_WRONG_MODEL).
        assert live.offer(pb.ModelKey(name=name, checkpoint=1)) is False
        assert live.current()[1].checkpoint == 2
        assert live.offer(pb.ModelKey(name=name, checkpoint=1), force=True) is True
        wait_for(lambda: live.current()[1].checkpoint == 1, what="the forced switch back")


def test_redis_restart_reconnects_and_catches_up(redis_server, name, tmp_path, caplog):
    with running(redis_server.url, name, tmp_path) as (bus, live):
        with caplog.at_level(logging.INFO, "pyhexz"):
            time.sleep(0.3)
            redis_server.stop()
            wait_for(lambda: "model watch lost redis" in caplog.text, what="the lost connection")
            redis_server.start()   # empty: no persistence
            # Published while the worker may still be reconnecting: the pointer read on
            # reconnect catches it even if the announcement went unheard.
            bus.publish(1, script_bytes(tmp_path, 1))
            wait_for(lambda: live.current()[1].checkpoint == 1, what="the model after the restart")
            assert live.current()[0] is live.model.predictor


def test_redis_down_the_server_keeps_the_worker_current(redis_server, name, tmp_path,
                                                       trained_repo_factory, caplog):
    """While Redis is down the watcher follows the training server: models named in upload
    answers are loaded from it at once, and the periodic check asks it too. (It used to wait
    for Redis and fall behind until the server refused its games as too old.)"""
    repo = trained_repo_factory(name)   # checkpoints 0, 1, 2: the server's latest is 2
    bus = ModelBus(redis_server.url, name)
    bus.publish(0, repo.read_verified(0, "scriptmodule.pt"))
    with training_server_over(repo, tmp_path / "wal") as url:
        # One follows upload answers only, the other the periodic check only.
        offered, polling = (
            LiveModel(ModelFetcher(ServerClient(url, timeout=5), bus, name=name),
                      poll_seconds=poll, tick_seconds=0.1, backoff=Backoff(0.5, 1.0))
            for poll in (3600, 0.3))
        for live in (offered, polling):
            assert live.wait_first(threading.Event())
            assert live.current()[1].checkpoint == 0
        try:
            with caplog.at_level(logging.INFO, "pyhexz"):
                redis_server.stop()
                for live in (offered, polling):
                    live.start()
                wait_for(lambda: caplog.text.count("model watch lost redis") >= 2,
                         what="the watchers to notice")
                offered.offer(pb.ModelKey(name=name, checkpoint=1))   # an upload answer
                wait_for(lambda: offered.current()[1].checkpoint == 1, 120,
                         what="the offered checkpoint, from the server")
                wait_for(lambda: polling.current()[1].checkpoint == 2, 120,
                         what="the periodic check, answered by the server")
                for live in (offered, polling):
                    assert live.model.source.startswith("server ")
        finally:
            for live in (offered, polling):
                live.close()


def test_config_checks():
    with pytest.raises(ValueError, match="model name is required"):
        WorkerConfig(server_url="http://x", redis_url="redis://x")
    with pytest.raises(ValueError, match="invalid model name"):
        WorkerConfig(server_url="http://x", model_name="../etc")
    with pytest.raises(ValueError, match="grace period"):
        WorkerConfig(server_url="http://x", max_seconds=5, grace_seconds=8)


# --- the end of the time budget --------------------------------------------------------------

def test_the_budget_winds_down_so_games_under_way_finish(redis_url, name, tmp_path, caplog,
                                                        monkeypatch):
    """Near the end of --max-seconds no new game starts; those under way finish and are sent,
    so the worker ends early with nothing dropped instead of cutting games off at the deadline.

    When the wind-down begins is wind_down_before's business (tested with a fixed clock in
    test_selfplay.py); here it is made to begin at the first finished game, with a deadline
    no game comes near, so that what is checked (the budget reaches self-play, the games under
    way end and are sent, the worker stops early) does not depend on the machine's speed."""
    from pyhexz.train import selfplay
    from pyhexz.worker.job import run_worker

    monkeypatch.setattr(selfplay, "WIND_DOWN_GAMES", 1e9)

    ModelBus(redis_url, name).publish(0, script_bytes(tmp_path, 0))
    server = ScriptedServer([])
    with serve_app(server.app) as url, caplog.at_level(logging.INFO, "pyhexz"):
        cfg = WorkerConfig(server_url=url, redis_url=redis_url, model_name=name,
                           max_seconds=3600, grace_seconds=1, parallel_games=4,
                           search=SearchConfig(runs_per_move=32), seed=0)
        stats = run_worker(cfg)
    assert caplog.text.count("worker winding down") == 1
    assert "reason=time_budget" not in caplog.text
    # The four games started together; none after the first one ended.
    assert stats.games == 4 and stats.cut_off == 0
    assert len(server.received) == 4 and stats.upload.lost == 0


def test_the_budget_counts_from_the_given_start(caplog):
    """The CLI passes its own start time: seconds spent importing torch count against the
    budget, so a budget already spent ends the worker at once. (Counted from its own start,
    this worker, with no server to give it a model, would wait an hour.)"""
    from pyhexz.worker.job import run_worker

    cfg = WorkerConfig(server_url=f"http://127.0.0.1:{free_port()}", max_seconds=3600,
                       grace_seconds=1, started=time.monotonic() - 3600)
    with caplog.at_level(logging.INFO, "pyhexz"):
        stats = run_worker(cfg)
    assert stats.games == 0
    assert "worker stopping reason=time_budget max_seconds=3600" in caplog.text
    assert "worker stopped before any model arrived" in caplog.text


def test_a_stop_in_the_middle_of_a_move_is_kept_and_the_games_cut_off_are_counted(
        redis_url, name, tmp_path, caplog, monkeypatch):
    """A move of a million simulations never ends by itself: the worker stops because
    self-play checks the stop between network batches, and its done line counts the games
    it cut off."""
    from pyhexz.worker import job
    from pyhexz.worker.job import StopSignal, run_worker

    searching = threading.Event()
    real = job.run_selfplay

    def spy(model, *args, **kwargs):
        def source():
            evaluate, key = model()

            def noted(planes, masks):
                searching.set()
                return evaluate(planes, masks)
            return noted, key
        return real(source, *args, **kwargs)
    monkeypatch.setattr(job, "run_selfplay", spy)

    ModelBus(redis_url, name).publish(0, script_bytes(tmp_path, 0))
    stop = StopSignal()
    stopper = threading.Thread(target=lambda: searching.wait(120) and stop.set(), daemon=True)
    stopper.start()
    with serve_app(ScriptedServer([]).app) as url, caplog.at_level(logging.INFO, "pyhexz"):
        cfg = WorkerConfig(server_url=url, redis_url=redis_url, model_name=name,
                           grace_seconds=1, parallel_games=3,
                           search=SearchConfig(runs_per_move=1_000_000), seed=0)
        stats = run_worker(cfg, stop)
    stopper.join(5)
    assert searching.is_set() and stats.games == 0 and stats.cut_off == 3
    assert "worker done " in caplog.text and " games=0 cut_off=3 " in caplog.text


def test_stop_under_back_pressure_sends_every_finished_game_and_loads_no_model(
        redis_url, name, tmp_path, caplog):
    """The issue's scenario: the server answers at capacity, the worker gets SIGTERM. Self-play
    has held back (back-pressure), no model is loaded after the signal although the answers in
    the grace period name a newer one, and every finished game is sent."""
    from pyhexz.worker.job import StopSignal, run_worker

    bus = ModelBus(redis_url, name)
    bus.publish(0, script_bytes(tmp_path, 0))
    newer = script_bytes(tmp_path, 1)
    bus.redis.hset(bus.checkpoint_key(1), mapping={"data": newer, "sha256": sha256(newer)})
    stop = StopSignal()
    accepted_ids: list[str] = []
    app = Flask("capacity-then-accept")

    @app.post("/training/examples")
    def examples():
        req = pb.AddTrainingExamplesRequest.FromString(gzip.decompress(request.get_data()))
        if not stop.is_set():
            answer, code = pb.AddTrainingExamplesResponse(
                status=Status.REJECTED_AT_CAPACITY,
                latest_model=pb.ModelKey(name=name, checkpoint=0)), 503
        else:   # the grace period: accepted, and the answer names checkpoint 1
            accepted_ids.append(req.game_id)
            answer, code = accepted(1, name), 200
        return answer.SerializeToString(), code, {"Content-Type": "application/x-protobuf"}

    with serve_app(app) as url, caplog.at_level(logging.INFO, "pyhexz"):
        cfg = WorkerConfig(server_url=url, redis_url=redis_url, model_name=name,
                           grace_seconds=8, parallel_games=4,
                           search=SearchConfig(runs_per_move=4), seed=1)
        stopper = threading.Thread(target=lambda: (
            wait_for(lambda: "upload buffer at its limit" in caplog.text, 120,
                     what="self-play to wait for the server"), stop.set()), daemon=True)
        stopper.start()
        stats = run_worker(cfg, stop)
        stopper.join(5)
    assert stats.games >= 1 and stats.upload.lost == 0
    assert stats.upload.games == stats.games == len(accepted_ids)
    assert f"worker model={name}:1" not in caplog.text   # no load in the grace period


# --- a refused token ------------------------------------------------------------------------

@pytest.mark.parametrize("code", [401, 403])
def test_an_upload_refused_for_the_token_is_told_to_the_worker(code):
    server = ScriptedServer([(code, b"missing or wrong bearer token")])
    told: list[str] = []
    with serve_app(server.app) as url:
        up = Uploader(ServerClient(url, "wrong"), backoff=FAST, on_token_refused=told.append)
        up.start()
        assert up.put(game("g1"))
        wait_for(lambda: told, what="the refusal")
        up.close(1.0)
    assert up.stats.rejected == 1 and f"HTTP {code}" in told[0] and "wrong" not in told[0]


def test_with_redis_a_refused_token_stops_the_worker_at_its_first_upload(redis_url, name,
                                                                         tmp_path):
    """With Redis the models come without the token, so the first upload is where a wrong
    token shows: the worker stops there (TokenRefused) instead of playing on for nothing."""
    from pyhexz.nn.follow import TokenRefused
    from pyhexz.worker.job import run_worker

    ModelBus(redis_url, name).publish(0, script_bytes(tmp_path, 0))
    server = ScriptedServer([(401, b"missing or wrong bearer token")] * 1000)
    with serve_app(server.app) as url:
        cfg = WorkerConfig(server_url=url, redis_url=redis_url, model_name=name, max_seconds=3600,
                           grace_seconds=1, parallel_games=1, auth_token="wrong",
                           search=SearchConfig(runs_per_move=2), seed=0)
        with pytest.raises(TokenRefused, match="HTTP 401"):
            run_worker(cfg)
    assert server.received   # a game was sent, and refused


@pytest.fixture
def conversions(monkeypatch) -> list[int]:
    """Counts the ONNX conversions of models (a model that came with its model.onnx needs
    none)."""
    pytest.importorskip("onnxruntime")
    from pyhexz.nn import onnxfile
    calls: list[int] = []
    real = onnxfile.export_onnx

    def counted(model):
        calls.append(1)
        return real(model)
    monkeypatch.setattr(onnxfile, "export_onnx", counted)
    return calls


def test_a_model_with_its_onnx_in_redis_is_not_converted(redis_url, name, tmp_path,
                                                         conversions):
    from pyhexz.nn import load_model_bytes
    from pyhexz.nn.onnxfile import export_onnx
    bus = ModelBus(redis_url, name)
    data = script_bytes(tmp_path, 3)
    bus.publish(1, data, onnx=export_onnx(load_model_bytes(data, "cpu")))
    bus.publish(2, script_bytes(tmp_path, 4))   # published without model.onnx
    fetcher = ModelFetcher(None, bus, name=name, backend="onnx")
    conversions.clear()
    with_onnx = fetcher.load(pb.ModelKey(name=name, checkpoint=1))
    assert with_onnx.predictor.backend.name == "onnx" and conversions == []
    without = fetcher.load(pb.ModelKey(name=name, checkpoint=2))
    assert without.predictor.backend.name == "onnx" and conversions == [1]


def test_a_model_from_the_server_comes_with_its_onnx(name, tmp_path, trained_repo_factory,
                                                      conversions):
    repo = trained_repo_factory(name)
    assert "model.onnx" in repo.meta(2)["sha256"]   # the trainer writes one (the onnx extra)
    with training_server_over(repo, tmp_path / "wal") as url:
        client = ServerClient(url, timeout=30)
        r = client.request("GET", f"/models/{name}/checkpoints/2", params={"file": "model.onnx"})
        assert r.status_code == 200 and r.content == repo.read_verified(2, "model.onnx")
        conversions.clear()
        loaded = ModelFetcher(client, None, name=name, backend="onnx").load(
            pb.ModelKey(name=name, checkpoint=2))
        assert loaded.predictor.backend.name == "onnx" and conversions == []
        # torch has no use for it: not even asked for.
        torch_model = ModelFetcher(client, None, name=name).load(
            pb.ModelKey(name=name, checkpoint=2))
        assert torch_model.predictor.backend.name == "torch"
        r = client.request("GET", f"/models/{name}/checkpoints/2", params={"file": "x.bin"})
        assert r.status_code == 400 and "model.onnx" in r.text
