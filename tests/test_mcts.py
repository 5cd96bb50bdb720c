"""Tests for the compiled search (pyhexz.search.mcts): signs, PUCT arithmetic, batching, noise,
reuse.

Positions are tiny boards drawn with `Board.from_ascii(..., fill="##")`: row 0 (and once row
1) is drawn, every other cell is rock and nobody has flags left, so in a one-row position a
cell's only neighbours are its left and right cells, and each position has a handful of moves
that can be checked by hand and, in `move_values`, by exhaustive search. Every sign test runs
from both seats: the player-2 version of a position swaps x and o and gives player 2 the move.

Value convention everywhere (ARCHITECTURE.md): +1 = the player to move wins.

"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest

from pyhexz.game.board import Board, policy_index
from pyhexz.search.mcts import MCTS

# ---------------------------------------------------------------------------
# Helpers


def tiny(rows: str, seat: int = 1) -> Board:
    """A position of the first row or two (everything else rock, no flags), `seat` to move.

    Drawn from player 1's side; for seat 2 the pieces change owners (x <-> o), so the same
    moves win or lose for player 2.
    """
    if seat == 2:
        rows = rows.translate(str.maketrans("xo", "ox"))
    b = Board.from_ascii(rows, turn=seat, flags_left=(0, 0), fill="##")
    assert b.turn == seat and not b.is_over
    return b


def normal(col: int) -> int:
    """Policy index of a normal move in row 0."""
    return policy_index(0, col, 0)


def outcome_for(b: Board, player: int) -> int:
    """+1 / 0 / -1 for `player` in a finished game."""
    assert b.is_over
    return 0 if b.winner == 0 else (1 if b.winner == player else -1)


def solve(b: Board, memo: dict) -> int:
    """Exact game value for the player to move (+1 win, 0 draw, -1 loss); tiny boards only."""
    key = b._state_bytes()
    if key not in memo:
        best = -1
        for mv in b.legal_moves():
            best = max(best, move_value(b, mv, memo))
            if best == 1:
                break
        memo[key] = best
    return memo[key]


def move_value(b: Board, mv: tuple, memo: dict) -> int:
    c = b.copy()
    c.play(*mv)
    if c.is_over:
        return outcome_for(c, b.turn)
    v = solve(c, memo)
    return v if c.turn == b.turn else -v  # a skipped opponent: the same player moves again


def move_values(b: Board) -> dict:
    """Exact value of every legal move, as {policy index: value for the player to move}."""
    memo: dict = {}
    return {policy_index(*mv): move_value(b, mv, memo) for mv in b.legal_moves()}


def buffers(m: MCTS) -> tuple[np.ndarray, np.ndarray]:
    planes = np.zeros((m.batch_size, 11, 11, 10), dtype=np.float32)
    masks = np.zeros((m.batch_size, 2, 11, 10), dtype=np.uint8)
    return planes, masks


def uniform_eval(planes: np.ndarray, masks: np.ndarray):
    n = len(planes)
    return np.ones((n, 220), dtype=np.float32), np.zeros(n, dtype=np.float32)


def constant_eval(priors: dict, value: float, default_prior: float = 1.0):
    """Every leaf gets the same priors ({policy index: p}, others `default_prior`) and value."""
    row = np.full(220, default_prior, dtype=np.float32)
    for k, p in priors.items():
        row[k] = p

    def evaluate(planes, masks):
        n = len(planes)
        return np.tile(row, (n, 1)), np.full(n, value, dtype=np.float32)

    return evaluate


def hashed_eval_one(planes: np.ndarray) -> tuple[np.ndarray, float]:
    """Arbitrary but deterministic network output, a function of the encoded position only."""
    rng = np.random.default_rng(zlib.crc32(np.ascontiguousarray(planes, np.float32).tobytes()))
    probs = (rng.random(220) + 0.05).astype(np.float32)
    return probs, float(np.float32(rng.uniform(-1.0, 1.0)))


def hashed_eval(planes: np.ndarray, masks: np.ndarray):
    out = [hashed_eval_one(p) for p in planes]
    probs = np.array([p for p, _ in out], dtype=np.float32).reshape(len(out), 220)
    return probs, np.array([v for _, v in out], dtype=np.float32)


def drive(m: MCTS, evaluate=uniform_eval, check=None) -> list[int]:
    """Runs collect/apply until no tree is busy; returns the batch sizes."""
    planes, masks = buffers(m)
    sizes = []
    while m.busy():
        n = m.collect(planes, masks)
        assert 0 <= n <= m.batch_size
        if check is not None:
            check(planes[:n], masks[:n])
        probs, values = evaluate(planes[:n], masks[:n])
        m.apply(np.ascontiguousarray(probs, np.float32), np.ascontiguousarray(values, np.float32))
        sizes.append(n)
    return sizes


def neural_search(board: Board, sims: int, evaluate=uniform_eval, **kw) -> MCTS:
    m = MCTS(1, **kw)
    m.set_root(0, board)
    m.start(0, sims)
    drive(m, evaluate)
    return m


def rollout_search(board: Board, sims: int, seed: int = 0, **kw) -> MCTS:
    m = MCTS(1, seed=seed, **kw)
    m.set_root(0, board)
    assert m.run_rollouts(0, sims) == sims
    return m


def random_position(seed: int, plies: int) -> Board:
    b = Board.new(seed)
    for k in range(plies):
        if b.is_over:
            break
        b.random_move(seed * 1000 + k)
    return b


def legal_indices(b: Board) -> set:
    return {policy_index(*mv) for mv in b.legal_moves()}


def move_tuple(k: int) -> tuple:
    """(row, col, type) of a policy index; the inverse of policy_index."""
    rc = k % 110
    return (rc // 10, rc % 10, 5 if k < 110 else 0)


# ---------------------------------------------------------------------------
# Positions (all drawn with player 1 to move; see `tiny` for seat 2)

# Win in one. Moves: (0,0) a 5, (0,2) a 5, (0,6) a 2; score 5:8. (0,2) takes o's only cell:
# 10:8 and o is stuck while x leads, so the game ends at once. After (0,0) or (0,6), o takes
# (0,2) for 5 and x's last move leaves it 12:13.
WIN_IN_ONE = ".. x4 .. o4 ## x1 .. ## o4 ##"
WIN_IN_ONE_MOVE = normal(2)

# Moves in a row, with choices between them. Score 5:18. Moves (0,1) a 2, (0,3) a 5, (0,5) a 5.
# (0,5) takes o's only cell: 10:18, o is stuck but x trails, so the game goes on with x to
# move again, and again: (0,1) for 2, (0,2) for 3, (0,3) for 4 wins 19:18. Any earlier (0,3)
# (a 5, which blocks (0,2) for x) ends it 17:18. At the root, (0,1) or (0,3) lets o take (0,5).
# A search that assumed turns alternate would pick x's continuations for o.
SKIP_NOW = "x1 .. .. .. x4 .. o4 o5 o5 o4"
SKIP_NOW_MOVE = normal(5)

# Skip after the opponent's reply. Score 5:8. x plays (0,1) for 2; o's only move is (0,7) for
# 5 (7:13), which blocks o's last cells, so o is stuck and x moves twice: (0,2) for 3, then
# (0,3) for 4 (14:13). Playing (0,3) for 5 first, at the root or after o's reply, blocks (0,2)
# for x and ends 12:13.
SKIP_AFTER_REPLY = "x1 .. .. .. x4 ## o4 .. ## o4"
SKIP_AFTER_REPLY_MOVE = normal(1)

# Loss avoidance. Score 2:8. (0,1) is o's only cell; taking it leaves o stuck while x trails,
# so x moves three times in a row and draws 8:8. (0,7) or (0,9) lets o play (0,1) for 4, and
# x's last move leaves it 6:12.
DRAW_SAVE = "x1 .. o3 ## ## ## o5 .. x1 .."
DRAW_SAVE_MOVE = normal(1)

# Two moves, (0,0) and (0,2), both a 5 and neither ending the game; o answers on (0,5).
TWO_MOVES = ".. x4 .. ## o1 .. .. .. ## ##"
A, B = normal(0), normal(2)

# Two moves, (0,1) and (0,2), both a 5; each blocks the other for good and leaves x stuck, so
# the subtree of a move can be told from the board (x's 5 stands on (0,1) exactly below (0,1)).
# o then plays alone in a region of 9 cells (row 1 is open under it), so finished games are
# rare in a short search and the evaluator's values decide.
EXCLUSIVE = "x4 .. .. x4 ## o1 .. .. .. ..\n  ## ## ## ## .. .. .. .. .."

SIGN_CASES = {
    "win_in_one": (WIN_IN_ONE, WIN_IN_ONE_MOVE, 1),
    "skip_now": (SKIP_NOW, SKIP_NOW_MOVE, 1),
    "skip_after_reply": (SKIP_AFTER_REPLY, SKIP_AFTER_REPLY_MOVE, 1),
    "draw_save": (DRAW_SAVE, DRAW_SAVE_MOVE, 0),
}


# ---------------------------------------------------------------------------
# The positions are what their comments say (checked with the engine alone)


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("name", sorted(SIGN_CASES))
def test_sign_positions_have_one_good_move(name, seat):
    text, good, value = SIGN_CASES[name]
    vals = move_values(tiny(text, seat))
    assert len(vals) >= 2
    assert vals.pop(good) == value
    assert set(vals.values()) == {-1}, "every other move loses"


@pytest.mark.parametrize("seat", [1, 2])
def test_win_in_one_ends_the_game(seat):
    b = tiny(WIN_IN_ONE, seat)
    b.play(0, 2)
    assert b.is_over and b.winner == seat


@pytest.mark.parametrize("seat", [1, 2])
def test_skip_now_really_skips(seat):
    b = tiny(SKIP_NOW, seat)
    b.play(0, 5)
    assert b.normal_moves[2 - seat] == 0, "the opponent is stuck"
    assert move_values(b) == {normal(1): 1, normal(3): -1}
    for col in (1, 2):
        assert not b.is_over and b.turn == seat, "the same player moves on"
        b.play(0, col)
    assert move_values(b) == {normal(3): 1}
    b.play(0, 3)
    assert b.is_over and b.winner == seat and b.score[seat - 1] == 19


@pytest.mark.parametrize("seat", [1, 2])
def test_skip_after_reply_really_skips(seat):
    other = 3 - seat
    b = tiny(SKIP_AFTER_REPLY, seat)
    b.play(0, 1)
    assert b.turn == other and b.legal_moves() == [(0, 7, 0)]
    b.play(0, 7)
    assert not b.is_over and b.turn == seat, "the opponent's 5 blocked its own last cells"
    b.play(0, 2)
    assert not b.is_over and b.turn == seat, "still stuck: the same player moves twice"
    b.play(0, 3)
    assert b.is_over and b.winner == seat and b.score[seat - 1] == 14


@pytest.mark.parametrize("seat", [1, 2])
def test_draw_save_really_skips(seat):
    b = tiny(DRAW_SAVE, seat)
    b.play(0, 1)
    for col in (7, 9):
        assert not b.is_over and b.turn == seat
        b.play(0, col)
    assert b.is_over and b.winner == 0


# ---------------------------------------------------------------------------
# Sign conventions: the search finds the only good move, from both seats


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("search", ["neural", "rollout"])
@pytest.mark.parametrize("name", sorted(SIGN_CASES))
def test_search_finds_the_good_move(name, seat, search):
    text, good, value = SIGN_CASES[name]
    if search == "neural":
        m = neural_search(tiny(text, seat), 300)
    else:
        m = rollout_search(tiny(text, seat), 2000, seed=seat)
    visits = m.visits(0)
    assert int(np.argmax(visits)) == good, visits[visits > 0]
    if value == 1:
        assert m.root_value(0) > 0.5
    else:
        assert -0.5 < m.root_value(0) < 0.2


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("skip, expected", [(True, 0.8), (False, 0.0)])
def test_leaf_value_backed_up_with_the_mover_sign(seat, skip, expected):
    # Every leaf is worth +0.8 for its own mover. Two simulations: the root's evaluation, then
    # the child with prior 0.9. After (0,5) the same player moves again (skip), so that leaf's
    # +0.8 counts for the root's mover: (0.8 + 0.8) / 2. After (0,1) the opponent moves, so it
    # counts against: (0.8 - 0.8) / 2.
    favourite = SKIP_NOW_MOVE if skip else normal(1)
    m = MCTS(1)
    m.set_root(0, tiny(SKIP_NOW, seat))
    evaluate = constant_eval({favourite: 0.9}, 0.8, default_prior=0.05)
    while m.visits(0).sum() < 1:
        m.start(0, 1)
        drive(m, evaluate)
    assert m.visits(0)[favourite] == 1
    assert m.root_value(0) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("mover_wins_below_first", [True, False])
def test_leaf_values_steer_the_parent(seat, mover_wins_below_first):
    # The evaluator decides who wins below the move (0,1) of the root's mover and scores every
    # such leaf +1 or -1 from the view of whoever moves there; elsewhere it says 0. (Both moves
    # really lose; only the evaluator tells them apart.) The root must follow it, which needs
    # the right sign for leaves of either mover.
    first, second = normal(1), normal(2)

    def evaluate(planes, masks):
        n = len(planes)
        values = np.zeros(n, dtype=np.float32)
        for j in range(n):
            own = planes[j, 1, 0, 1] == 5      # the leaf's mover put the 5 on (0,1)
            theirs = planes[j, 6, 0, 1] == 5   # the leaf's opponent did
            if own or theirs:
                values[j] = 1.0 if own == mover_wins_below_first else -1.0
        return np.ones((n, 220), dtype=np.float32), values

    b = tiny(EXCLUSIVE, seat)
    assert legal_indices(b) == {first, second}
    m = neural_search(b, 60, evaluate)
    visits = m.visits(0)
    if mover_wins_below_first:
        assert visits[first] > 5 * visits[second]
        assert m.root_value(0) > 0.5
    else:
        assert visits[second] > 5 * visits[first]
        assert m.root_value(0) < 0.1


# ---------------------------------------------------------------------------
# PUCT arithmetic on a known small tree (mctx-style)


def child_visits_by_root_visits(board: Board, evaluate, up_to: int) -> dict:
    """Runs one simulation at a time; maps the root's visit count to the (A, B) visits."""
    m = MCTS(1, c_puct=1.5)
    m.set_root(0, board)
    seen = {}
    while m.root_visits(0) < up_to:
        m.start(0, 1)
        drive(m, evaluate)
        v = m.visits(0)
        assert v.sum() == m.root_visits(0) - 1, "root visits = its own evaluation + children"
        seen[m.root_visits(0)] = (int(v[A]), int(v[B]))
    return seen


