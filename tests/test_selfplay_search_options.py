"""Self-play with the search options of issue 15 (pyhexz.train.selfplay with SearchConfig):
the games finish, the policy recorded is the search's policy target where an option asks for
it, and the statistics count what the cache and the solver saved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import decode
from pyhexz.nn import HexzNet, Predictor
from pyhexz.search.driver import SearchConfig, TreeConfig
from pyhexz.search.driver import uniform_evaluator as uniform
from pyhexz.train.selfplay import run_selfplay

RUNS = 8


@pytest.fixture(scope="module")
def predictor() -> Predictor:
    torch.manual_seed(0)
    return Predictor(HexzNet(2, 16))


def play(evaluate, config: SearchConfig, games: int = 2):
    out: list[pb.AddTrainingExamplesRequest] = []
    stats = run_selfplay(lambda: (evaluate, pb.ModelKey(name="t", checkpoint=1)), out.append,
                         config, parallel_games=games, max_games=games, seed=5)
    assert len(out) == games
    return out, stats


def probs_of(g: pb.AddTrainingExamplesRequest):
    a = decode(list(g.examples))
    return a, a.probs.reshape(len(a), -1), a.masks.reshape(len(a), -1)


def test_gumbel_records_the_improved_policy(predictor) -> None:
    games, _ = play(predictor, SearchConfig(runs_per_move=RUNS, gumbel=4))
    for g in games:
        a, probs, masks = probs_of(g)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        # softmax over every legal move, not the visits of 8 simulations (which leave most
        # moves at 0); the simulations made are still the visit count.
        assert ((probs > 0) == masks).all()
        assert all(ex.visit_count == RUNS for ex in g.examples)


def test_forced_playouts_record_the_pruned_visits(predictor) -> None:
    games, _ = play(predictor, SearchConfig(runs_per_move=4 * RUNS, forced_playouts=2.0))
    fractional = 0
    for g in games:
        a, probs, masks = probs_of(g)
        np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-5)
        assert not (probs[~masks] > 0).any()
        for ex, p in zip(g.examples, probs, strict=True):
            assert ex.visit_count == 4 * RUNS
            counts = p * ex.visit_count
            fractional += not np.allclose(counts, np.round(counts), atol=1e-3)
    # Raw visits would be multiples of 1 / visit_count in every example.
    assert fractional > 0


def test_cache_and_solver_count_what_they_saved(predictor) -> None:
    # (A network, not uniform priors: flat priors make trees too shallow to transpose.)
    config = SearchConfig(runs_per_move=48,
                          tree=TreeConfig(eval_cache=4096, solver_moves=12, solver_budget=2000))
    games, stats = play(predictor, config)
    assert stats.transposition_hits > 0 and stats.solves > 0
    # The network saw fewer leaves than there were simulations.
    assert stats.simulations < sum(48 * len(g.examples) for g in games)
    for g in games:
        assert all(ex.visit_count == 48 for ex in g.examples)


def test_plain_self_play_counts_nothing_saved() -> None:
    _, stats = play(uniform, SearchConfig(runs_per_move=4))
    assert stats.transposition_hits == 0 and stats.solves == 0
