"""The stream of finished games to the training server (the HTTP client is pyhexz.infra.http).

A worker sends each finished game as one gzip-compressed AddTrainingExamplesRequest
(POST /training/examples) from a background thread, so self-play never waits for the network.
The buffer between them is bounded: a worker that cannot reach the server stops playing when
it is full (backpressure) instead of piling up games without limit.

Retry policy (docs/worker.md):

    connection error, timeout, HTTP 5xx,   retry the same game: exponential backoff with full
    HTTP 408, an answer that is not a      jitter, for as long as the worker runs
    response
    REJECTED_AT_CAPACITY or HTTP 429       back off the same way, then retry the same game
    REJECTED_WRONG_MODEL                   drop the game (the server no longer takes examples
                                           from its model) and switch to the model it names;
                                           a game too old: drop the buffered games no newer
                                           too, unsent, and halve the buffer
    REJECTED_OTHER, any other 4xx          drop the game with a log line: resending the same
                                           bytes cannot help
    ACCEPTED                               done; the answer's latest model may start a switch

So a server restart loses no finished game: what it did not acknowledge is sent again.

Back-pressure: a game that finishes while the buffer holds as many games as can be sent in
half the grace period (from the latency of recent accepted uploads, or the time the upload
under way has taken, if longer) waits in self-play until there is room; while an upload is
failing (server down, at capacity) that is one game. Self-play
that outruns what the server takes is wasted work, and whatever sits in the buffer at SIGTERM
must go out within the grace period. A buffer that drains slower than the server makes
checkpoints would hold only stale games: each game refused as too old halves the buffer's
limit, each accepted one adds one back. When the worker stops, the games still to come are taken
regardless and everything is sent until a deadline: the signal's time plus the grace period.
"""

from __future__ import annotations

import collections
import gzip
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests
from google.protobuf.message import DecodeError

from pyhexz import hexz_pb2 as pb
from pyhexz.infra.http import Backoff, ServerClient, short_error

log = logging.getLogger(__name__)

Status = pb.AddTrainingExamplesResponse.Status
# Called with the server's latest model from every answer; `force` when the server refused a
# game for its model, so the worker must switch even to an older or renamed one.
ModelHint = Callable[[pb.ModelKey, bool], object]   # what it returns is not used


@dataclass
class UploadStats:
    games: int = 0           # accepted by the server
    examples: int = 0
    retries: int = 0         # attempts that failed and were retried (capacity included)
    at_capacity: int = 0
    wrong_model: int = 0     # games dropped: played with a model the server no longer takes
    rejected: int = 0        # games dropped: refused for another reason
    lost: int = 0            # games not sent when the worker stopped
    waited: float = 0.0      # seconds self-play waited for room in the buffer (back-pressure)


@dataclass
class _Game:
    game_id: str
    examples: int
    body: bytes
    oldest_model: int   # the oldest checkpoint that played a move of it (the server's age check)


# What one attempt came to.
_DONE, _RETRY, _CAPACITY, _DROP = "done", "retry", "capacity", "drop"


