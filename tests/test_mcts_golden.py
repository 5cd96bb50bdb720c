"""Golden-tree regression tests for the compiled search, in the style of DeepMind's mctx.

Each case searches a fixed position with a deterministic evaluator (fixed priors, a value that
is a fixed function of the encoded position, no Dirichlet noise) or with seeded random
rollouts, and compares the resulting tree with the golden values in tests/golden/mcts_trees.json:
the root's visits and Q per move, its value, the tree size and every visited node (index,
parent, move, visits, W). Any change to selection (PUCT or UCT), expansion, virtual losses or
backup that changes a tree fails here, however small.

The golden values were written once by this file's `regenerate()` from the implementation of
the time and are only to be rewritten for a deliberate change of the search:

    python tests/test_mcts_golden.py --regenerate

How they were checked by hand: the `test_golden_*_by_hand` tests below re-derive a few of
the stored entries from the formulas alone (the priors, the evaluator's value of a position
and PUCT's first choices, each written out in a comment), so the golden file is not merely
whatever the code produced.

The options of issue 15 have cases of their own (fpu_*, forced_*, cache_*, solver_*,
gumbel_*), written when they were added; the cases above did not change, since every option is
off unless asked for. Their hand checks recompute what each option adds from the paper's
formulas in Python: the pruned policy target (Wu 2019), the improved policy and the sequential
halving visit counts (Danihelka et al. 2022, as mctx computes them), the solved nodes' values
(by exhaustive search), and that the cache changed nothing but the number of network calls.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from pyhexz.game.board import Board, policy_index, policy_move_tuple
from pyhexz.search.mcts import MCTS
from pyhexz.search.solver import moves_left_of
from pyhexz.train.arena import load_openings

GOLDEN_FILE = Path(__file__).parent / "golden" / "mcts_trees.json"

# Two root moves, (0,1) and (0,2), each a 5 that blocks the other for good and leaves x stuck;
# o then plays alone in a region of 9 cells (row 1 is open under it), so the tree goes a few
# plies deep. Everything else is rock; nobody has flags left.
TINY = "x4 .. .. x4 ## o1 .. .. .. ..\n  ## ## ## ## .. .. .. .. .."
TINY_MOVES = (policy_index(0, 1, 0), policy_index(0, 2, 0))   # 111, 112


# From tests/test_mcts.py: x wins only by (0,5), which takes o's only cell; o is then stuck
# while x trails, so x moves again and again and wins 19:18. Other moves let o take (0,5).
SKIP_NOW = "x1 .. .. .. x4 .. o4 o5 o5 o4"
SKIP_NOW_MOVE = policy_index(0, 5, 0)   # 115


def tiny_board() -> Board:
    return Board.from_ascii(TINY, turn=1, flags_left=(0, 0), fill="##")


def skip_now_board() -> Board:
    return Board.from_ascii(SKIP_NOW, turn=1, flags_left=(0, 0), fill="##")


def opening_board() -> Board:
    """The first opening of the hexz fixture file: a real, wide position."""
    return load_openings()[0]


# Fixed priors: policy index k gets 1 + k % 5 before the engine normalises over the legal moves.
PRIOR_ROW = (1 + np.arange(220) % 5).astype(np.float32)


def fixed_value(planes: np.ndarray) -> float:
    """A fixed function of the encoded position, a multiple of 1/8 (exact in float32)."""
    return (int(np.count_nonzero(planes)) % 9 - 4) / 8


def fixed_evaluator(planes: np.ndarray, masks: np.ndarray):
    n = len(planes)
    values = np.array([fixed_value(p) for p in planes], dtype=np.float32)
    return np.tile(PRIOR_ROW, (n, 1)), values


def neural(board: Board, sims: int, leaves_per_tree: int, **options) -> MCTS:
    m = MCTS(1, c_puct=1.5, leaves_per_tree=leaves_per_tree, **options)
    m.set_root(0, board)
    m.start(0, sims)
    planes = np.zeros((m.batch_size, 11, 11, 10), np.float32)
    masks = np.zeros((m.batch_size, 2, 11, 10), np.uint8)
    while m.busy():
        n = m.collect(planes, masks)
        probs, values = fixed_evaluator(planes[:n], masks[:n])
        m.apply(probs, values)
    return m


def rollouts(board: Board, sims: int, seed: int) -> MCTS:
    m = MCTS(1, c_puct=1.0, seed=seed)
    m.set_root(0, board)
    assert m.run_rollouts(0, sims) == sims
    return m


def endgame_board() -> Board:
    """A real endgame: a random game (seed 4) once at most 16 moves are left, both players'
    together; the solver (at 12) proves some of the tree's leaves, not all."""
    b = Board.new(4)
    k = 0
    while moves_left_of(b) > 16:
        b.random_move(4000 + k)
        k += 1
    return b


