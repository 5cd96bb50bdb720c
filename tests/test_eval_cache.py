"""Tests for the position hash (pyhexz.game.board) and the evaluation cache of the search
(pyhexz.search.evalcache, used by pyhexz.search.mcts).

The cache must change nothing but the number of network calls: with an evaluator that is a
function of the position alone, a search with the cache builds exactly the tree of a search
without it, whatever the cache's size, and the network sees fewer leaves, one fewer for each
transposition hit.
"""

from __future__ import annotations

import numpy as np
import pytest

from pyhexz.game.board import Board, policy_move_tuple
from pyhexz.search.driver import TreeConfig
from pyhexz.search.mcts import MCTS
from pyhexz.search.timed import TimedSearch, think
from test_mcts import EXCLUSIVE, buffers, hashed_eval, random_position, tiny

# o plays alone in a region of 9 cells after x's move, so its moves transpose.
REGION = EXCLUSIVE


def counting_drive(m: MCTS, evaluate=hashed_eval) -> int:
    """Runs collect/apply until no tree is busy; returns the leaves the evaluator saw."""
    planes, masks = buffers(m)
    leaves = 0
    while m.busy():
        n = m.collect(planes, masks)
        probs, values = evaluate(planes[:n], masks[:n])
        m.apply(probs, values)
        leaves += n
    return leaves


def search(board: Board, sims: int, **kw) -> tuple[MCTS, int]:
    m = MCTS(1, **kw)
    m.set_root(0, board)
    m.start(0, sims)
    return m, counting_drive(m)


def assert_same_tree(a: MCTS, b: MCTS) -> None:
    ta, tb = a.tree_nodes(0), b.tree_nodes(0)
    for key in ta:
        np.testing.assert_array_equal(ta[key], tb[key], err_msg=key)


# ---------------------------------------------------------------------------
# The position hash


def test_transpositions_hash_alike():
    b = tiny(REGION)
    b.play(0, 1)                      # x's 5 blocks x for good: o moves alone from here
    assert b.turn == 2
    one, two = b.copy(), b.copy()
    one.play(1, 4)
    one.play(1, 5)
    two.play(1, 5)
    two.play(1, 4)
    # The same position (cells, turn, flags, moves), though its state bytes may differ: the
    # engine's move lists are unordered and record the order in which cells joined them.
    assert str(one) == str(two) and sorted(one.legal_moves()) == sorted(two.legal_moves())
    assert one.position_hash() == two.position_hash()
    assert one.position_hash() != b.position_hash()


def test_hash_tells_turn_and_flags_apart():
    cells = ".. x4 .. o4 ## x1 .. ## o4 ##"
    by_turn = {Board.from_ascii(cells, turn=t, flags_left=(0, 0), fill="##").position_hash()
               for t in (1, 2)}
    by_flags = {Board.from_ascii(cells, turn=1, flags_left=f, fill="##").position_hash()
                for f in ((0, 0), (1, 0), (0, 1), (1, 1))}
    assert len(by_turn) == 2 and len(by_flags) == 4


@pytest.mark.parametrize("seed", range(8))
def test_hash_kept_by_moves_equals_the_hash_made_afresh(seed):
    # Board.from_proto builds the state from its cells (captures included), so its hash is
    # computed from scratch; along a game the hash is only ever updated move by move.
    b = Board.new(seed)
    seen = {}
    k = 0
    while not b.is_over:
        h = b.position_hash()
        assert h == Board.from_proto(b.to_proto()).position_hash()
        assert h not in seen, "a game never returns to a position: every move fills a cell"
        seen[h] = k
        b.random_move(seed * 977 + k)
        k += 1
    assert sum(b.score) > 0


def test_hash_survives_pickling():
    import pickle
    b = random_position(3, 20)
    assert pickle.loads(pickle.dumps(b)).position_hash() == b.position_hash()


# ---------------------------------------------------------------------------
# The cache in the search


@pytest.mark.parametrize("seat", [1, 2])
def test_cache_saves_network_calls_and_changes_nothing_else(seat):
    board = tiny(REGION, seat)
    plain, plain_leaves = search(board, 300)
    cached, cached_leaves = search(board, 300, eval_cache=10_000)
    assert_same_tree(plain, cached)
    assert cached.transposition_hits > 0
    assert cached_leaves == plain_leaves - cached.transposition_hits


@pytest.mark.parametrize("capacity", [1, 4, 25])
def test_a_small_cache_is_bounded_and_still_exact(capacity):
    board = tiny(REGION)
    plain, _ = search(board, 300)
    m = MCTS(1, eval_cache=capacity)
    m.set_root(0, board)
    planes, masks = buffers(m)
    for _ in range(300):
        m.start(0, 1)
        while m.busy():
            n = m.collect(planes, masks)
            m.apply(*hashed_eval(planes[:n], masks[:n]))
        assert m.cache_entries(0) <= capacity
    assert_same_tree(plain, m)


