"""Training examples: the `TrainingExample` protobuf and the arrays inside it.

One example is one searched position of a self-play game (FLAGZ.md section 7 for the arrays):

- board: float32 (11, 11, 10), the input planes from the view of the player to move;
- action_mask: bool (2, 11, 10), the legal moves;
- move_probs: float32 (2, 11, 10), the search's visit distribution, the policy target (never
  the network's priors: hexz once stored priors and wasted its early data);
- result: the game's outcome from the view of the player to move, -1, 0 or +1;
- score: the game's final score difference from the same view (the mover's points less the
  opponent's), the score head's target; optional, as examples recorded before it have none.

Arrays travel as `np.save` bytes (the hexz NUMPY encoding), so any numpy can read them. Every
reader goes through `decode`, which checks shapes, dtypes and values, because examples arrive
from other processes and machines: the planes and mask must be the encoding of a Flagz
position whose player to move can move (the engine's `check_encoded`), the policy a
distribution over its legal moves, the result a loss, draw or win.
"""

from __future__ import annotations

import gzip
import io
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import BOARD_SHAPE, CELLS, MASK_SHAPE, check_encoded

# No score difference can exceed this: every cell of the board a piece of the highest value, 5.
MAX_SCORE = 5 * CELLS


class InvalidExampleError(ValueError):
    """A training example whose arrays or labels are malformed."""


