"""Games cut off when `pyhexz train` stops, kept on disk and played on at the next start.

A game under way has no result yet, so it cannot be trained on; but minutes of search went into
its moves. Rather than throwing them away at Ctrl-C, each self-play process writes its
unfinished games to DIR/models/flagz/{name}/unfinished/, one file each, atomically
(infra/atomicfile.py), and the next start hands them to the self-play processes, which play
them to the end first (selfplay.run_selfplay's `resume`).

A file holds the position (the engine's GameEngineState, FLAGZ.md) and the examples so far
(an AddTrainingExamplesRequest without results), gzipped:

    MAGIC, plies (uint32 LE), len(state) (uint32 LE), state, request

Files are taken (read, then deleted) when the job starts: a job killed before it saves them
again loses those games' moves, as it would have before, and no game can be played on twice.
"""

from __future__ import annotations

import gzip
import logging
import struct
from collections.abc import Iterable
from pathlib import Path

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board
from pyhexz.infra.atomicfile import atomic_write_bytes
from pyhexz.train.selfplay import Game

log = logging.getLogger(__name__)

MAGIC = b"pyhexz-unfinished-game-1\n"
SUFFIX = ".unfinished.gz"
_HEADER = struct.Struct("<II")


def encode(game: Game) -> bytes:
    """The game's file content."""
    state = game.board.to_proto().SerializeToString()
    request = pb.AddTrainingExamplesRequest(examples=game.examples, game_id=game.game_id)
    return gzip.compress(MAGIC + _HEADER.pack(game.plies, len(state)) + state
                         + request.SerializeToString(), compresslevel=5)


def decode(data: bytes) -> Game:
    """The game of a file's content; ValueError if it is not one."""
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError) as e:
        raise ValueError(f"not gzip: {e}") from None
    if not raw.startswith(MAGIC) or len(raw) < len(MAGIC) + _HEADER.size:
        raise ValueError("not an unfinished game")
    plies, n = _HEADER.unpack_from(raw, len(MAGIC))
    body = raw[len(MAGIC) + _HEADER.size:]
    if n > len(body):
        raise ValueError("truncated")
    try:
        board = Board.from_proto(body[:n])
        request = pb.AddTrainingExamplesRequest.FromString(body[n:])
    except Exception as e:   # a protobuf DecodeError, or a state the engine refuses
        raise ValueError(f"unreadable: {type(e).__name__}: {e}") from None
    if board.is_over:
        raise ValueError("the game is over")
    return Game(board, request.game_id, list(request.examples), plies=plies)


def save(directory: Path, games: Iterable[Game]) -> int:
    """Writes each game to its own file in `directory`; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    n = 0
    for g in games:
        atomic_write_bytes(directory / f"{g.game_id}{SUFFIX}", encode(g))
        n += 1
    return n


def take(directory: Path) -> list[bytes]:
    """The saved games' contents (checked with `decode`), each file deleted once read; a
    file that is not a game is reported and deleted, a temporary file of a write that never
    completed deleted."""
    if not directory.is_dir():
        return []
    out = []
    for f in sorted(directory.glob("*" + SUFFIX)):
        data = f.read_bytes()
        try:
            decode(data)
            out.append(data)
        except ValueError as e:
            log.warning("unfinished game skipped file=%s reason=%s", f, e)
        f.unlink()
    for f in directory.glob(".*.tmp"):
        f.unlink()
    return out