@pytest.mark.parametrize("seat", [1, 2])
def test_known_small_tree(seat):
    # Priors P(A) = 0.6, P(B) = 0.4, every leaf worth +0.5 for its mover, c_puct = 1.5.
    # N = root visits before the simulation; score = Q + 1.5 * P * sqrt(N) / (1 + n), with
    # an unvisited child valued at the root's Q (root's mover view):
    #   N=1: Q(root) = 0.5; A: 0.5 + 0.9 beats B: 0.5 + 0.6         -> A, a leaf: -0.5 for us
    #   N=2: Q(root) = 0;   A: -0.5 + 0.9 * 1.41 / 2 = 0.14; B: 0 + 0.6 * 1.41 = 0.85 -> B
    #   N=3: A: -0.5 + 0.9 * 1.73 / 2 = 0.28; B: -0.5 + 0.6 * 1.73 / 2 = 0.02         -> A
    #        (below A the opponent answers on (0,5) and we move: +0.5, so Q(A) = 0)
    #   N=4: A: 0 + 0.9 * 2 / 3 = 0.6;         B: -0.5 + 0.6 * 2 / 2 = 0.1           -> A
    evaluate = constant_eval({A: 0.6, B: 0.4}, 0.5)
    seen = child_visits_by_root_visits(tiny(TWO_MOVES, seat), evaluate, 5)
    assert {k: seen[k] for k in (2, 3, 4, 5)} == {2: (1, 0), 3: (1, 1), 4: (2, 1), 5: (3, 1)}