CASES: dict[str, Callable[[], MCTS]] = {
    "puct_tiny": lambda: neural(tiny_board(), 24, 1),
    "puct_tiny_virtual_loss": lambda: neural(tiny_board(), 24, 4),
    "puct_opening": lambda: neural(opening_board(), 32, 1),
    "uct_skip_now_seed7": lambda: rollouts(skip_now_board(), 48, seed=7),
    "uct_opening_seed7": lambda: rollouts(opening_board(), 300, seed=7),
    # The options of issue 15, each alone.
    "fpu_tiny": lambda: neural(tiny_board(), 24, 1, fpu_reduction=0.25,
                               fpu_reduction_root=0.1),
    "fpu_opening": lambda: neural(opening_board(), 32, 1, fpu_reduction=0.25,
                                  fpu_reduction_root=0.1),
    "forced_opening": lambda: neural(opening_board(), 64, 1, forced_playouts=2.0),
    "cache_tiny": lambda: neural(tiny_board(), 24, 1, eval_cache=64),
    "cache_tiny_virtual_loss": lambda: neural(tiny_board(), 24, 4, eval_cache=64),
    "solver_endgame": lambda: neural(endgame_board(), 40, 1, solver_moves=12),
    "gumbel_opening_seed5": lambda: neural(opening_board(), 48, 1, gumbel_k=16, seed=5),
    "gumbel_tiny_virtual_loss_seed5": lambda: neural(tiny_board(), 24, 4, gumbel_k=4, seed=5),
}


def summary(m: MCTS) -> dict:
    """What the golden file holds about a searched tree (JSON types only); with an option of
    issue 15 on, also what that option adds (policy target, Gumbel move, solved nodes, cache
    hits)."""
    t = m.tree_nodes(0)
    root, turn = 0, int(t["turn"][0])
    sign = 1.0 if turn == 1 else -1.0
    kids = range(t["first_child"][root], t["first_child"][root] + t["nchildren"][root])
    extra: dict = {}
    if m.forced_playouts or m.gumbel_k:
        target = m.policy_target(0)
        extra["policy_target"] = [[int(k), float(target[k])] for k in np.flatnonzero(target)]
    if m.gumbel_k:
        extra["gumbel_move"] = int(m.gumbel_move(0))
    if m.solver_moves:
        extra["solved_nodes"] = [int(i) for i in np.flatnonzero(t["terminal"] == 2)]
        extra["solves"] = int(m.solves)
    if m.eval_cache:
        extra["transposition_hits"] = int(m.transposition_hits)
    return extra | {
        "root_visits": int(m.root_visits(0)),
        "root_value": float(m.root_value(0)),
        "tree_size": int(m.tree_size(0)),
        "best_move": int(m.best_move(0)),
        # Per root move: [move, visits, Q for the player to move at the root or null, prior].
        "root_children": [
            [int(t["move"][i]), int(t["visits"][i]),
             float(sign * t["value_sum"][i] / t["visits"][i]) if t["visits"][i] else None,
             float(t["prior"][i])]
            for i in kids],
        # Every visited node: [index, parent, move, visits, W (player 1's view)].
        "visited_nodes": [
            [i, int(t["parent"][i]), int(t["move"][i]), int(t["visits"][i]),
             float(t["value_sum"][i])]
            for i in range(len(t["visits"])) if t["visits"][i] > 0],
    }


