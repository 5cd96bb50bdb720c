"""Tests for the search options that change how the tree chooses: first play urgency (FPU)
reduction, KataGo's forced playouts with policy target pruning, and the Gumbel root with
sequential halving (pyhexz.search.mcts).

Each is checked against a Python reference written from its formula: tests/test_mcts.py's
reference PUCT with FPU and forced playouts, the pruning formula of Wu 2019 section 3.1, and
mctx's completed-Q transform and improved policy for the Gumbel root. Hand-worked small
cases pin down the arithmetic; the golden trees (tests/test_mcts_golden.py) pin down whole
searches.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from pyhexz.game.board import Board
from pyhexz.search.driver import SearchConfig, TreeConfig, new_forest
from pyhexz.search.mcts import MCTS, considered_visits
from test_mcts import (
    SIGN_CASES,
    TWO_MOVES,
    A,
    B,
    child_visits_by_root_visits,
    constant_eval,
    drive,
    hashed_eval,
    hashed_eval_one,
    neural_search,
    random_position,
    reference_visits,
    tiny,
    uniform_eval,
)

POSITIONS = {
    "opening": lambda: random_position(11, 1),
    "midgame": lambda: random_position(12, 24),
    "late": lambda: random_position(13, 50),
}


def root_stats(m: MCTS, t: int = 0) -> list[tuple[int, int, float, float]]:
    """(move, visits, Q for the root's mover or 0, prior) of every root child."""
    nodes = m.tree_nodes(t)
    sign = 1.0 if nodes["turn"][0] == 1 else -1.0
    first, k = nodes["first_child"][0], nodes["nchildren"][0]
    return [(int(nodes["move"][i]), int(nodes["visits"][i]),
             float(sign * nodes["value_sum"][i] / nodes["visits"][i]) if nodes["visits"][i]
             else 0.0, float(nodes["prior"][i])) for i in range(first, first + k)]


# ---------------------------------------------------------------------------
# First play urgency reduction


@pytest.mark.parametrize("seat", [1, 2])
def test_fpu_reduction_by_hand(seat):
    # TWO_MOVES with P(A) = 0.6, P(B) = 0.4, every leaf worth +0.5 for its mover (see
    # test_mcts.test_known_small_tree). At N=2, after A's visit, Q(root) = 0 and Q(A) = -0.5:
    #   fpu 0:   B: 0 + 1.5 * 0.4 * 1.414 = 0.85 > A: -0.5 + 0.9 * 1.414 / 2 = 0.14   -> B
    #   fpu 0.8: B: 0 - 0.8 * sqrt(0.6) + 0.85 = 0.23 > 0.14                         -> B
    #   fpu 1.0: B: 0 - 1.0 * sqrt(0.6) + 0.85 = 0.07 < 0.14                         -> A
    evaluate = constant_eval({A: 0.6, B: 0.4}, 0.5)
    for fpu, second in ((0.0, (1, 1)), (0.8, (1, 1)), (1.0, (2, 0))):
        m = MCTS(1, fpu_reduction_root=fpu)
        m.set_root(0, tiny(TWO_MOVES, seat))
        m.start(0, 2)
        drive(m, evaluate)
        assert (int(m.visits(0)[A]), int(m.visits(0)[B])) == second, fpu
    # Below the root the other setting applies: fpu_reduction alone leaves the root as it was.
    plain = child_visits_by_root_visits(tiny(TWO_MOVES, seat), evaluate, 5)
    m = MCTS(1, fpu_reduction=1.0)
    m.set_root(0, tiny(TWO_MOVES, seat))
    m.start(0, 2)
    drive(m, evaluate)
    assert (int(m.visits(0)[A]), int(m.visits(0)[B])) == plain[3]


@pytest.mark.parametrize("name", sorted(POSITIONS))
@pytest.mark.parametrize("fpu, fpu_root", [(0.2, 0.0), (0.25, 0.1), (0.0, 0.3)])
def test_fpu_matches_the_reference(name, fpu, fpu_root):
    board = POSITIONS[name]()
    m = neural_search(board, 60, hashed_eval, fpu_reduction=fpu, fpu_reduction_root=fpu_root)
    expected = reference_visits(board, 60, fpu=fpu, fpu_root=fpu_root)
    np.testing.assert_array_equal(m.visits(0), expected)


def test_fpu_reduction_narrows_the_search():
    # Unvisited moves look worse the more prior mass has been looked at: fewer get tried.
    board = random_position(11, 1)
    wide = neural_search(board, 200, hashed_eval)
    narrow = neural_search(board, 200, hashed_eval, fpu_reduction=0.3, fpu_reduction_root=0.3)
    assert np.count_nonzero(narrow.visits(0)) < np.count_nonzero(wide.visits(0))
    assert narrow.tree_size(0) < wide.tree_size(0)


# ---------------------------------------------------------------------------
# Forced playouts and policy target pruning


@pytest.mark.parametrize("name", sorted(POSITIONS))
def test_forced_playouts_match_the_reference(name):
    board = POSITIONS[name]()
    m = neural_search(board, 80, hashed_eval, forced_playouts=2.0)
    expected = reference_visits(board, 80, forced=2.0)
    np.testing.assert_array_equal(m.visits(0), expected)


def test_forced_playouts_only_at_the_root():
    board = random_position(12, 24)
    m = neural_search(board, 200, uniform_eval, forced_playouts=2.0)
    stats = root_stats(m)
    total = sum(n for _, n, _, _ in stats)
    for _, n, _, p in stats:
        # A visited move got its forced share (up to the one simulation that may be owed).
        assert n == 0 or n >= math.floor(math.sqrt(2.0 * p * (total - 1)))


def pruned_by_hand(stats, k: float, c_puct: float, root_visits: int) -> dict[int, float]:
    """Wu 2019, 3.1: c* the most visited child; every other child c loses up to
    sqrt(k * P(c) * N) visits, but keeps at least the visits at which
    Q(c) + c_puct * P(c) * sqrt(N_root) / (1 + n) = PUCT(c*); one visit or less prunes it."""
    total = sum(n for _, n, _, _ in stats)
    best = max(stats, key=lambda s: (s[1], s[2]))
    scale = c_puct * math.sqrt(root_visits)
    puct_best = best[2] + scale * best[3] / (1 + best[1])
    out = {}
    for mv, n, q, p in stats:
        if mv == best[0] or n == 0:
            out[mv] = float(n)
            continue
        gap = puct_best - q
        wanted = scale * p / gap - 1 if gap > 0 else n
        kept = min(max(n - math.sqrt(k * p * total), wanted), n)
        out[mv] = kept if kept > 1 else 0.0
    return out


@pytest.mark.parametrize("name", sorted(POSITIONS))
def test_policy_target_prunes_as_the_paper_says(name):
    m = neural_search(POSITIONS[name](), 150, hashed_eval, forced_playouts=2.0)
    target = m.policy_target(0)
    want = pruned_by_hand(root_stats(m), 2.0, 1.5, m.root_visits(0))
    for mv, v in want.items():
        assert target[mv] == pytest.approx(v, rel=1e-4, abs=1e-4), mv
    assert np.count_nonzero(target) < np.count_nonzero(m.visits(0)), "something was pruned"
    best = m.best_move(0)
    assert target[best] == m.visits(0)[best], "the most visited move keeps every visit"


def test_policy_target_without_options_is_the_visits():
    m = neural_search(random_position(12, 24), 50, hashed_eval)
    np.testing.assert_array_equal(m.policy_target(0), m.visits(0).astype(np.float32))


# ---------------------------------------------------------------------------
# The Gumbel root


def test_sequential_halving_schedule_by_hand():
    # mctx's get_sequence_of_considered_visits. 4 moves, 10 simulations: ceil(log2 4) = 2
    # rounds; round 1 gives each of 4 moves 10 // (2 * 4) = 1 visit, then 2 moves get
    # 10 // (2 * 2) = 2 visits each per round until the simulations run out.
    assert considered_visits(4, 10) == [0, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    # 16 moves, 64 simulations: 4 rounds of 16 (1 each), 8 (2 each: 64 // 32), 4 (4 each),
    # 2 (8 each), then the last 2 keep going.
    seq = considered_visits(16, 64)
    assert seq[:16] == [0] * 16
    assert seq[16:32] == [1] * 8 + [2] * 8
    assert seq[32:48] == [3] * 4 + [4] * 4 + [5] * 4 + [6] * 4
    assert seq[48:64] == [7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13, 14, 14]
    assert considered_visits(1, 5) == [0, 1, 2, 3, 4]
    assert considered_visits(3, 0) == []
    with pytest.raises(ValueError):
        considered_visits(0, 5)


def visits_by_schedule(m: int, n: int) -> list[int]:
    """The visit counts sequential halving ends with: at each simulation the move chosen is
    one of those with exactly the scheduled count, so the counts follow the schedule."""
    counts = [0] * m
    for target in considered_visits(m, n):
        counts[counts.index(target)] += 1
    return sorted(counts, reverse=True)


@pytest.mark.parametrize("k, sims", [(16, 200), (4, 50), (8, 30), (32, 100)])
def test_gumbel_visits_follow_sequential_halving(k, sims):
    # k considered moves at most: with fewer legal moves, all of them (see the batch test).
    board = random_position(11, 1)      # 84 moves, no finished games in reach
    m = neural_search(board, sims, hashed_eval, gumbel_k=k, seed=3)
    visits = sorted(m.visits(0)[m.visits(0) > 0].tolist(), reverse=True)
    assert visits == visits_by_schedule(k, sims)
    assert m.gumbel_move(0) in np.flatnonzero(m.visits(0) == max(visits))


def test_gumbel_root_samples_the_prior():
    # With every value 0, sigma(completed Q) is 0 for every move, and the survivor is the
    # argmax of g + logit: the Gumbel-max trick, a draw from the prior itself.
    board = tiny(TWO_MOVES)
    evaluate = constant_eval({A: 0.7, B: 0.3}, 0.0)
    m = MCTS(1, gumbel_k=2, seed=11)
    chosen = []
    for _ in range(2000):
        m.set_root(0, board)
        m.start(0, 2)
        drive(m, evaluate)
        chosen.append(m.gumbel_move(0))
    share = chosen.count(A) / len(chosen)
    assert 0.66 < share < 0.74    # 0.7 +- 3.5 standard deviations of 2000 draws


@pytest.mark.parametrize("seat", [1, 2])
@pytest.mark.parametrize("name", sorted(SIGN_CASES))
def test_gumbel_finds_the_good_move(name, seat):
    text, good, _ = SIGN_CASES[name]
    m = neural_search(tiny(text, seat), 64, uniform_eval, gumbel_k=16, seed=seat)
    assert m.gumbel_move(0) == good


def mixed_value(stats, raw: float) -> float:
    visited = [(n, q, max(p, np.finfo(np.float32).tiny)) for _, n, q, p in stats if n > 0]
    total = sum(n for n, _, _ in visited)
    if not total:
        return raw
    weighted = sum(p * q for _, q, p in visited) / sum(p for _, _, p in visited)
    return (raw + total * weighted) / (total + 1)


def improved_policy_by_hand(stats, raw: float) -> dict[int, float]:
    """mctx: softmax(logits + sigma(completed Q)), sigma(q) = (50 + max visits) * 0.1 * q with
    q rescaled to [0, 1] over the completed Qs and the mixed value."""
    v = mixed_value(stats, raw)
    completed = [q if n > 0 else v for _, n, q, _ in stats]
    lo, hi = min(completed + [v]), max(completed + [v])
    scale = (50 + max(n for _, n, _, _ in stats)) * 0.1 / max(hi - lo, 1e-8)
    z = [math.log(max(p, np.finfo(np.float32).tiny)) + (q - lo) * scale
         for (_, _, _, p), q in zip(stats, completed, strict=True)]
    top = max(z)
    e = [math.exp(x - top) for x in z]
    return {mv: x / sum(e) for (mv, _, _, _), x in zip(stats, e, strict=True)}


@pytest.mark.parametrize("name", sorted(POSITIONS))
def test_improved_policy_as_mctx_defines_it(name):
    board = POSITIONS[name]()
    m = neural_search(board, 48, hashed_eval, gumbel_k=8, seed=5)
    _, raw = hashed_eval_one(board.encode()[0])     # the network's value at the root
    want = improved_policy_by_hand(root_stats(m), raw)
    target = m.policy_target(0)
    assert target.sum() == pytest.approx(1.0, abs=1e-5)
    for mv, p in want.items():
        assert target[mv] == pytest.approx(p, rel=1e-3, abs=1e-6), mv
    # The search's best move (most visits, better Q) gains probability against its prior.
    best = m.best_move(0)
    assert target[best] > m.priors(0)[best]


def test_gumbel_move_is_the_best_survivor():
    # Recomputes the survivor from the tree: among the most visited moves, the one with the
    # highest g + logit + sigma(completed Q). The Gumbel noise g is what the search's seeded
    # generator drew when the root was expanded: its first draw seeds the C generator, the
    # root's noise is the next.
    board = random_position(13, 50)
    seed = 17
    m = neural_search(board, 40, hashed_eval, gumbel_k=16, seed=seed)
    stats = root_stats(m)
    g = np.random.default_rng(seed)
    g.integers(0, 2**63)
    noise = g.gumbel(size=len(stats))
    _, raw = hashed_eval_one(board.encode()[0])
    policy = improved_policy_by_hand(stats, raw)
    # log(softmax(z)) = z - const: the improved policy's log is logit + sigma up to a constant.
    most = max(n for _, n, _, _ in stats)
    score = {mv: noise[i] + math.log(policy[mv])
             for i, (mv, n, _, _) in enumerate(stats) if n == most}
    assert m.gumbel_move(0) == max(score, key=score.get)


@pytest.mark.parametrize("leaves_per_tree", [1, 4])
def test_gumbel_in_a_batch_of_trees(leaves_per_tree):
    m = MCTS(3, leaves_per_tree=leaves_per_tree, gumbel_k=8, dirichlet_alpha=0.3, seed=2)
    boards = [random_position(s, 10 * s) for s in range(3)]
    for t, b in enumerate(boards):
        m.set_root(t, b)
        m.start(t, 40)
    drive(m, hashed_eval)
    for t, b in enumerate(boards):
        visits = m.visits(t)
        assert visits.sum() == 40
        considered = min(8, len(b.legal_moves()))
        assert sorted(visits[visits > 0].tolist(), reverse=True) == visits_by_schedule(
            considered, 40)
        # No Dirichlet noise at a Gumbel root: the priors are the network's.
        probs, _ = hashed_eval_one(b.encode()[0])
        legal = m.priors(t) > 0
        np.testing.assert_allclose(m.priors(t)[legal], probs[legal] / probs[legal].sum(),
                                   rtol=1e-5)
        assert visits[m.gumbel_move(t)] == visits.max()


def test_gumbel_after_play_draws_fresh_noise_and_schedule():
    m = MCTS(1, gumbel_k=4, seed=1)
    board = random_position(12, 24)
    m.set_root(0, board)
    m.start(0, 30)
    drive(m, hashed_eval)
    m.play(0, m.gumbel_move(0))
    m.start(0, 20)
    drive(m, hashed_eval)
    visits = m.visits(0)
    assert visits.sum() == 20
    assert sorted(visits[visits > 0].tolist(), reverse=True) == visits_by_schedule(4, 20)


def test_gumbel_move_needs_the_gumbel_root():
    m = neural_search(random_position(12, 24), 10, hashed_eval)
    with pytest.raises(ValueError, match="gumbel"):
        m.gumbel_move(0)


@pytest.mark.parametrize("kwargs, message", [
    ({"gumbel_k": 4, "forced_playouts": 2.0}, "choose one"),
    ({"fpu_reduction": -0.1}, ">= 0"),
    ({"solver_budget": 0}, "solver_budget"),
    ({"eval_cache": -1}, ">= 0"),
])
def test_bad_options_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MCTS(1, **kwargs)


# ---------------------------------------------------------------------------
# The settings


def test_search_config_builds_the_forest_it_describes():
    config = SearchConfig(runs_per_move=5, forced_playouts=2.0,
                          tree=TreeConfig(fpu_reduction=0.2, fpu_reduction_root=0.1,
                                          eval_cache=100, solver_moves=10, solver_budget=99))
    m = new_forest(config, 3, seed=0)
    assert (m.num_trees, m.forced_playouts, m.gumbel_k) == (3, 2.0, 0)
    assert m.fpu_reduction == pytest.approx(0.2) and m.fpu_reduction_root == pytest.approx(0.1)
    assert (m.eval_cache, m.solver_moves, m.solver_budget) == (100, 10, 99)
    assert config.records_policy_target and not SearchConfig().records_policy_target
    with pytest.raises(ValueError, match="exclude each other"):
        SearchConfig(gumbel=16, forced_playouts=2.0)


def test_every_option_is_off_by_default():
    m = new_forest(SearchConfig(), 1)
    assert (m.fpu_reduction, m.fpu_reduction_root, m.forced_playouts, m.eval_cache,
            m.solver_moves, m.gumbel_k) == (0, 0, 0, 0, 0, 0)
    board = Board.new(4)
    a, b = MCTS(1), new_forest(SearchConfig(dirichlet_alpha=0.0), 1)
    for m in (a, b):
        m.set_root(0, board)
        m.start(0, 30)
        drive(m, hashed_eval)
    np.testing.assert_array_equal(a.visits(0), b.visits(0))



def test_players_and_the_cpu_player_take_the_tree_options() -> None:
    from pyhexz import hexz_pb2 as pb
    from pyhexz.cpu.player import CpuPlayer, SearchOptions
    from pyhexz.nn.follow import LoadedModel
    from pyhexz.search.driver import uniform_evaluator
    from pyhexz.search.players import KEPT_SEARCHES, NeuralPlayer
    from pyhexz.search.timed import TimedSearch, think
    tree = TreeConfig(fpu_reduction=0.2, eval_cache=256, solver_moves=12, solver_budget=500)
    board = random_position(12, 24)
    player = NeuralPlayer(uniform_evaluator, runs=16, tree=tree)
    assert player.choose([board])[0] in board.legal_moves()
    # (a budget player's cache, kept across moves, holds a few searches of runs + 1 each)
    assert (player.mcts.eval_cache, player.mcts.solver_moves) == (KEPT_SEARCHES * 17, 12)
    searcher = TimedSearch(1, uniform_evaluator, tree=tree)
    assert think(searcher, board, 60.0, max_iterations=16).iterations == 16
    assert searcher.mcts.fpu_reduction == pytest.approx(0.2)
    # Rollout search has no network to spare: the options do not apply to it.
    assert TimedSearch(1, None, tree=tree).mcts.eval_cache == 0
    model = LoadedModel(uniform_evaluator, pb.ModelKey(name="u", checkpoint=1), "0" * 64, "-")
    cpu = CpuPlayer(model, options=SearchOptions(slots=1, tree=tree))
    try:
        result, label = cpu.suggest(board, time.monotonic() + 60, max_iterations=16)
        assert label == "u:1" and result.iterations == 16
        # The neural search the CPU player made for the model has the options.
        neural = cpu._searches[False].mcts
        assert (neural.eval_cache, neural.solver_moves, neural.solver_budget) == (256, 12, 500)
    finally:
        cpu.close()