@pytest.mark.parametrize("seat", [1, 2])
def test_puct_uses_the_parent_visit_count(seat):
    # Tells sqrt(N) from sqrt(N + 1), e.g. a descent counting its own virtual loss as a visit.
    # Every leaf worth -0.24 for its mover (so +0.24 for us after A). At N=2, Q(root) = 0:
    #   sqrt(N):     A: 0.24 + 0.9 * 1.414 / 2 = 0.876 > B: 0.6 * 1.414 = 0.849 -> A again
    #   sqrt(N + 1): A: 0.24 + 0.9 * 1.732 / 2 = 1.019 < B: 0.6 * 1.732 = 1.039 -> B
    evaluate = constant_eval({A: 0.6, B: 0.4}, -0.24)
    seen = child_visits_by_root_visits(tiny(TWO_MOVES, seat), evaluate, 3)
    assert seen[3] == (2, 0)


# A reference PUCT in Python on Board objects, written from the formula in mcts.pyx's docstring:
# the root's evaluation, then `sims` simulations, each one evaluation or one finished game.
# With `fpu`/`fpu_root`, unvisited children are valued at Q(parent) - fpu * sqrt(visited prior
# mass); with `forced` (KataGo's k), a visited root child with fewer than sqrt(k * P * total
# child visits) visits is taken first.


class _RefNode:
    __slots__ = ("board", "p", "n", "w", "children")

    def __init__(self, board: Board, p: float):
        self.board, self.p, self.n, self.w, self.children = board, p, 0, 0.0, None


def _reference_child(node: _RefNode, c_puct: float, fpu: float, forced: float) -> _RefNode:
    if forced > 0:
        total = sum(ch.n for _, ch in node.children)
        for _, ch in node.children:
            if 0 < ch.n < math.sqrt(forced * ch.p * total):
                return ch
    sign = 1 if node.board.turn == 1 else -1      # w is kept from player 1's view
    q_parent = sign * node.w / node.n
    q_first = q_parent - fpu * math.sqrt(sum(ch.p for _, ch in node.children if ch.n > 0))
    scale = c_puct * math.sqrt(node.n)
    best, best_score = None, -math.inf
    for _, ch in node.children:
        q = q_first if ch.n == 0 else sign * ch.w / ch.n
        score = q + scale * ch.p / (1 + ch.n)
        if score > best_score:
            best, best_score = ch, score
    return best


