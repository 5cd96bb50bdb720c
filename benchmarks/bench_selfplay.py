"""Self-play speed on one core: examples/s and the share of wall time in the network.

    python benchmarks/bench_selfplay.py [--seconds 60] [--runs-per-move 200] [--parallel-games 32]

Plays self-play games with a fresh 5 x 64 network (speed does not depend on the weights) and
reports examples/s and the share of wall time spent inside the network call (the Predictor:
tensor conversion, forward pass, softmax). The rest is the search, encoding and bookkeeping;
the target is >= 85% in the network. Examples are counted per finished game, so the run
continues until `--seconds` have passed and at least one round of games has finished.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import benchlib  # noqa: E402,F401  (puts src/ on the path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--runs-per-move", type=int, default=200)
    ap.add_argument("--parallel-games", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=5)
    ap.add_argument("--filters", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    pinned = benchlib.pin_to_one_core()
    import torch
    torch.set_num_threads(1)
    from pyhexz import hexz_pb2 as pb
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.driver import SearchConfig
    from pyhexz.train.selfplay import run_selfplay

    print(f"# self-play benchmark: python {platform.python_version()}, torch {torch.__version__}, "
          f"net {args.blocks}x{args.filters}, {args.parallel_games} games at once, "
          f"{args.runs_per_move} runs/move, {pinned}")
    torch.manual_seed(0)
    predictor = Predictor(HexzNet(args.blocks, args.filters))
    key = pb.ModelKey(name="bench", checkpoint=0)
    config = SearchConfig(runs_per_move=args.runs_per_move)
    rates, shares, sims = [], [], []
    for r in range(args.repeats):
        stats = run_selfplay(lambda: (predictor, key), lambda req: None, config,
                             parallel_games=args.parallel_games,
                             max_seconds=args.seconds, seed=r)
        # Every searched position counts, finished game or not: the work is the same.
        rates.append(stats.positions / stats.seconds)
        shares.append(stats.nn_share)
        sims.append(stats.simulations / stats.seconds)
        print(f"repeat {r}: {rates[-1]:.1f} examples/s, {sims[-1]:.0f} simulations/s, "
              f"network share {shares[-1]:.1%}, {stats.nn_calls} network calls, "
              f"{stats.games} games finished")
    print(f"median: {statistics.median(rates):.1f} examples/s (searched positions/s), "
          f"{statistics.median(sims):.0f} simulations/s, network share "
          f"{statistics.median(shares):.1%} (target >= 85%)")


if __name__ == "__main__":
    main()