def load_golden() -> dict:
    return json.loads(GOLDEN_FILE.read_text())


def regenerate() -> None:
    GOLDEN_FILE.parent.mkdir(exist_ok=True)
    golden = {name: summary(make()) for name, make in CASES.items()}
    GOLDEN_FILE.write_text(json.dumps(golden, indent=1) + "\n")


def assert_matches(got: dict, want: dict) -> None:
    """Counts and moves exactly; values to float32 precision (libm may differ in the last bit,
    which cannot change a visit here without the counts showing it)."""
    assert sorted(got) == sorted(want)
    for key in ("root_visits", "tree_size", "best_move", "gumbel_move", "solved_nodes",
                "solves", "transposition_hits"):
        assert got.get(key) == want.get(key), key
    if "policy_target" in want:
        assert [k for k, _ in got["policy_target"]] == [k for k, _ in want["policy_target"]]
        assert [v for _, v in got["policy_target"]] == pytest.approx(
            [v for _, v in want["policy_target"]], rel=1e-5, abs=1e-7)
    assert got["root_value"] == pytest.approx(want["root_value"], rel=1e-6, abs=1e-7)
    for name in ("root_children", "visited_nodes"):
        g, w = got[name], want[name]
        assert len(g) == len(w), name
        for gi, wi in zip(g, w, strict=True):
            assert [x for x in gi if isinstance(x, int)] == [x for x in wi if isinstance(x, int)]
            assert [x for x in gi if not isinstance(x, int)] == pytest.approx(
                [x for x in wi if not isinstance(x, int)], rel=1e-6, abs=1e-7), (name, gi, wi)


@pytest.fixture(scope="module")
def golden() -> dict:
    return load_golden()


@pytest.mark.parametrize("name", sorted(CASES))
def test_tree_matches_golden(name: str, golden: dict) -> None:
    assert_matches(summary(CASES[name]()), golden[name])