def reference_tree(board: Board, sims: int, c_puct: float = 1.5, fpu: float = 0.0,
                   fpu_root: float = 0.0, forced: float = 0.0) -> _RefNode:
    root = _RefNode(board.copy(), 1.0)
    for _ in range(sims + 1):
        node, path = root, [root]
        while node.children is not None and not node.board.is_over:
            if node is root:
                node = _reference_child(node, c_puct, fpu_root, forced)
            else:
                node = _reference_child(node, c_puct, fpu, 0.0)
            path.append(node)
        b = node.board
        if b.is_over:
            v1 = float(outcome_for(b, 1))
        else:
            probs, v = hashed_eval_one(b.encode()[0])
            # Children in the engine's order (board order, flag before normal): ties go to
            # the first child.
            moves = b.legal_moves()
            total = sum(float(probs[policy_index(*mv)]) for mv in moves)
            node.children = []
            for mv in moves:
                cb = b.copy()
                cb.play(*mv)
                k = policy_index(*mv)
                node.children.append((k, _RefNode(cb, float(probs[k]) / total)))
            v1 = v if b.turn == 1 else -v
        for x in path:
            x.n += 1
            x.w += v1
    return root


def reference_visits(board: Board, sims: int, **options) -> np.ndarray:
    out = np.zeros(220, dtype=np.int64)
    for k, ch in reference_tree(board, sims, **options).children:
        out[k] = ch.n
    return out


REFERENCE_POSITIONS = {
    "skip_now": lambda: tiny(SKIP_NOW, 2),
    "skip_after_reply": lambda: tiny(SKIP_AFTER_REPLY, 1),
    "draw_save": lambda: tiny(DRAW_SAVE, 2),
    "opening": lambda: random_position(11, 1),
    "midgame": lambda: random_position(12, 24),
    "late": lambda: random_position(13, 50),
}


@pytest.mark.parametrize("name", sorted(REFERENCE_POSITIONS))
def test_matches_reference_puct(name):
    board = REFERENCE_POSITIONS[name]()
    assert not board.is_over
    m = neural_search(board, 60, hashed_eval)
    expected = reference_visits(board, 60)
    np.testing.assert_array_equal(m.visits(0), expected)


# ---------------------------------------------------------------------------
# Batching


def test_trees_advance_together_and_independently():
    boards = [random_position(s, 2 * s) for s in range(4)]
    sims = [10, 25, 40, 7]
    m = MCTS(4)
    for t, b in enumerate(boards):
        m.set_root(t, b)
        m.start(t, sims[t])
    sizes = drive(m, hashed_eval)
    # Each round takes one leaf from every tree still busy.
    assert sizes[0] == 4 and sizes[-1] == 1 and sizes == sorted(sizes, reverse=True)
    for t, b in enumerate(boards):
        alone = neural_search(b, sims[t], hashed_eval)
        np.testing.assert_array_equal(m.visits(t), alone.visits(0))
        assert m.root_visits(t) == alone.root_visits(0)
        assert m.root_value(t) == pytest.approx(alone.root_value(0))


def check_distinct_leaves(planes, masks):
    rows = {planes[j].tobytes() + masks[j].tobytes() for j in range(len(planes))}
    assert len(rows) == len(planes), "the same leaf twice in one batch"


@pytest.mark.parametrize("leaves_per_tree", [1, 3, 8])
def test_collect_bounds_and_distinct_leaves(leaves_per_tree):
    m = MCTS(5, leaves_per_tree=leaves_per_tree)
    for t in range(5):
        m.set_root(t, Board.new(100 + t))
        m.start(t, 24)
    sizes = drive(m, uniform_eval, check=check_distinct_leaves)
    assert max(sizes) <= m.batch_size == 5 * leaves_per_tree
    assert sizes[0] == 5, "an unexpanded root is one leaf, whatever leaves_per_tree is"
    if leaves_per_tree > 1:
        assert sizes[1] == m.batch_size, "virtual loss spreads the selections"


def test_virtual_loss_gives_distinct_children():
    m = MCTS(1, leaves_per_tree=8)
    b = Board.new(7)
    m.set_root(0, b)
    m.start(0, 9)
    planes, masks = buffers(m)
    assert m.collect(planes, masks) == 1
    m.apply(*uniform_eval(planes[:1], masks[:1]))
    n = m.collect(planes, masks)
    assert n == 8
    check_distinct_leaves(planes[:n], masks[:n])
    m.apply(*uniform_eval(planes[:n], masks[:n]))
    assert sorted(m.visits(0)[m.visits(0) > 0]) == [1] * 8


@pytest.mark.parametrize("leaves_per_tree", [1, 4])
def test_visit_accounting_with_terminal_hits(leaves_per_tree):
    # Tiny positions reach finished games, which are scored without the network.
    m = MCTS(3, leaves_per_tree=leaves_per_tree)
    boards = [tiny(WIN_IN_ONE, 1), tiny(SKIP_AFTER_REPLY, 2), tiny(DRAW_SAVE, 1)]
    for t, b in enumerate(boards):
        m.set_root(t, b)
        m.start(t, 40)
    evaluated = sum(drive(m))
    assert m.terminal_hits > 0
    total = sum(m.root_visits(t) for t in range(3))
    assert total == evaluated + m.terminal_hits, "each simulation is one evaluation or one hit"
    for t in range(3):
        assert m.visits(t).sum() == m.root_visits(t) - 1


@pytest.mark.parametrize("leaves_per_tree", [1, 4])
def test_visits_add_up_with_an_arbitrary_evaluator(leaves_per_tree):
    m = MCTS(2, leaves_per_tree=leaves_per_tree)
    for t in range(2):
        m.set_root(t, random_position(t + 20, 10 * t))
        m.start(t, 48)
    drive(m, hashed_eval)
    for t in range(2):
        assert m.visits(t).sum() == m.root_visits(t) - 1
    before = [m.root_visits(t) for t in range(2)]
    m.start(0, 16)
    drive(m, hashed_eval)
    assert m.root_visits(0) == before[0] + 16 and m.root_visits(1) == before[1]