def test_cache_survives_the_move():
    # The cache lives as long as the game's tree: positions evaluated below the moves not
    # played can be reached again by transposition after the move.
    board = tiny(REGION)
    board.play(0, 1)      # o to move alone in its region
    m = MCTS(1, eval_cache=10_000)
    m.set_root(0, board)
    m.start(0, 100)
    counting_drive(m)
    entries, hits = m.cache_entries(0), m.transposition_hits
    m.play(0, int(np.argmax(m.visits(0))))   # statistics reset, the subtree's outputs kept
    assert m.cache_entries(0) == entries
    m.start(0, 400)
    counting_drive(m)
    assert m.transposition_hits > hits


def test_set_root_starts_an_empty_cache():
    m, _ = search(tiny(REGION), 100, eval_cache=10_000)
    assert m.cache_entries(0) > 0
    m.set_root(0, Board.new(1))
    assert m.cache_entries(0) == 0


def test_set_root_can_keep_the_cache_and_the_tree_is_still_exact():
    """A searcher handed a game's positions one by one (the CPU player) keeps its cache:
    what the search of one move evaluated below the next position is not evaluated again."""
    board = random_position(3, 20)
    m = MCTS(1, eval_cache=10_000)
    m.set_root(0, board)
    m.start(0, 300)
    counting_drive(m)
    nxt = board.copy()
    for _ in range(2):   # the move it found, and the reply it looked at most below it
        move = int(np.argmax(m.visits(0)))
        nxt.play(*policy_move_tuple(move))
        m.play(0, move, keep_stats=True)
    plain, plain_leaves = search(nxt, 300)
    m.set_root(0, nxt, keep_cache=True)
    hits = m.transposition_hits
    m.start(0, 300)
    kept_leaves = counting_drive(m)
    assert m.transposition_hits > hits
    assert kept_leaves == plain_leaves - (m.transposition_hits - hits)
    assert_same_tree(plain, m)


def test_clear_caches_empties_every_tree():
    m = MCTS(2, eval_cache=10_000)
    for t, seed in enumerate((1, 2)):
        m.set_root(t, random_position(seed, 10))
        m.start(t, 50)
    counting_drive(m)
    assert m.cache_entries(0) > 0 and m.cache_entries(1) > 0
    m.clear_caches()
    assert m.cache_entries(0) == 0 and m.cache_entries(1) == 0


def test_timed_search_keeps_its_cache_until_the_network_changes():
    seen = []

    def counting(planes, masks):
        seen.append(len(planes))
        return hashed_eval(planes, masks)
    board = random_position(4, 12)
    s = TimedSearch(1, counting, leaves_per_round=1, tree=TreeConfig(eval_cache=10_000))
    think(s, board, 1e6, max_iterations=150)
    first = sum(seen)
    seen.clear()
    think(s, board, 1e6, max_iterations=150)      # the same search again: all of it cached
    assert first > 100 and sum(seen) == 0
    s.evaluate = lambda planes, masks: counting(planes, masks)   # a new network
    think(s, board, 1e6, max_iterations=150)
    assert sum(seen) == first


def test_budget_player_keeps_its_caches_across_moves():
    """The arena's neural player: with kept caches it plays the moves of a player whose
    caches are emptied every move, in every game, and asks the network for fewer leaves."""
    from pyhexz.search.players import NeuralPlayer
    from pyhexz.train.arena import play_match

    class Recorded(NeuralPlayer):
        """Records its moves and the leaves its network saw."""

        def __init__(self, keep: bool) -> None:
            super().__init__(self.counting, runs=40, tree=TreeConfig(eval_cache=10_000),
                             keep_cache=keep)
            self.leaves = 0
            self.moves: list = []

        def counting(self, planes, masks):
            self.leaves += len(planes)
            return hashed_eval(planes, masks)

        def choose(self, boards):
            moves = super().choose(boards)
            self.moves.append(moves)
            return moves
    openings = [random_position(seed, 6) for seed in (7, 8)]
    kept, emptied = Recorded(True), Recorded(False)
    assert kept.mcts.eval_cache == 4 * 41 and emptied.mcts.eval_cache == 41
    with_kept = play_match(kept, NeuralPlayer(hashed_eval, runs=40), openings)
    with_emptied = play_match(emptied, NeuralPlayer(hashed_eval, runs=40), openings)
    assert kept.moves == emptied.moves and len(kept.moves) > 10
    assert with_kept.outcomes == with_emptied.outcomes
    assert kept.leaves < 0.9 * emptied.leaves, (kept.leaves, emptied.leaves)


@pytest.mark.parametrize("leaves_per_tree", [1, 4])
def test_visits_add_up_in_a_batch_of_trees(leaves_per_tree):
    m = MCTS(3, leaves_per_tree=leaves_per_tree, eval_cache=2_000)
    boards = [tiny(REGION, 1), tiny(REGION, 2), random_position(5, 40)]
    for t, b in enumerate(boards):
        m.set_root(t, b)
        m.start(t, 120)
    leaves = counting_drive(m)
    assert m.transposition_hits > 0
    total = sum(m.root_visits(t) for t in range(3))
    assert total == leaves + m.transposition_hits + m.terminal_hits + m.cache_hits
    for t in range(3):
        assert m.visits(t).sum() == 120


def test_cache_is_off_by_default():
    m, _ = search(tiny(REGION), 100)
    assert m.transposition_hits == 0 and m.cache_entries(0) == 0 and m.eval_cache == 0