def test_golden_file_has_every_case(golden: dict) -> None:
    assert sorted(golden) == sorted(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_trees_are_consistent(name: str, golden: dict) -> None:
    """Bookkeeping every stored tree must satisfy, whatever the selection rule."""
    g = golden[name]
    # The root's first visit is its own evaluation (PUCT) or its own playout (UCT, before it
    # has children); every later simulation goes through one root child.
    assert sum(n for _, n, _, _ in g["root_children"]) == g["root_visits"] - 1
    assert sum(p for *_, p in g["root_children"]) == pytest.approx(1.0, abs=1e-6)
    nodes = {i: (parent, n) for i, parent, _, n, _ in g["visited_nodes"]}
    assert nodes[0] == (-1, g["root_visits"])
    # A visited node's parent was visited at least as often, and more often than its children.
    for parent, n in nodes.values():
        if parent >= 0:
            assert nodes[parent][1] > n
    most = max(n for _, n, _, _ in g["root_children"])
    assert g["best_move"] in [mv for mv, n, _, _ in g["root_children"] if n == most]


def test_golden_puct_tiny_by_hand(golden: dict) -> None:
    g = golden["puct_tiny"]
    a, b = TINY_MOVES
    # Priors: 1 + 111 % 5 = 2 and 1 + 112 % 5 = 3, normalised over the two legal moves.
    children = {mv: (n, q, p) for mv, n, q, p in g["root_children"]}
    assert children[a][2] == pytest.approx(0.4) and children[b][2] == pytest.approx(0.6)
    # The root's first visit is its own evaluation: W(root) starts at fixed_value(root), x to
    # move, so player 1's view is that value itself.
    root = tiny_board()
    v_root = fixed_value(root.encode()[0])
    # First simulation: both children unvisited, each scored Q(root) + 1.5 * P * sqrt(1), so
    # the higher prior, b (0.6), is taken and evaluated. After b, x is stuck and o moves.
    after_b = root.copy()
    after_b.play(0, 2, 0)
    assert after_b.turn == 2
    v_b = fixed_value(after_b.encode()[0])      # o's view; player 1's view is -v_b
    m1 = neural(tiny_board(), 1, 1)
    assert m1.visits(0)[b] == 1 and m1.visits(0)[a] == 0
    assert m1.root_value(0) == pytest.approx((v_root - v_b) / 2)
    # Second simulation, N = 2: a unvisited scores Q(root) + 1.5 * 0.4 * sqrt(2); b scores
    # Q(b) + 1.5 * 0.6 * sqrt(2) / 2 with Q(b) = -v_b for x.
    q_root = (v_root - v_b) / 2
    score_a = q_root + 1.5 * 0.4 * math.sqrt(2)
    score_b = -v_b + 1.5 * 0.6 * math.sqrt(2) / 2
    m2 = neural(tiny_board(), 2, 1)
    assert m2.visits(0)[a if score_a > score_b else b] == (1 if score_a > score_b else 2)
    # And in the golden tree: the first node after the root's children that was visited is
    # the first expansion below b (children are stored in order of expansion), and the root's
    # W is the sum of every evaluation: v_root, then each simulation's leaf value.
    visited = {i: (parent, mv, n, w) for i, parent, mv, n, w in g["visited_nodes"]}
    assert visited[0][3] == pytest.approx(
        v_root + sum(w for i, (parent, _, _, w) in visited.items() if parent == 0))
    b_node = next(i for i, (parent, mv, _, _) in visited.items() if parent == 0 and mv == b)
    assert visited[b_node][2] == children[b][0]
    assert children[b][1] == pytest.approx(visited[b_node][3] / visited[b_node][2])


def test_golden_uct_skip_now_by_hand(golden: dict) -> None:
    g = golden["uct_skip_now_seed7"]
    # Three root moves, (0,1), (0,3) and (0,5); only (0,5) wins (see SKIP_NOW), so UCT must
    # spend most of its 48 simulations there and call it best.
    children = {mv: (n, q) for mv, n, q, _ in g["root_children"]}
    assert sorted(children) == [111, 113, SKIP_NOW_MOVE]
    assert g["best_move"] == SKIP_NOW_MOVE
    assert children[SKIP_NOW_MOVE][0] > 48 // 2 and children[SKIP_NOW_MOVE][1] > 0
    # UCT tries every move once before any twice: equal uniform priors, every move visited.
    assert all(n >= 1 for n, _ in children.values())
    assert all(p == pytest.approx(1 / 3) for *_, p in g["root_children"])
    # Rollouts end in finished games, so every W is a sum of +1 / 0 / -1 outcomes from player
    # 1's view: an integer, and |W| <= visits.
    nodes = g["visited_nodes"]
    for _, _, _, n, w in nodes:
        assert w == int(w) and abs(w) <= n
    # The root's visits are exactly the 48 simulations: the first was a playout from the root
    # itself (one outcome), every later one went through a child.
    assert nodes[0][3] == 48
    assert abs(nodes[0][4] - sum(w for _, parent, _, _, w in nodes if parent == 0)) <= 1
    # Q for x at the root is W / n of each child, as stored.
    for mv, (n, q) in children.items():
        w = next(w for _, parent, m, _, w in nodes if parent == 0 and m == mv)
        assert q == pytest.approx(w / n)


# ---------------------------------------------------------------------------
# The options of issue 15, checked by hand


def stats_of(g: dict) -> list[tuple[int, int, float, float]]:
    """A golden tree's root children as (move, visits, Q or 0, prior)."""
    return [(mv, n, q if q is not None else 0.0, p) for mv, n, q, p in g["root_children"]]


def test_golden_cache_changed_only_the_network_calls(golden: dict) -> None:
    # With one leaf per tree, a leaf served from the cache is backed up exactly as the
    # network's answer would have been: the same tree, fewer network calls.
    cached = dict(golden["cache_tiny"])
    assert cached.pop("transposition_hits") > 0
    assert cached == golden["puct_tiny"]


def test_golden_fpu_tiny_by_hand(golden: dict) -> None:
    g = golden["fpu_tiny"]
    a, b = TINY_MOVES
    root = tiny_board()
    v_root = fixed_value(root.encode()[0])
    after_b = root.copy()
    after_b.play(0, 2, 0)
    v_b = fixed_value(after_b.encode()[0])
    # First simulation: nothing visited, no reduction: b, the higher prior, as without FPU.
    # Second, N = 2: a is valued at Q(root) less 0.1 (the root's reduction) * sqrt(P(b)).
    q_root = (v_root - v_b) / 2
    score_a = q_root - 0.1 * math.sqrt(0.6) + 1.5 * 0.4 * math.sqrt(2)
    score_b = -v_b + 1.5 * 0.6 * math.sqrt(2) / 2
    m2 = neural(tiny_board(), 2, 1, fpu_reduction=0.25, fpu_reduction_root=0.1)
    assert m2.visits(0)[a if score_a > score_b else b] == (1 if score_a > score_b else 2)
    # The reduction makes the search narrower than plain PUCT's on the same position.
    assert g["tree_size"] < golden["puct_tiny"]["tree_size"]


def test_golden_forced_playouts_by_hand(golden: dict) -> None:
    from test_root_options import pruned_by_hand
    g = golden["forced_opening"]
    stats = stats_of(g)
    total = sum(n for _, n, _, _ in stats)
    for _, n, _, p in stats:
        assert n == 0 or n >= math.floor(math.sqrt(2.0 * p * (total - 1)))
    want = pruned_by_hand(stats, 2.0, 1.5, g["root_visits"])
    got = dict((mv, v) for mv, v in g["policy_target"])
    assert sorted(got) == sorted(mv for mv, v in want.items() if v > 0)
    for mv, v in got.items():
        assert v == pytest.approx(want[mv], rel=1e-4)


def test_golden_gumbel_by_hand(golden: dict) -> None:
    from test_root_options import improved_policy_by_hand, visits_by_schedule
    g = golden["gumbel_opening_seed5"]
    stats = stats_of(g)
    visits = sorted((n for _, n, _, _ in stats if n), reverse=True)
    assert visits == visits_by_schedule(min(16, len(stats)), 48)
    want = improved_policy_by_hand(stats, fixed_value(opening_board().encode()[0]))
    got = dict((mv, v) for mv, v in g["policy_target"])
    for mv, p in want.items():
        assert got.get(mv, 0.0) == pytest.approx(p, rel=1e-3, abs=1e-6)
    assert g["gumbel_move"] in [mv for mv, n, _, _ in stats if n == visits[0]]


def test_golden_solver_by_hand(golden: dict) -> None:
    from test_solver import exact_value
    g = golden["solver_endgame"]
    nodes = {i: (parent, mv, n, w) for i, parent, mv, n, w in g["visited_nodes"]}
    assert g["solved_nodes"] and set(g["solved_nodes"]) <= set(nodes)
    for i in g["solved_nodes"]:
        # Replay the path from the root and solve the position by exhaustive search: every
        # visit of the node backed up that exact value (W is player 1's view).
        path = []
        x = i
        while x != 0:
            path.append(nodes[x][1])
            x = nodes[x][0]
        b = endgame_board()
        for mv in reversed(path):
            b.play(*policy_move_tuple(mv))
        value = exact_value(b)
        _, _, n, w = nodes[i]
        assert w == n * (value if b.turn == 1 else -value)


if __name__ == "__main__":
    if sys.argv[1:] == ["--regenerate"]:
        regenerate()
        print(f"wrote {GOLDEN_FILE}")
    else:
        print(__doc__)