def test_root_evaluation_is_extra_to_the_simulations():
    # mctx-style: the root is evaluated first, then every simulation adds one child visit.
    m = neural_search(Board.new(3), 50)
    assert m.visits(0).sum() == 50
    assert m.root_visits(0) == 51
    m.start(0, 7)
    drive(m)
    assert m.visits(0).sum() == 57 and m.root_visits(0) == 58


def test_start_twice_before_searching_counts_the_root_once():
    m = MCTS(1)
    m.set_root(0, Board.new(3))
    m.start(0, 5)
    m.start(0, 6)
    drive(m)
    assert m.visits(0).sum() == 11 and m.root_visits(0) == 12


def test_start_zero_and_negative():
    m = MCTS(1)
    m.set_root(0, Board.new(3))
    with pytest.raises(ValueError, match="simulations must be >= 0"):
        m.start(0, -1)
    m.start(0, 0)
    drive(m)
    assert m.root_visits(0) == 1 and m.visits(0).sum() == 0, "only the root's evaluation"


@pytest.mark.parametrize("leaves_per_tree", [1, 2, 8])
def test_leaves_per_tree_does_not_change_the_simulation_count(leaves_per_tree):
    m = MCTS(1, leaves_per_tree=leaves_per_tree)
    m.set_root(0, Board.new(4))
    m.start(0, 10)
    sizes = drive(m)
    assert m.visits(0).sum() == 10 and m.root_visits(0) == 11
    assert sum(sizes) == 11, "one network evaluation per simulation, none wasted"
    m.start(0, 5)
    drive(m)
    assert m.visits(0).sum() == 15


def test_collect_twice_without_apply_raises():
    m = MCTS(2)
    for t in range(2):
        m.set_root(t, Board.new(t))
        m.start(t, 5)
    planes, masks = buffers(m)
    n = m.collect(planes, masks)
    with pytest.raises(RuntimeError, match="collect called twice without apply"):
        m.collect(planes, masks)
    with pytest.raises(RuntimeError, match="a batch of leaves waits for apply"):
        m.play(0, policy_index(*Board.new(0).legal_moves()[0]))
    m.apply(*uniform_eval(planes[:n], masks[:n]))
    assert m.collect(planes, masks) == 2


@pytest.mark.parametrize("call", ["set_root", "run_rollouts", "play"])
def test_tree_changes_refused_while_a_batch_is_pending(call):
    # apply() would otherwise expand node indices of a tree that has changed under it.
    m = MCTS(1)
    b = Board.new(5)
    m.set_root(0, b)
    m.start(0, 20)
    planes, masks = buffers(m)
    for _ in range(10):
        n = m.collect(planes, masks)
        m.apply(*uniform_eval(planes[:n], masks[:n]))
    assert m.collect(planes, masks) == 1
    size = m.tree_size(0)
    with pytest.raises(RuntimeError, match="a batch of leaves waits for apply"):
        if call == "set_root":
            m.set_root(0, b)
        elif call == "run_rollouts":
            m.run_rollouts(0, 10)
        else:
            m.play(0, int(np.argmax(m.visits(0))))
    assert m.tree_size(0) == size
    m.apply(*uniform_eval(planes[:1], masks[:1]))
    drive(m)
    assert m.visits(0).sum() == 20


# ---------------------------------------------------------------------------
# Dirichlet noise


def root_priors_after_expansion(alpha: float, seed, board: Board) -> MCTS:
    m = MCTS(1, dirichlet_alpha=alpha, dirichlet_weight=0.25, seed=seed)
    m.set_root(0, board)
    m.start(0, 1)
    drive(m)
    return m


def test_dirichlet_noise_changes_root_priors_and_keeps_their_sum():
    b = Board.new(8)
    legal = np.zeros(220, dtype=bool)
    legal[list(legal_indices(b))] = True
    plain = root_priors_after_expansion(0.0, 1, b).priors(0)
    np.testing.assert_allclose(plain[legal], 1.0 / legal.sum(), rtol=1e-6)
    noisy = root_priors_after_expansion(0.3, 1, b).priors(0)
    assert noisy.sum() == pytest.approx(1.0, abs=1e-5)
    assert (noisy[legal] > 0).all() and (noisy[~legal] == 0).all()
    assert np.abs(noisy - plain).max() > 1e-3
    # At weight 0.25, a prior moves at most by 0.25 in either direction.
    assert (noisy[legal] >= 0.75 * plain[legal] - 1e-7).all()


def test_dirichlet_noise_is_reproducible_with_a_seed():
    b = Board.new(9)
    runs = [neural_search(b, 64, hashed_eval, dirichlet_alpha=0.5, seed=s) for s in (5, 5, 6)]
    np.testing.assert_array_equal(runs[0].priors(0), runs[1].priors(0))
    np.testing.assert_array_equal(runs[0].visits(0), runs[1].visits(0))
    assert not np.array_equal(runs[0].priors(0), runs[2].priors(0))


def test_play_mixes_fresh_noise_into_the_new_root():
    b = Board.new(10)
    m = neural_search(b, 200, uniform_eval, dirichlet_alpha=0.3, seed=2)
    move = int(np.argmax(m.visits(0)))
    m.play(0, move)
    after = m.priors(0)
    assert after.sum() == pytest.approx(1.0, abs=1e-5)
    nb = b.copy()
    nb.play(*move_tuple(move))
    assert set(np.nonzero(after)[0]) == legal_indices(nb)
    # The network said uniform; the kept node's priors get noise once it becomes the root.
    assert np.abs(after[after > 0] - 1.0 / len(nb.legal_moves())).max() > 1e-3


def test_noise_is_switched_per_tree_by_set_root_and_play():
    """set_root(noise=False) and play(noise=False) leave that root's priors as the network gave
    them (self-play's cheap searches); the other trees of the forest still get noise."""
    b = Board.new(11)
    m = MCTS(2, dirichlet_alpha=0.3, dirichlet_weight=0.25, seed=3)
    m.set_root(0, b, noise=False)
    m.set_root(1, b)
    for t in (0, 1):
        m.start(t, 200)
    drive(m)
    uniform = 1.0 / len(b.legal_moves())
    plain, noisy = m.priors(0), m.priors(1)
    np.testing.assert_allclose(plain[plain > 0], uniform, rtol=1e-6)
    assert np.abs(noisy[noisy > 0] - uniform).max() > 1e-3
    # Through play: the kept subtree's root gets noise only when asked for.
    move = int(np.argmax(m.visits(0)))
    nb = b.copy()
    nb.play(*move_tuple(move))
    m.play(0, move, noise=False)
    m.play(1, move, noise=True)
    after_plain, after_noisy = m.priors(0), m.priors(1)
    np.testing.assert_allclose(after_plain[after_plain > 0], 1.0 / len(nb.legal_moves()),
                               rtol=1e-6)
    assert np.abs(after_noisy[after_noisy > 0] - 1.0 / len(nb.legal_moves())).max() > 1e-3