class Uploader:
    """Sends finished games from a bounded buffer, in order, each until it lands or is refused."""

    # While closing, retries come this fast: the grace period is short and every game counts.
    CLOSING_BACKOFF = Backoff(0.1, 1.0)
    LATENCY_WEIGHT = 0.3   # of the newest accepted upload in the running latency estimate

    def __init__(self, client: ServerClient, *, buffer_games: int = 64,
                 on_model: ModelHint = lambda key, force: None,
                 on_token_refused: Callable[[str], object] = lambda message: None,
                 backoff: Backoff | None = None, grace_seconds: float | None = None) -> None:
        if buffer_games < 1:
            raise ValueError(f"buffer_games must be >= 1, got {buffer_games}")
        self.client = client
        self.on_model = on_model
        # HTTP 401/403: no upload will land until the token is fixed (the worker stops).
        self.on_token_refused = on_token_refused
        self.backoff = backoff if backoff is not None else Backoff()
        self.buffer_games = buffer_games
        # The buffer must be sendable within half of it (None: no time-based limit, only the
        # buffer size).
        self.grace_seconds = grace_seconds
        self.stats = UploadStats()
        self._games: collections.deque[_Game] = collections.deque()
        self._cv = threading.Condition()
        self._in_flight = 0
        self._latency: float | None = None    # running estimate of an accepted upload's time
        self._failing = False                 # the last attempt failed and is being retried
        self._attempt_started: float | None = None   # when the attempt under way began
        self._deadline: float | None = None   # set by close(): give up after this
        # Halved when a game waited in the buffer until the server no longer took its model,
        # one more per accepted game: a buffer that drains slower than the server makes
        # checkpoints must be shorter, or every game in it goes stale (additive increase,
        # multiplicative decrease, as TCP finds a link's window).
        self._stale_cap = buffer_games
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="uploader", daemon=True)

    def start(self) -> Uploader:
        self._thread.start()
        return self

    @property
    def pending(self) -> int:
        """Games buffered or being sent."""
        with self._cv:
            return len(self._games) + self._in_flight

    def limit(self) -> int:
        """How many games (buffered or in flight) self-play may have waiting for the server."""
        if self.grace_seconds is None:
            return self._stale_cap
        if self._failing or self._latency is None:
            return 1   # nothing is getting through, or nothing is known yet
        # An upload under way for longer than the recent ones took (a partition: no error
        # until its timeout) counts as what an upload takes now.
        now = 0.0 if self._attempt_started is None else time.monotonic() - self._attempt_started
        fits = int(0.5 * self.grace_seconds / max(self._latency, now, 1e-3))
        return max(1, min(self._stale_cap, fits))

    def put(self, request: pb.AddTrainingExamplesRequest,
            stopping: Callable[[], bool] = lambda: False) -> bool:
        """Queues a finished game; waits while the buffer is at its limit, unless `stopping()`
        (then the game is queued anyway, to be sent in the grace period).

        Returns False if the game could not be queued: the worker is stopping and the buffer
        is full to its size.
        """
        # Serialised and compressed here, once, so a retry resends the same bytes.
        game = _Game(request.game_id, len(request.examples),
                     gzip.compress(request.SerializeToString(), compresslevel=1),
                     min((ex.model_key.checkpoint for ex in request.examples), default=-1))
        waited_since = None
        with self._cv:
            while len(self._games) + self._in_flight >= self.limit():
                if stopping():
                    if len(self._games) + self._in_flight >= self.buffer_games:
                        self.stats.lost += 1
                        log.warning("upload buffer full while stopping; game %s not sent",
                                    game.game_id)
                        return False
                    break
                if waited_since is None:
                    waited_since = time.monotonic()
                    log.info("upload buffer at its limit games=%d failing=%s; self-play waits "
                             "for the server", self.limit(), self._failing)
                self._cv.wait(0.5)
            if waited_since is not None:
                self.stats.waited += time.monotonic() - waited_since
            self._games.append(game)
            self._cv.notify_all()
        return True

    def close(self, grace_seconds: float | None = None, *, deadline: float | None = None) -> int:
        """Sends what is buffered until `deadline` (a time.monotonic() value; or now +
        `grace_seconds`); returns the games left unsent."""
        if deadline is None:
            deadline = time.monotonic() + (grace_seconds or 0.0)
        self._deadline = deadline
        self._closing.set()
        with self._cv:
            self._cv.notify_all()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()))
        left = self.pending
        self.stats.lost += left
        if left:
            log.warning("upload stopped with games unsent=%d (deadline reached)", left)
        return left

    def _remaining(self) -> float | None:
        return None if self._deadline is None else self._deadline - time.monotonic()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._games:
                    if self._closing.is_set():
                        return
                    self._cv.wait(0.2)
                game = self._games.popleft()
                self._in_flight = 1
            done = self._send(game)
            with self._cv:
                if not done:   # the deadline came first; the game still counts as pending
                    self._games.appendleft(game)
                self._in_flight = 0
                self._cv.notify_all()
            if not done:
                return

    def _send(self, game: _Game) -> bool:
        """Sends one game until it is done or dropped; False if the deadline came first."""
        attempt = closing_attempt = 0
        while True:
            remaining = self._remaining()
            if remaining is not None and remaining <= 0:
                return False
            started = self._attempt_started = time.monotonic()
            outcome = self._attempt(game, None if remaining is None else max(0.1, remaining))
            with self._cv:
                self._attempt_started = None
                self._failing = outcome not in (_DONE, _DROP)
                if outcome == _DONE:
                    took = time.monotonic() - started
                    w = self.LATENCY_WEIGHT
                    self._latency = took if self._latency is None else \
                        (1 - w) * self._latency + w * took
                self._cv.notify_all()
            if outcome in (_DONE, _DROP):
                return True
            self.stats.retries += 1
            if self._closing.is_set():
                delay = self.CLOSING_BACKOFF.delay(closing_attempt)
                closing_attempt += 1
                remaining = self._remaining()
                time.sleep(min(delay, max(0.0, remaining)) if remaining is not None else delay)
            else:
                # close() wakes it: the grace period starts with a prompt retry.
                self._closing.wait(self.backoff.delay(attempt))
                attempt += 1

    def _attempt(self, game: _Game, timeout: float | None) -> str:
        try:
            return self._post(game, timeout)
        except requests.RequestException as e:
            log.info("upload failed game=%s error=%s; will retry", game.game_id, short_error(e))
        except Exception:
            # A bug here must not stop the stream for good: log it and keep retrying.
            log.exception("upload failed game=%s; will retry", game.game_id)
        return _RETRY

    def _post(self, game: _Game, timeout: float | None) -> str:
        r = self.client.post_examples(game.body, timeout=timeout)
        answer = _parse_answer(r.content)
        status = answer.status if answer is not None else Status.STATUS_UNSPECIFIED
        if r.status_code == 429 or status == Status.REJECTED_AT_CAPACITY:
            self.stats.at_capacity += 1
            log.info("upload server at capacity game=%s; backing off", game.game_id)
            return _CAPACITY
        if r.status_code >= 500 or r.status_code == 408:   # 408: it came too slowly
            log.info("upload failed game=%s http=%d; will retry", game.game_id, r.status_code)
            return _RETRY
        if r.status_code >= 400 or status in (Status.REJECTED_OTHER, Status.REJECTED_WRONG_MODEL):
            return self._refused(game, r.status_code, answer)
        if status != Status.ACCEPTED:
            log.warning("upload got no valid answer game=%s http=%d; will retry",
                        game.game_id, r.status_code)
            return _RETRY
        self.stats.games += 1
        self.stats.examples += game.examples
        with self._cv:
            self._stale_cap = min(self.buffer_games, self._stale_cap + 1)
        log.debug("upload accepted game=%s examples=%d", game.game_id, game.examples)
        if answer is not None and answer.HasField("latest_model"):
            self.on_model(answer.latest_model, False)
        return _DONE

    def _refused(self, game: _Game, http: int,
                 answer: pb.AddTrainingExamplesResponse | None) -> str:
        if answer is not None and answer.status == Status.REJECTED_WRONG_MODEL:
            self.stats.wrong_model += 1
            latest = answer.latest_model
            _log_wrong_model(game, latest, "game dropped, switching model")
            if answer.HasField("latest_model"):
                if game.oldest_model <= latest.checkpoint:
                    self._drop_as_old_as(game, latest)
                self.on_model(latest, True)
            return _DROP
        self.stats.rejected += 1
        reason = (answer.error_message if answer is not None and answer.error_message
                  else "(no message)")
        log.error("upload rejected game=%s examples=%d http=%d reason=%r; game dropped "
                  "(resending it cannot help)", game.game_id, game.examples, http, reason[:300])
        if http in (401, 403):
            self.on_token_refused(f"POST examples: HTTP {http}: the server refused the auth "
                                  f"token (--auth-token, HEXZ_AUTH_TOKEN)")
        return _DROP

    def _drop_as_old_as(self, refused: _Game, latest: pb.ModelKey) -> None:
        """A game refused as too old: the buffered games played with a model no newer would be
        refused too, each after an upload the link can ill afford; they go now, and the buffer
        is halved."""
        with self._cv:
            backlog = len(self._games) + 1
            stale = [g for g in self._games if g.oldest_model <= refused.oldest_model]
            if stale:
                self._games = collections.deque(
                    g for g in self._games if g.oldest_model > refused.oldest_model)
                self.stats.wrong_model += len(stale)
            self._stale_cap = max(1, backlog // 2)
            self._cv.notify_all()
        for g in stale:   # each one's final answer, as if it had been sent and refused
            _log_wrong_model(g, latest, f"game dropped unsent (no newer than game "
                                        f"{refused.game_id})")
        log.warning("upload buffer too long for the server's checkpoints: dropped=%d games "
                    "played with models up to %d unsent; buffer limit now %d games",
                    len(stale), refused.oldest_model, self._stale_cap)


def _log_wrong_model(game: _Game, latest: pb.ModelKey, what: str) -> None:
    """A game's final answer REJECTED_WRONG_MODEL, in the one format log readers count."""
    log.warning("upload rejected game=%s examples=%d reason=wrong_model game_model=%d "
                "server_model=%s:%d; %s", game.game_id, game.examples, game.oldest_model,
                latest.name, latest.checkpoint, what)


def _parse_answer(body: bytes) -> pb.AddTrainingExamplesResponse | None:
    """The server's answer, or None when the body is not one (an HTML error page, say)."""
    try:
        answer = pb.AddTrainingExamplesResponse.FromString(body)
    except DecodeError:
        return None
    return answer if answer.status != Status.STATUS_UNSPECIFIED else None