def encode_array(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def decode_array(data: bytes, shape: tuple, dtype: npt.DTypeLike, what: str) -> np.ndarray:
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
    """The decoded training arrays of a batch of examples.

    `scores` is NaN where an example has no score (recorded before scores were): the score
    loss skips those. Left out, it is all NaN.
    """

    boards: np.ndarray   # (N, 11, 11, 10) float32
    masks: np.ndarray    # (N, 2, 11, 10) bool
    probs: np.ndarray    # (N, 2, 11, 10) float32
    results: np.ndarray  # (N,) float32
    scores: np.ndarray = None  # type: ignore[assignment]  # (N,) float32, NaN: unknown

    def __post_init__(self) -> None:
        if self.scores is None:
            self.scores = np.full(len(self.results), np.nan, np.float32)

    def __len__(self) -> int:
        return len(self.results)

    def __getitem__(self, index: slice | np.ndarray) -> Arrays:
        """The examples at `index` (a slice or an index array) of every array."""
        return Arrays(*(getattr(self, f.name)[index] for f in fields(Arrays)))

    @staticmethod
    def empty(n: int = 0) -> Arrays:
        """n examples of zeros (scores unknown), e.g. storage to fill."""
        return Arrays(np.zeros((n,) + BOARD_SHAPE, np.float32), np.zeros((n,) + MASK_SHAPE, bool),
                      np.zeros((n,) + MASK_SHAPE, np.float32), np.zeros(n, np.float32))

    @staticmethod
    def concat(parts: list[Arrays]) -> Arrays:
        if not parts:
            return Arrays.empty()
        return Arrays(*(np.concatenate([getattr(p, f.name) for p in parts])
                        for f in fields(Arrays)))


def make_example(board: np.ndarray, mask: np.ndarray, visits: np.ndarray, *, turn: int,
                 move: tuple[int, int, int], move_number: int, model_key: pb.ModelKey,
                 root_value: float = 0.0, visit_count: int | None = None) -> pb.TrainingExample:
    """A TrainingExample for a searched position; `result` is filled in when the game ends.

    `visits` is the policy target before normalisation: the search's visit counts, or another
    non-negative target such as a pruned or improved policy (MCTS.policy_target), in which case
    `visit_count` says how many simulations the search made (default: the visits' sum).
    """
    total = float(visits.sum())
    probs = (visits / total if total > 0 else visits).astype(np.float32).reshape(MASK_SHAPE)
    r, c, t = move
    return pb.TrainingExample(
        unix_micros=time.time_ns() // 1000,
        board=encode_array(board),
        action_mask=encode_array(mask),
        move_probs=encode_array(probs),
        turn=turn,
        move=pb.GameEngineMove(player_num=turn, move=move_number, row=r, col=c,
                               cell_type=cast("pb.Field.CellType", t)),
        model_key=model_key,
        root_value=root_value,
        visit_count=round(total) if visit_count is None else visit_count,
        encoding=pb.TrainingExample.NUMPY,
    )


def _npy_header(shape: tuple, dtype: type) -> bytes:
    """The exact np.save header of a C-order array of this shape and dtype."""
    a = np.zeros(shape, dtype)
    return encode_array(a)[:-a.nbytes]


# Headers of the three arrays as this numpy writes them. Nearly every example arrives in exactly
# this form, so `decode` compares the header bytes and views the payload directly instead of
# running np.load per array: the training server validates tens of thousands of examples a
# second, and np.load made decoding ~50x slower than the checks themselves.
_FAST = {"board": (_npy_header(BOARD_SHAPE, np.float32), BOARD_SHAPE, np.float32),
         "action_mask": (_npy_header(MASK_SHAPE, np.bool_), MASK_SHAPE, np.bool_),
         "move_probs": (_npy_header(MASK_SHAPE, np.float32), MASK_SHAPE, np.float32)}


def _decode_field(examples: list[pb.TrainingExample], field: str) -> np.ndarray:
    """One array field of every example, stacked; canonical np.save bytes take the fast path."""
    header, shape, dtype = _FAST[field]
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    hl = len(header)
    raw = [getattr(ex, field) for ex in examples]
    if all(len(b) == hl + nbytes and b.startswith(header) for b in raw):
        # One copy: memoryview slices into a bytearray, which numpy then uses as it is.
        joined = bytearray().join(memoryview(b)[hl:] for b in raw)
        flat: np.ndarray = np.frombuffer(joined, np.uint8 if dtype is np.bool_ else dtype)
        if dtype is np.bool_:
            if (flat > 1).any():  # np.load would give such bytes as True; reject them instead
                raise InvalidExampleError(
                    f"example {int(np.argmax(flat > 1)) // nbytes} {field}: bool bytes not 0 or 1")
            flat = flat.view(np.bool_)
        return flat.reshape((len(raw),) + shape)
    if not raw:
        return np.zeros((0,) + shape, dtype)
    return np.stack([decode_array(b, shape, dtype, f"example {i} {field}")
                     for i, b in enumerate(raw)])


def decode(examples: list[pb.TrainingExample]) -> Arrays:
    """Decodes and validates examples; raises InvalidExampleError naming the first bad one.

    The checks run on the whole batch at once; the error names the lowest-numbered bad example
    and the first check it fails.
    """
    n = len(examples)
    boards = _decode_field(examples, "board")
    masks = _decode_field(examples, "action_mask")
    probs = _decode_field(examples, "move_probs")
    results = np.array([ex.result for ex in examples], np.float32)
    has_score = np.array([ex.HasField("score") for ex in examples], bool)
    scores = np.array([ex.score for ex in examples], np.float32)
    if n == 0:
        return Arrays.concat([])
    flat_p = probs.reshape(n, -1)
    sums = flat_p.sum(1, dtype=np.float64)
    illegal_weight = ((flat_p > 0) & ~masks.reshape(n, -1)).any(1)
    # (which examples fail, what to say about example i), in the order they are reported
    checks = [
        (~np.isfinite(boards.reshape(n, -1)).all(1) | ~np.isfinite(flat_p).all(1),
         lambda i: "board or move_probs has non-finite values"),
        (~masks.reshape(n, -1).any(1), lambda i: "action_mask has no legal move"),
        ((flat_p < 0).any(1) | (np.abs(sums - 1.0) > 1e-3),
         lambda i: f"move_probs must be non-negative and sum to 1 (sum {sums[i]:.4f})"),
        (illegal_weight, lambda i: "move_probs puts weight on illegal moves"),
        (~np.isin(results, (-1.0, 0.0, 1.0)),
         lambda i: f"result {examples[i].result} is not -1, 0 or 1 (loss, draw, win)"),
        (has_score & ~(np.abs(scores) <= MAX_SCORE),
         lambda i: f"score {examples[i].score} outside [-{MAX_SCORE}, {MAX_SCORE}]"),
        # The higher score wins and equal scores draw, so the two must agree: a sign error
        # in either target shows here.
        (has_score & (np.sign(scores) != results),
         lambda i: f"score {examples[i].score} disagrees with result {examples[i].result}"),
    ]
    bad = np.zeros(n, bool)
    for failed, _ in checks:
        bad |= failed
    first_bad = int(np.argmax(bad)) if bad.any() else n
    # The positions before the first example that failed above (the engine's check is the
    # costlier one, and needs finite planes).
    position = check_encoded(boards[:first_bad], masks[:first_bad])
    if position is not None:
        i, why = position
        raise InvalidExampleError(f"example {i}: board and action_mask are not a Flagz "
                                  f"position: {why}")
    if first_bad < n:
        msg = next(m for failed, m in checks if failed[first_bad])
        raise InvalidExampleError(f"example {first_bad}: {msg(first_bad)}")
    scores[~has_score] = np.nan
    return Arrays(boards, masks, probs, results, scores)


# Self-play output files: one gzip-compressed AddTrainingExamplesRequest per game, so that the
# same message is stored on disk and sent to the training server.
GAME_FILE_SUFFIX = ".pb.gz"


def write_game_file(path: Path, request: pb.AddTrainingExamplesRequest) -> None:
    from pyhexz.infra.atomicfile import atomic_write_bytes
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