# ---------------------------------------------------------------------------
# Subtree reuse


def test_play_keep_stats_keeps_the_subtree():
    b = random_position(30, 6)
    m = neural_search(b, 300, hashed_eval)
    visits = m.visits(0)
    move = int(np.argmax(visits))
    size_before = m.tree_size(0)
    m.play(0, move, keep_stats=True)
    after = b.copy()
    after.play(*move_tuple(move))
    assert m.root_visits(0) == visits[move]
    assert m.visits(0).sum() == visits[move] - 1
    assert 1 < m.tree_size(0) < size_before
    assert m.root_board(0)._state_bytes() == after._state_bytes()
    assert str(m.root_board(0)) == str(after)
    m.start(0, 40)
    drive(m, hashed_eval)
    assert m.root_visits(0) == visits[move] + 40, "an evaluated root needs no extra visit"
    assert set(np.nonzero(m.visits(0))[0]) <= legal_indices(after)


def counting(evaluate):
    calls = []

    def wrapped(planes, masks):
        calls.append(len(planes))
        return evaluate(planes, masks)

    return wrapped, calls


def test_play_resets_stats_but_reuses_network_outputs():
    # By default the kept subtree forgets its visits and values but not the network's priors
    # and values: the next search is exactly a fresh one from the new position, with fewer
    # network evaluations.
    b = random_position(33, 6)
    m = neural_search(b, 300, hashed_eval)
    move = int(np.argmax(m.visits(0)))
    size_before = m.tree_size(0)
    m.play(0, move)
    after = b.copy()
    after.play(*move_tuple(move))
    assert m.root_visits(0) == 0 and not m.visits(0).any()
    assert 1 < m.tree_size(0) < size_before
    assert m.root_board(0)._state_bytes() == after._state_bytes()
    evaluate, calls = counting(hashed_eval)
    m.start(0, 60)
    drive(m, evaluate)
    fresh_eval, fresh_calls = counting(hashed_eval)
    fresh = neural_search(after, 60, fresh_eval)
    np.testing.assert_array_equal(m.visits(0), fresh.visits(0))
    assert m.root_visits(0) == fresh.root_visits(0) == 61
    assert m.root_value(0) == pytest.approx(fresh.root_value(0), abs=1e-6)
    assert m.cache_hits > 0
    assert sum(calls) + m.cache_hits + m.terminal_hits == 61
    assert sum(calls) < sum(fresh_calls) == 61 - fresh.terminal_hits


def test_play_unsearched_move_resets_the_tree():
    b = Board.new(31)
    m = neural_search(b, 30)
    visits = m.visits(0)
    move = next(k for k in sorted(legal_indices(b)) if visits[k] == 0)
    m.play(0, move)
    after = b.copy()
    after.play(*move_tuple(move))
    assert m.tree_size(0) == 1 and m.root_visits(0) == 0 and m.visits(0).sum() == 0
    assert m.root_board(0)._state_bytes() == after._state_bytes()
    m.start(0, 10)
    drive(m)
    assert m.root_visits(0) == 11
    assert set(np.nonzero(m.visits(0))[0]) <= legal_indices(after)


@pytest.mark.parametrize("keep_stats", [True, False])
def test_play_twice_follows_the_line(keep_stats):
    b = random_position(32, 4)
    m = neural_search(b, 400, hashed_eval)
    board = b.copy()
    for _ in range(2):
        move = m.best_move(0)
        expected = m.visits(0)[move]
        m.play(0, move, keep_stats=keep_stats)
        board.play(*move_tuple(move))
        assert m.root_visits(0) == (expected if keep_stats else 0)
        assert m.root_board(0)._state_bytes() == board._state_bytes()
        if not keep_stats:
            m.start(0, 100)
            drive(m, hashed_eval)


def test_play_illegal_move_raises():
    b = tiny(TWO_MOVES)
    m = neural_search(b, 10)
    size = m.tree_size(0)
    for bad in (normal(1), normal(5), policy_index(0, 0, 5), normal(9), 220, -1):
        with pytest.raises(ValueError, match=rf"move {bad} is not legal at the root of tree 0"):
            m.play(0, bad)
    assert m.tree_size(0) == size, "a refused move leaves the tree alone"
    assert m.root_board(0)._state_bytes() == b._state_bytes()


def test_play_into_a_finished_game():
    m = neural_search(tiny(WIN_IN_ONE), 20)
    m.play(0, WIN_IN_ONE_MOVE)
    assert m.root_board(0).is_over
    with pytest.raises(ValueError, match="the game of tree 0 is over"):
        m.start(0, 1)
    assert not m.busy()


# ---------------------------------------------------------------------------
# Errors


FINISHED = "x1 o2 ## ## ## ## ## ## ## ##"


def test_start_on_a_finished_game_raises():
    b = Board.from_ascii(FINISHED, fill="##")
    assert b.is_over
    m = MCTS(1)
    m.set_root(0, b)
    with pytest.raises(ValueError, match="the game of tree 0 is over"):
        m.start(0, 10)
    with pytest.raises(ValueError, match="tree 0 has no position to search"):
        m.run_rollouts(0, 10)
    assert not m.busy()


def test_calls_before_set_root_raise():
    m = MCTS(2)
    with pytest.raises(ValueError, match="tree 0 has no root; call set_root first"):
        m.start(0, 1)
    with pytest.raises(ValueError, match="tree 1 has no root; call set_root first"):
        m.play(1, 110)
    with pytest.raises(ValueError, match="tree 0 has no position to search"):
        m.run_rollouts(0, 1)
    assert not m.busy()


