"""Ingestion: a POST /training/examples body in, an answer out, ACCEPTED only once it is durable.

    parse + validate -> model key check -> dedupe (game-id ledger) -> capacity
    -> WAL append (group commit, fdatasync) -> ACCEPTED

The `ExampleLedger` is the one account of examples between a worker and a checkpoint: how many
are pending (accepted or recovered, not yet in a checkpoint), and which games are already held,
so that a game resent after a lost answer is acknowledged without being stored twice. The
trainer thread credits it (trained, recovered) and fills its game ids at start.
"""

from __future__ import annotations

import collections
import logging
import re
import threading
from typing import Protocol

from google.protobuf.message import DecodeError

from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import Arrays, InvalidExampleError, decode
from pyhexz.infra.httpbody import BadRequest, gunzip
from pyhexz.training_server.config import ServerConfig
from pyhexz.training_server.status import ActiveWorkers, Rate
from pyhexz.training_server.wal import WALError, WriteAheadLog

log = logging.getLogger(__name__)

Status = pb.AddTrainingExamplesResponse

# WAL payload: one byte telling how the request body is stored, then the body as received
# (a gzip body is kept compressed: less disk, and no CPU spent recompressing).
_RAW, _GZIP = b"\x00", b"\x01"
# A game id is kept verbatim (the ledger, archive entry names, meta.json), so only ids that
# can be kept verbatim are taken: a worker's is 32 hex digits. Sanitising or truncating ids
# instead made distinct games look like one and dropped all but the first.
MAX_GAME_ID = 64
_GAME_ID = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_GAME_ID}}}")

GAMES_REMEMBERED = 200_000   # game ids kept for recognising resent games


def check_game_id(game_id: str) -> None:
    """Raises BadRequest for a game id the server cannot keep exactly ('' is fine: no id)."""
    if game_id and not _GAME_ID.fullmatch(game_id):
        raise BadRequest(
            f"game_id {game_id[:80]!r} (length {len(game_id)}) cannot be kept as it is: use 1 to "
            f"{MAX_GAME_ID} letters, digits, '_', '-' or '.', or none (no de-duplication)")


def game_key(req: pb.AddTrainingExamplesRequest) -> str:
    """The exact id a resent game is recognised by ('' if it has none, or one from before ids
    were checked that the server cannot keep: such games are not de-duplicated)."""
    return req.game_id if _GAME_ID.fullmatch(req.game_id) else ""


def game_name(position: int, req: pb.AddTrainingExamplesRequest) -> str:
    """The archive entry name of a request: its WAL position (unique), then `-` and its game
    id if it has one (the id is recalled from the name after a restart)."""
    key = game_key(req)
    return f"{position:016x}-{key}" if key else f"{position:016x}"


def parse_request(data: bytes) -> tuple[pb.AddTrainingExamplesRequest, Arrays]:
    """The request and its decoded, validated examples; BadRequest says what is wrong."""
    try:
        req = pb.AddTrainingExamplesRequest.FromString(data)
    except DecodeError as e:
        raise BadRequest(f"body is not a binary AddTrainingExamplesRequest ({e})") from None
    if not req.examples:
        raise BadRequest("AddTrainingExamplesRequest has no examples")
    check_game_id(req.game_id)
    try:
        arrays = decode(list(req.examples))
    except InvalidExampleError as e:
        raise BadRequest(f"invalid training example: {e}") from None
    return req, arrays


def decode_payload(payload: bytes, limit: int) -> pb.AddTrainingExamplesRequest:
    """The request a WAL record holds (see _RAW/_GZIP)."""
    body = payload[1:]
    if payload[:1] == _GZIP:
        body = gunzip(body, limit)
    return pb.AddTrainingExamplesRequest.FromString(body)


class ExampleLedger:
    """Pending examples and known games, under one lock: a game's check and its capacity
    reservation are one step, so two requests for one game cannot both be stored."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.pending = 0              # accepted (or recovered), not yet in a checkpoint
        self.received = 0             # examples accepted since start
        self.recovered = 0            # examples replayed from the WAL at start
        self.rate = Rate()            # examples accepted per second
        self.games_received = 0       # games accepted since start (one upload is one game)
        self.game_rate = Rate()
        # game_id -> True once durable (False while its WAL write is in flight): a worker that
        # resends a game whose answer it never got (server crash, timeout) is answered
        # ACCEPTED without storing it again, so no game is trained twice.
        self._games: collections.OrderedDict[str, bool] = collections.OrderedDict()

    def reserve(self, game: str, n: int, limit: int) -> tuple[bool | None, bool]:
        """(what the ledger knew of `game`, whether the pending limit refused it). Unknown and
        not full: `n` examples are reserved and the game marked in flight."""
        with self.lock:
            seen = self._games.get(game) if game else None
            full = seen is None and self.pending + n > limit
            if seen is None and not full:
                self.pending += n
                if game:
                    self._remember(game, durable=False)
        return seen, full

    def known(self, game: str) -> bool | None:
        """True if `game` is stored, False while its write is in flight, None if unknown."""
        with self.lock:
            return self._games.get(game) if game else None

    def cancel(self, game: str, n: int) -> None:
        """A reservation whose WAL write failed: nothing was stored."""
        with self.lock:
            self.pending -= n
            self._games.pop(game, None)

    def stored(self, game: str, n: int) -> None:
        """A reservation is durable in the WAL."""
        with self.lock:
            if game:
                self._games[game] = True
            self.received += n
            self.games_received += 1
        self.rate.add(n)
        self.game_rate.add(1)

    def recovered_examples(self, n: int) -> None:
        """Examples replayed from the WAL at start: pending again."""
        with self.lock:
            self.pending += n
            self.recovered = n

    def trained(self, n: int) -> None:
        """`n` pending examples are in a published checkpoint."""
        with self.lock:
            self.pending -= n

    def remember_durable(self, game: str) -> None:
        """A game found in the WAL at start."""
        with self.lock:
            self._remember(game, durable=True)

    def recall_trained(self, game: str) -> None:
        """A game of a checkpoint, read at start: older than anything remembered so far."""
        with self.lock:
            self._games[game] = True
            self._games.move_to_end(game, last=False)

    def _remember(self, game: str, durable: bool) -> None:
        """Records a game id (caller holds the lock); the oldest are forgotten beyond a cap,
        which only has to outlast a worker's retries (minutes)."""
        self._games[game] = durable
        self._games.move_to_end(game)
        while len(self._games) > GAMES_REMEMBERED:
            self._games.popitem(last=False)


