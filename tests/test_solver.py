"""Tests for the exact endgame solver (pyhexz.search.solver) and its use in the search.

The solver is checked against exhaustive search without pruning (`move_values` of
tests/test_mcts.py) on the hand-made sign positions from both seats, where the same player
sometimes moves twice, and on real endgames of random games. In the search, a leaf it proves
is a leaf whose every visit backs up the exact value, which the tree shows (terminal 2).
"""

from __future__ import annotations

import numpy as np
import pytest

from pyhexz.game.board import Board
from pyhexz.search.mcts import MCTS
from pyhexz.search.solver import moves_left_of, solve
from test_mcts import (
    SIGN_CASES,
    WIN_IN_ONE,
    drive,
    hashed_eval,
    move_values,
    tiny,
    uniform_eval,
)


def exact_value(b: Board) -> int:
    """The game's value for the player to move, by exhaustive search (no pruning)."""
    return max(move_values(b).values())


def endgame(seed: int, max_moves: int) -> Board:
    """A position of a random game once at most `max_moves` moves are left (both players)."""
    b = Board.new(seed)
    k = 0
    while moves_left_of(b) > max_moves:
        b.random_move(seed * 1000 + k)
        k += 1
        if b.is_over:
            b, k = Board.new(seed + 10_000 * k), 0
    return b


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("name", sorted(SIGN_CASES))
def test_solves_the_sign_positions(name, seat):
    text, _, value = SIGN_CASES[name]
    got, nodes = solve(tiny(text, seat))
    assert got == value and nodes >= 1


@pytest.mark.parametrize("seed", range(12))
def test_agrees_with_exhaustive_search_on_real_endgames(seed):
    b = endgame(seed, 9)
    got, _ = solve(b)
    assert got == exact_value(b)


def test_every_move_of_an_endgame_agrees_with_exhaustive_search():
    # The children of a position, seen from their own movers: the values negamax combines.
    b = endgame(99, 10)
    for mv in b.legal_moves():
        c = b.copy()
        c.play(*mv)
        if not c.is_over:
            assert solve(c)[0] == exact_value(c)


def test_budget_bounds_the_work():
    b = Board.new(5)
    value, nodes = solve(b, budget=50)
    assert value is None and nodes == 50


def test_bad_input_is_refused():
    over = tiny(WIN_IN_ONE)
    over.play(0, 2)
    with pytest.raises(ValueError, match="over"):
        solve(over)
    with pytest.raises(ValueError, match="budget"):
        solve(tiny(WIN_IN_ONE), budget=0)


def test_moves_left_counts_both_players():
    # WIN_IN_ONE, ".. x4 .. o4 ## x1 .. ## o4 ##", no flags: x can play (0,0), (0,2) and (0,6);
    # o only (0,2), next to its 4 (its other 4 has rock on both sides).
    assert moves_left_of(tiny(WIN_IN_ONE)) == 3 + 1
    fresh = Board.new(1)   # 85 empty cells, 3 flags each, no normal moves yet
    assert moves_left_of(fresh) == 2 * 85


# ---------------------------------------------------------------------------
# In the search


def solver_search(board: Board, sims: int, evaluate=uniform_eval, **kw) -> MCTS:
    m = MCTS(1, solver_moves=kw.pop("solver_moves", 50), **kw)
    m.set_root(0, board)
    m.start(0, sims)
    drive(m, evaluate)
    return m


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("name", sorted(SIGN_CASES))
def test_root_children_get_their_exact_values(name, seat):
    text, good, value = SIGN_CASES[name]
    b = tiny(text, seat)
    m = solver_search(b, 40, hashed_eval)
    t = m.tree_nodes(0)
    exact = move_values(b)
    sign = 1 if seat == 1 else -1
    kids = range(t["first_child"][0], t["first_child"][0] + t["nchildren"][0])
    solved = [i for i in kids if t["terminal"][i] == 2]
    assert solved, "the solver proved some root move"
    for i in solved:
        # Every visit of a solved node backed up its exact value: W = n * value (player 1's
        # view), which is the move's value for the root's mover.
        q = sign * t["value_sum"][i] / t["visits"][i]
        assert q == exact[int(t["move"][i])]
        assert t["nchildren"][i] == 0, "a solved leaf is never expanded"
    assert t["terminal"][0] == 0 and t["nchildren"][0] > 0, "the root is searched, not solved"
    assert int(np.argmax(m.visits(0))) == good
    assert m.solves >= len(solved) and m.solver_failures == 0


def test_visits_add_up_with_solved_leaves():
    b = endgame(3, 14)
    m = solver_search(b, 60, hashed_eval, solver_moves=14)
    assert m.solves > 0
    assert m.visits(0).sum() == 60 and m.root_visits(0) == 61
    assert m.solver_nodes > 0


def test_a_budget_too_small_falls_back_to_the_network():
    b = endgame(4, 14)
    plain = MCTS(1)
    plain.set_root(0, b)
    plain.start(0, 30)
    drive(plain, hashed_eval)
    m = solver_search(b, 30, hashed_eval, solver_moves=14, solver_budget=1)
    # Nothing proved with one position (unless a single move ends the game): the tree is the
    # plain one, with the attempts counted.
    assert m.solves == 0 and m.solver_failures > 0
    np.testing.assert_array_equal(m.visits(0), plain.visits(0))


def test_solver_off_above_its_threshold():
    m = solver_search(Board.new(8), 30, solver_moves=5)
    assert m.solves == 0 and m.solver_failures == 0


@pytest.mark.parametrize("keep_stats", [False, True])
def test_play_into_a_solved_move_searches_on(keep_stats):
    b = endgame(5, 12)
    m = solver_search(b, 60, hashed_eval, solver_moves=12)
    t = m.tree_nodes(0)
    kids = range(t["first_child"][0], t["first_child"][0] + t["nchildren"][0])
    solved = [i for i in kids if t["terminal"][i] == 2]
    assert solved
    # A solved node is a running game (finished ones are terminal 1) that was never expanded:
    # after the move it is a fresh root, which the search expands like any other.
    m.play(0, int(t["move"][solved[0]]), keep_stats=keep_stats)
    assert not m.root_board(0).is_over
    m.start(0, 20)
    drive(m, hashed_eval)
    assert m.visits(0).sum() == 20
    assert m.tree_nodes(0)["terminal"][0] == 0


def test_solver_in_a_batch_of_trees():
    m = MCTS(3, leaves_per_tree=4, solver_moves=14)
    for t in range(3):
        m.set_root(t, endgame(20 + t, 14))
        m.start(t, 40)
    drive(m, hashed_eval)
    assert m.solves > 0
    for t in range(3):
        assert m.visits(t).sum() == 40
