"""Training examples: the `TrainingExample` protobuf and the arrays inside it.

One example is one searched position of a self-play game (FLAGZ.md section 7 for the arrays):

- board: float32 (11, 11, 10), the input planes from the view of the player to move;
- action_mask: bool (2, 11, 10), the legal moves;
- move_probs: float32 (2, 11, 10), the search's visit distribution, the policy target (never
  the network's priors: hexz once stored priors and wasted its early data);
- result: the game's outcome from the view of the player to move, -1, 0 or +1.

Arrays travel as `np.save` bytes (the hexz NUMPY encoding), so any numpy can read them. Every
reader goes through `decode`, which checks shapes, dtypes and values, because examples arrive
from other processes and machines.
"""

from __future__ import annotations

import gzip
import io
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pyhexz import hexz_pb2 as pb

BOARD_SHAPE = (11, 11, 10)
MASK_SHAPE = (2, 11, 10)


class InvalidExampleError(ValueError):
    """A training example whose arrays or labels are malformed."""


def encode_array(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def decode_array(data: bytes, shape: tuple, dtype: np.dtype, what: str) -> np.ndarray:
    try:
        a = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as e:  # np.load raises several types for garbage input
        raise InvalidExampleError(f"{what}: not an np.save array ({e})") from None
    if a.shape != shape or a.dtype != dtype:
        raise InvalidExampleError(
            f"{what}: expected {np.dtype(dtype).name} {shape}, got {a.dtype.name} {a.shape}")
    return a


@dataclass
class Arrays:
    """The decoded training arrays of a batch of examples."""

    boards: np.ndarray   # (N, 11, 11, 10) float32
    masks: np.ndarray    # (N, 2, 11, 10) bool
    probs: np.ndarray    # (N, 2, 11, 10) float32
    results: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.results)

    @staticmethod
    def concat(parts: list["Arrays"]) -> "Arrays":
        if not parts:
            return Arrays(np.zeros((0,) + BOARD_SHAPE, np.float32), np.zeros((0,) + MASK_SHAPE, bool),
                          np.zeros((0,) + MASK_SHAPE, np.float32), np.zeros(0, np.float32))
        return Arrays(*(np.concatenate([getattr(p, f) for p in parts])
                        for f in ("boards", "masks", "probs", "results")))


def make_example(board: np.ndarray, mask: np.ndarray, visits: np.ndarray, *, turn: int,
                 move: tuple[int, int, int], move_number: int, model_key: pb.ModelKey,
                 root_value: float = 0.0) -> pb.TrainingExample:
    """A TrainingExample for a searched position; `result` is filled in when the game ends."""
    total = int(visits.sum())
    probs = (visits / max(total, 1)).astype(np.float32).reshape(MASK_SHAPE)
    r, c, t = move
    return pb.TrainingExample(
        unix_micros=time.time_ns() // 1000,
        board=encode_array(board),
        action_mask=encode_array(mask),
        move_probs=encode_array(probs),
        turn=turn,
        move=pb.GameEngineMove(player_num=turn, move=move_number, row=r, col=c, cell_type=t),
        model_key=model_key,
        root_value=root_value,
        visit_count=total,
        encoding=pb.TrainingExample.NUMPY,
    )


def decode(examples: list[pb.TrainingExample]) -> Arrays:
    """Decodes and validates examples; raises InvalidExampleError naming the first bad one."""
    n = len(examples)
    out = Arrays(np.empty((n,) + BOARD_SHAPE, np.float32), np.empty((n,) + MASK_SHAPE, bool),
                 np.empty((n,) + MASK_SHAPE, np.float32), np.empty(n, np.float32))
    for i, ex in enumerate(examples):
        what = f"example {i}"
        board = decode_array(ex.board, BOARD_SHAPE, np.float32, what + " board")
        mask = decode_array(ex.action_mask, MASK_SHAPE, np.bool_, what + " action_mask")
        probs = decode_array(ex.move_probs, MASK_SHAPE, np.float32, what + " move_probs")
        if not np.isfinite(board).all() or not np.isfinite(probs).all():
            raise InvalidExampleError(f"{what}: board or move_probs has non-finite values")
        if not mask.any():
            raise InvalidExampleError(f"{what}: action_mask has no legal move")
        if (probs < 0).any() or abs(float(probs.sum()) - 1.0) > 1e-3:
            raise InvalidExampleError(
                f"{what}: move_probs must be non-negative and sum to 1 (sum {probs.sum():.4f})")
        if (probs[~mask] > 0).any():
            raise InvalidExampleError(f"{what}: move_probs puts weight on illegal moves")
        if not -1.0 <= ex.result <= 1.0:
            raise InvalidExampleError(f"{what}: result {ex.result} outside [-1, 1]")
        out.boards[i], out.masks[i], out.probs[i], out.results[i] = board, mask, probs, ex.result
    return out


# Self-play output files: one gzip-compressed AddTrainingExamplesRequest per game, so that the
# same message is stored on disk and sent to the training server.
GAME_FILE_SUFFIX = ".pb.gz"


def write_game_file(path: Path, request: pb.AddTrainingExamplesRequest) -> None:
    from pyhexz.atomicfile import atomic_write_bytes
    atomic_write_bytes(path, gzip.compress(request.SerializeToString(), compresslevel=1))


def read_game_file(path: Path) -> pb.AddTrainingExamplesRequest:
    req = pb.AddTrainingExamplesRequest()
    try:
        req.ParseFromString(gzip.decompress(Path(path).read_bytes()))
    except Exception as e:
        raise InvalidExampleError(f"{path}: not a gzip AddTrainingExamplesRequest ({e})") from None
    if not req.examples:
        raise InvalidExampleError(
            f"{path}: not a gzip AddTrainingExamplesRequest (no examples: empty or truncated file)")
    return req