def test_queries_before_set_root():
    m = MCTS(1)
    assert m.tree_size(0) == 0 and m.root_value(0) == 0.0 and not m.busy()
    assert not m.visits(0).any() and not m.priors(0).any()
    for call in (m.root_visits, m.root_board, m.best_move):
        with pytest.raises(ValueError, match="tree 0 has no root; call set_root first"):
            call(0)


@pytest.mark.parametrize("call", [
    lambda m, b: m.set_root(2, b),
    lambda m, b: m.set_root(-1, b),
    lambda m, b: m.start(2, 1),
    lambda m, b: m.play(5, 110),
    lambda m, b: m.visits(2),
    lambda m, b: m.priors(-1),
    lambda m, b: m.root_value(2),
    lambda m, b: m.root_visits(3),
    lambda m, b: m.tree_size(2),
    lambda m, b: m.root_board(2),
    lambda m, b: m.run_rollouts(2, 10),
])
def test_tree_index_out_of_range_raises(call):
    m = MCTS(2)
    b = Board.new(1)
    m.set_root(0, b)
    m.set_root(1, b)
    with pytest.raises(IndexError, match=r"tree -?\d+ out of range 0\.\.1"):
        call(m, b)


SHAPE = r"buffers must be \(B, 11, 11, 10\) float32 and \(B, 2, 11, 10\) uint8"
ROOM = "buffers must hold batch_size=4 leaves"
OUTPUTS = r"expected probs \(2, 220\) and values \(2,\)"
DTYPE = "Buffer dtype mismatch, expected 'float' but got 'double'"   # Cython's own check


def test_wrong_buffers_raise():
    m = MCTS(2, leaves_per_tree=2)
    for t in range(2):
        m.set_root(t, Board.new(t))
        m.start(t, 5)
    B = m.batch_size
    good_p = np.zeros((B, 11, 11, 10), np.float32)
    good_m = np.zeros((B, 2, 11, 10), np.uint8)
    bad = [
        (np.zeros((B, 11, 10, 11), np.float32), good_m, SHAPE),         # planes transposed
        (np.zeros((B - 1, 11, 11, 10), np.float32), good_m, ROOM),      # too few rows
        (good_p, np.zeros((B - 1, 2, 11, 10), np.uint8), ROOM),
        (good_p, np.zeros((B, 11, 10, 2), np.uint8), SHAPE),            # mask transposed
        (np.zeros((B, 11, 11, 10), np.float64), good_m, DTYPE),         # wrong dtype
        (np.zeros((B, 11, 11, 20), np.float32)[..., ::2], good_m,       # not contiguous
         "ndarray is not C-contiguous"),
    ]
    for planes, masks, message in bad:
        with pytest.raises(ValueError, match=message):
            m.collect(planes, masks)
    assert m.collect(good_p, good_m) == 2, "two fresh roots, one leaf each"
    for probs, values, message in [
        (np.ones((2, 219), np.float32), np.zeros(2, np.float32), OUTPUTS),
        (np.ones((1, 220), np.float32), np.zeros(2, np.float32), OUTPUTS),
        (np.ones((2, 220), np.float32), np.zeros(1, np.float32), OUTPUTS),
        (np.ones((2, 220), np.float64), np.zeros(2, np.float32), DTYPE),
    ]:
        with pytest.raises(ValueError, match=message):
            m.apply(probs, values)
    m.apply(np.ones((2, 220), np.float32), np.zeros(2, np.float32))


SIZES = "num_trees and leaves_per_tree must be at least 1"
CONSTANTS = r"need c_puct > 0, dirichlet_alpha >= 0, 0 <= dirichlet_weight <= 1"


@pytest.mark.parametrize("kwargs, message", [
    (dict(num_trees=0), SIZES), (dict(num_trees=1, leaves_per_tree=0), SIZES),
    (dict(num_trees=1, c_puct=0.0), CONSTANTS),
    (dict(num_trees=1, dirichlet_alpha=-0.1), CONSTANTS),
    (dict(num_trees=1, dirichlet_weight=1.5), CONSTANTS),
])
def test_bad_constructor_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MCTS(**kwargs)