class ModelGate(Protocol):
    """What ingestion needs of the trainer: whether it is up, and which model is current."""

    latest: int | None
    failure: str | None

    def wait_ready(self, timeout: float | None = None) -> bool: ...


class Ingestion:
    """Handles POST /training/examples bodies and counts the answers by status."""

    def __init__(self, config: ServerConfig, wal: WriteAheadLog, ledger: ExampleLedger,
                 gate: ModelGate) -> None:
        self.config = config
        self.wal = wal
        self.ledger = ledger
        self.gate = gate
        self.requests: collections.Counter = collections.Counter()
        self.workers = ActiveWorkers()
        self._lock = threading.Lock()

    def ingest(self, body: bytes, gzipped: bool) -> tuple[int, pb.AddTrainingExamplesResponse]:
        """Handles a POST /training/examples body: (HTTP status, response message).

        Raises BadRequest for malformed input. ACCEPTED is returned only once the request is
        durable in the WAL.
        """
        cfg, gate = self.config, self.gate
        data = gunzip(body, cfg.max_request_bytes) if gzipped else body
        req, arrays = parse_request(data)
        ready = gate.wait_ready(cfg.startup_wait_seconds)
        latest = gate.latest   # the trainer sets it before it reports ready
        if not ready or gate.failure or latest is None:
            return 503, self.answer(Status.REJECTED_AT_CAPACITY,
                                    gate.failure or "server is starting; retry shortly")
        game = game_key(req)
        if self.ledger.known(game):
            # Stored already (its answer was lost): ACCEPTED whatever its model's age now, or
            # the worker would drop a game the server trains.
            self._count("duplicate_games")
            return 200, self.answer(Status.ACCEPTED)
        oldest = latest - cfg.max_model_age
        for ex in req.examples:
            key = ex.model_key
            if key.name != cfg.model_name or not oldest <= key.checkpoint <= latest:
                return 200, self.answer(
                    Status.REJECTED_WRONG_MODEL,
                    f"example from model {key.name}:{key.checkpoint}; this server accepts "
                    f"{cfg.model_name}:{max(0, oldest)}..{latest}")
        n = len(arrays)
        assert cfg.max_pending is not None   # ServerConfig.__post_init__ fills in the default
        seen, full = self.ledger.reserve(game, n, cfg.max_pending)
        if seen:
            self._count("duplicate_games")
            return 200, self.answer(Status.ACCEPTED)
        if seen is False:
            return 503, self.answer(Status.REJECTED_AT_CAPACITY,
                                    f"game {game} is being stored by another request; retry")
        if full:
            return 503, self.answer(
                Status.REJECTED_AT_CAPACITY,
                f"{self.ledger.pending} examples are waiting for training "
                f"(limit {cfg.max_pending})")
        try:
            self.wal.append((_GZIP if gzipped else _RAW, body), (req, arrays))
        except (WALError, OSError) as e:
            self.ledger.cancel(game, n)
            log.error("wal append failed: %s", e)
            return 503, self.answer(Status.REJECTED_OTHER, f"could not store the examples: {e}")
        self.ledger.stored(game, n)
        if req.execution_id:
            self.workers.seen(req.execution_id)
        return 200, self.answer(Status.ACCEPTED)

    def answer(self, status: pb.AddTrainingExamplesResponse.Status,
               error: str = "") -> pb.AddTrainingExamplesResponse:
        """The response message (naming the latest model), counted by its status."""
        self._count(Status.Status.Name(status))
        resp = pb.AddTrainingExamplesResponse(status=status, error_message=error)
        latest = self.gate.latest
        if latest is not None:
            resp.latest_model.name = self.config.model_name
            resp.latest_model.checkpoint = latest
        return resp

    def _count(self, what: str) -> None:
        with self._lock:
            self.requests[what] += 1

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.requests)
