"""The symmetries of the Flagz board, used to augment training data fourfold.

Even rows hold 10 cells and odd rows 9, shifted half a cell right (FLAGZ.md section 1), so the
board is symmetric under a left-right mirror (even rows c -> 9 - c, odd rows c -> 8 - c), an
up-down mirror (r -> 10 - r, which keeps each row's parity because there are 11 rows) and the
two together (a half turn). The rules only speak of neighbours, values and owners, never of
directions, so a position and its mirror image are equally good for the mover and their best
moves mirror each other: every training example stands for four. `tests/test_symmetry.py`
checks this against the engine.

A symmetry is a permutation of the 110 grid slots (r * 10 + c; the unused slot c = 9 of odd
rows maps to itself), applied to the last two axes of planes, masks and policy targets alike.
"""

from __future__ import annotations

import numpy as np

from pyhexz.game.board import COLS, ROWS
from pyhexz.game.examples import Arrays


def _permutation(mirror_cols: bool, mirror_rows: bool) -> np.ndarray:
    perm = np.arange(ROWS * COLS)
    for r in range(ROWS):
        width = COLS - r % 2
        for c in range(width):
            r2 = ROWS - 1 - r if mirror_rows else r
            c2 = width - 1 - c if mirror_cols else c
            perm[r * COLS + c] = r2 * COLS + c2
    return perm


# Identity, left-right, up-down, half turn. Each is its own inverse, so `x[..., p]` moves a
# slot's content to its image and back again.
PERMUTATIONS = np.stack([_permutation(a, b) for b in (False, True) for a in (False, True)])


def transform(grid: np.ndarray, symmetry: int) -> np.ndarray:
    """`grid` (..., 11, 10) under one of the four symmetries (0 is the identity)."""
    flat = grid.reshape(*grid.shape[:-2], ROWS * COLS)
    return flat[..., PERMUTATIONS[symmetry]].reshape(grid.shape)


def augment(batch: Arrays, rng: np.random.Generator) -> Arrays:
    """The batch with each example under a symmetry drawn uniformly at random."""
    n = len(batch)
    perm = PERMUTATIONS[rng.integers(0, len(PERMUTATIONS), size=n)]   # (n, 110)

    def apply(a: np.ndarray) -> np.ndarray:
        flat = a.reshape(n, a.shape[1], ROWS * COLS)
        return np.take_along_axis(flat, perm[:, None, :], axis=2).reshape(a.shape)

    # Results and scores are the same under every symmetry.
    return Arrays(apply(batch.boards), apply(batch.masks), apply(batch.probs), batch.results,
                  batch.scores)