@pytest.mark.parametrize("num_trees, leaves_per_tree", [
    (2**31 - 1, 1), (1, 2**31 - 1), (2**16, 2**15), (2**31 // 220 + 1, 1),
])
def test_absurd_sizes_raise_before_allocating(num_trees, leaves_per_tree):
    with pytest.raises(ValueError, match=r"num_trees \* leaves_per_tree must be at most"):
        MCTS(num_trees, leaves_per_tree=leaves_per_tree)
    m = MCTS(2)   # the process and the allocator are fine afterwards
    m.set_root(0, Board.new(0))
    assert m.tree_size(0) == 1


# Run in a child process whose address space is capped, so that the allocations really fail:
# first the trees themselves, then (with one small tree) only the leaf slots, which is where
# freeing uninitialised pointers used to crash. A crash would show as a signal, not exit 0.
FAILING_ALLOCATIONS = """
import resource, sys
from pyhexz.game.board import Board
from pyhexz.search.mcts import MCTS
cap = 1 << 30
resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
for _ in range(50):
    for args, kw, what in [((4_000_000,), {}, "search trees"),
                           ((1,), {"leaves_per_tree": 4_000_000}, "a batch of")]:
        try:
            MCTS(*args, **kw)
        except MemoryError as e:
            assert what in str(e), e
        else:
            sys.exit("no MemoryError for " + repr((args, kw)))
m = MCTS(3)
m.set_root(0, Board.new(1))
assert m.run_rollouts(0, 20) == 20
print("survived")
"""


def test_failed_allocation_raises_memory_error_and_is_clean():
    import os
    import subprocess
    import sys
    from pathlib import Path

    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", FAILING_ALLOCATIONS], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "survived" in r.stdout, (r.returncode, r.stderr[-2000:])


def test_repeated_construction_and_destruction_is_clean():
    import gc
    for k in range(300):
        m = MCTS(1 + k % 5, leaves_per_tree=1 + k % 3, seed=k)
        for t in range(m.num_trees):
            m.set_root(t, Board.new(k))
        if k % 2:
            m.run_rollouts(0, 8)
        del m
    gc.collect()


# ---------------------------------------------------------------------------
# Rollout search


@pytest.mark.parametrize("seed, plies", [(40, 0), (41, 1), (42, 17), (43, 40), (44, 60)])
def test_rollouts_visit_only_legal_moves(seed, plies):
    b = random_position(seed, plies)
    if b.is_over:
        pytest.skip("random game ended early")
    legal = legal_indices(b)
    sims = 3 * len(legal) + 1
    m = rollout_search(b, sims, seed=seed)
    visits = m.visits(0)
    assert set(np.nonzero(visits)[0]) == legal, "UCT tries every move once before any twice"
    assert visits.sum() == m.root_visits(0) - 1
    assert -1.0 <= m.root_value(0) <= 1.0
    assert m.root_board(0)._state_bytes() == b._state_bytes()


def test_rollouts_are_deterministic_for_a_seed():
    b = random_position(45, 20)
    a1, a2, other = (rollout_search(b, 1500, seed=s) for s in (3, 3, 4))
    np.testing.assert_array_equal(a1.visits(0), a2.visits(0))
    assert a1.root_value(0) == a2.root_value(0)
    assert a1.tree_size(0) == a2.tree_size(0)
    assert not np.array_equal(a1.visits(0), other.visits(0))


def test_rollouts_respect_max_seconds():
    m = MCTS(1, seed=1)
    m.set_root(0, Board.new(46))
    done = m.run_rollouts(0, 10**9, max_seconds=0.05)
    assert 0 < done < 10**9
    assert m.root_visits(0) == done


@pytest.mark.parametrize("keep_stats", [True, False])
def test_rollouts_continue_after_play(keep_stats):
    b = random_position(47, 10)
    m = rollout_search(b, 1000, seed=1)
    move = int(np.argmax(m.visits(0)))
    kept = m.visits(0)[move]
    m.play(0, move, keep_stats=keep_stats)
    assert m.root_visits(0) == (kept if keep_stats else 0)
    assert m.run_rollouts(0, 200) == 200
    assert m.root_visits(0) == (kept if keep_stats else 0) + 200
    assert m.visits(0).sum() == m.root_visits(0) - 1


def test_rollouts_try_unvisited_moves_in_random_order():
    b = Board.new(3)
    k = len(b.legal_moves())
    tried = set()
    for seed in range(4):
        m = rollout_search(b, 1 + k // 4, seed=seed)
        tried.add(tuple(np.nonzero(m.visits(0))[0]))
    assert len(tried) > 1


# ---------------------------------------------------------------------------
# best_move


def test_best_move_is_the_most_visited():
    checked = 0
    for seed in range(4):
        m = neural_search(random_position(60 + seed, 8), 120, hashed_eval)
        visits = m.visits(0)
        if (visits == visits.max()).sum() == 1:
            assert m.best_move(0) == int(np.argmax(visits))
            checked += 1
    assert checked >= 2


def test_best_move_breaks_ties_by_value():
    # Two simulations visit (0,1) and (0,2) once each; the evaluator makes (0,1) a loss.
    first, second = normal(1), normal(2)

    def evaluate(planes, masks):
        n = len(planes)
        own, theirs = planes[:, 1, 0, 1] == 5, planes[:, 6, 0, 1] == 5
        values = np.where(own, -1.0, np.where(theirs, 1.0, 0.0)).astype(np.float32)
        return np.ones((n, 220), dtype=np.float32), values

    m = neural_search(tiny(EXCLUSIVE), 2, evaluate)
    assert m.visits(0)[first] == m.visits(0)[second] == 1
    assert m.best_move(0) == second
    unsearched = MCTS(1)
    unsearched.set_root(0, tiny(EXCLUSIVE))
    with pytest.raises(ValueError, match="tree 0 has not been searched"):
        unsearched.best_move(0)


# ---------------------------------------------------------------------------
# Tree statistics: depth_stats and root_values against the node arrays


def reference_shape(m: MCTS, t: int) -> dict:
    """The per-depth shape of tree t, computed the slow way from `tree_nodes`: each node's
    depth by walking its parent pointers to the root."""
    nodes = m.tree_nodes(t)
    depths = []
    for i in range(len(nodes["parent"])):
        d, x = 0, i
        while nodes["parent"][x] >= 0:
            x, d = int(nodes["parent"][x]), d + 1
        depths.append(d)
    levels = max(depths) + 1
    out: dict = {"leaf": [0] * levels, "branch": [0] * levels,
                 "visits": [{} for _ in range(levels)]}
    for i, d in enumerate(depths):
        out["branch" if nodes["first_child"][i] >= 0 else "leaf"][d] += 1
        v = int(nodes["visits"][i])
        out["visits"][d][v] = out["visits"][d].get(v, 0) + 1
    return out


@pytest.mark.parametrize("search", ["rollout", "neural", "neural_reused"])
def test_depth_stats_match_the_node_arrays(search):
    b = random_position(11, 12)
    if search == "rollout":
        m = rollout_search(b, 3000)
    else:
        m = neural_search(b, 400, hashed_eval, leaves_per_tree=4)
    if search == "neural_reused":
        # After `play` the subtree is copied breadth first: parents still come first.
        move = int(np.argmax(m.visits(0)))
        m.play(0, move, keep_stats=True)
        m.start(0, 200)
        drive(m, hashed_eval)
    got = m.depth_stats(0)
    assert got == reference_shape(m, 0)
    assert sum(got["leaf"]) + sum(got["branch"]) == m.tree_size(0)
    # Visit counts of 64 and more go through the dict, below through the C array: both occur.
    assert any(v >= 64 for d in got["visits"] for v in d) and 0 in got["visits"][-1]


def test_root_values_are_the_mover_mean_values_of_the_root_moves():
    boards = [random_position(seed, plies) for seed in range(1, 5) for plies in (9, 10)]
    assert {b.turn for b in boards} == {1, 2}   # both seats
    for b in boards:
        m = neural_search(b, 200, hashed_eval)
        nodes = m.tree_nodes(0)
        first, count = int(nodes["first_child"][0]), int(nodes["nchildren"][0])
        sign = 1 if b.turn == 1 else -1   # value_sum is from player 1's view
        values = m.root_values(0)
        for i in range(first, first + count):
            n = int(nodes["visits"][i])
            want = sign * float(nodes["value_sum"][i]) / n if n else 0.0
            assert values[nodes["move"][i]] == pytest.approx(want, abs=1e-6)
        assert not values[[k for k in range(220) if k not in legal_indices(b)]].any()
