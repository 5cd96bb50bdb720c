"""The board's mirror symmetries hold for the engine, and augmentation applies them consistently."""

import numpy as np
import pytest

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board, policy_move_tuple
from pyhexz.game.examples import Arrays
from pyhexz.game.symmetry import PERMUTATIONS, augment, transform


def mirrored(board: Board, s: int) -> Board:
    """`board` under symmetry s, rebuilt through its protobuf state (fields are row-major)."""
    state = board.to_proto()
    fields = state.flagz.board.flat_fields
    slots = [r * 10 + c for r in range(11) for c in range(10 - r % 2)]
    by_slot = {slot: pb.Field.FromString(f.SerializeToString())
               for slot, f in zip(slots, fields, strict=True)}
    del fields[:]
    fields.extend(by_slot[PERMUTATIONS[s][slot]] for slot in slots)
    return Board.from_proto(state)


def mirrored_move(move: tuple[int, int, int], s: int) -> tuple[int, int, int]:
    row, col, typ = move
    image = int(PERMUTATIONS[s][row * 10 + col])   # each symmetry is its own inverse
    return image // 10, image % 10, typ


def test_permutations_are_involutions_that_keep_the_unused_slots():
    for p in PERMUTATIONS:
        assert sorted(p) == list(range(110))
        assert (p[p] == np.arange(110)).all()
        for r in range(1, 11, 2):
            assert p[r * 10 + 9] in {r2 * 10 + 9 for r2 in range(1, 11, 2)}
    assert (PERMUTATIONS[0] == np.arange(110)).all()
    # Row 0 mirrored left-right: 0 <-> 9; row 1 (9 cells): 10 <-> 18.
    assert PERMUTATIONS[1][0] == 9 and PERMUTATIONS[1][10] == 18
    # Up-down: row 0 <-> row 10.
    assert PERMUTATIONS[2][0] == 100


@pytest.mark.parametrize("s", [1, 2, 3])
def test_engine_commutes_with_each_symmetry(s):
    """Through whole random games: the mirrored position encodes as the mirrored planes and
    mask, and the mirrored move leads to the mirror of the next position."""
    rng = np.random.default_rng(s)
    for _game in range(3):
        b = Board.new(int(rng.integers(2**32)))
        while not b.is_over:
            planes, mask = b.encode()
            m = mirrored(b, s)
            m_planes, m_mask = m.encode()
            np.testing.assert_array_equal(m_planes, transform(planes, s))
            np.testing.assert_array_equal(m_mask, transform(mask, s))
            legal = np.flatnonzero(mask.reshape(-1))
            move = policy_move_tuple(int(rng.choice(legal)))
            b.play(*move)
            m.play(*mirrored_move(move, s))
            assert m.score == b.score and m.turn == b.turn and m.is_over == b.is_over
            np.testing.assert_array_equal(m.encode()[0], transform(b.encode()[0], s))


def test_augment_moves_planes_masks_and_targets_together():
    rng = np.random.default_rng(0)
    b = Board.new(1)
    for _ in range(7):
        b.random_move(int(rng.integers(2**32)))
    planes, mask = b.encode()
    probs = mask.astype(np.float32) / mask.sum()
    n = 64
    batch = Arrays(np.repeat(planes[None], n, 0), np.repeat(mask[None], n, 0),
                   np.repeat(probs[None], n, 0), np.arange(n, dtype=np.float32),
                   -np.arange(n, dtype=np.float32))
    out = augment(batch, np.random.default_rng(1))
    # A mirror image is won by as much as the original: results and scores stay.
    np.testing.assert_array_equal(out.results, batch.results)
    np.testing.assert_array_equal(out.scores, batch.scores)
    seen = set()
    for i in range(n):
        s = next(s for s in range(4) if np.array_equal(out.boards[i], transform(planes, s)))
        seen.add(s)
        np.testing.assert_array_equal(out.masks[i], transform(mask, s))
        np.testing.assert_array_equal(out.probs[i], transform(probs, s))
    assert seen == {0, 1, 2, 3}
