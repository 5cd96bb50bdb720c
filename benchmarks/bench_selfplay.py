"""Self-play speed on one core: examples/s and the share of wall time in the network, for
each inference backend side by side.

    python benchmarks/bench_selfplay.py [--seconds 60] [--runs-per-move 200 800]
        [--nets 5x64 3x32] [--backend torch onnx int8 auto] [--parallel-games 32]

Plays self-play games with fresh networks (speed does not depend on the weights) and reports
examples/s and the share of wall time spent inside the network call (the Predictor:
conversion, forward pass, softmax). The rest is the search, encoding and bookkeeping. With
several backends the repeats take turns (torch, onnx, ..., torch, onnx, ...), so a machine
whose speed drifts treats them alike, and the table gives each as a ratio to torch in the same
run. Every searched position counts as an example, finished game or not: the work is the same.
A position is counted when its move is made, all 32 games' moves at once, so a short repeat
counts positions coarsely; the ratios are therefore taken from network leaves per second
(continuous, and proportional to examples/s for a given search), and examples/s are given
beside them.
"""

from __future__ import annotations

import argparse
import platform
import statistics

import benchlib  # noqa: E402,F401  (puts src/ on the path)


def net_size(text: str) -> tuple[int, int]:
    blocks, _, filters = text.partition("x")
    return int(blocks), int(filters)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60)
    ap.add_argument("--runs-per-move", type=int, nargs="+", default=[200])
    ap.add_argument("--parallel-games", type=int, default=32)
    ap.add_argument("--nets", type=net_size, nargs="+", default=[(5, 64)],
                    help="network sizes, BLOCKSxFILTERS")
    ap.add_argument("--backend", nargs="+", default=["torch"],
                    choices=["torch", "onnx", "int8", "auto"],
                    help="inference backends to compare (nn/backends.py)")
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
          f"{args.parallel_games} games at once, {args.seconds:g} s a repeat, {pinned}")
    key = pb.ModelKey(name="bench", checkpoint=0)
    table = []
    for blocks, filters in args.nets:
        torch.manual_seed(0)
        net = HexzNet(blocks, filters)
        predictors = {b: Predictor(net, backend=b) for b in args.backend}
        chosen = {b: p.backend.name for b, p in predictors.items()}
        for runs in args.runs_per_move:
            config = SearchConfig(runs_per_move=runs)
            rates: dict[str, list[float]] = {b: [] for b in args.backend}
            leaves: dict[str, list[float]] = {b: [] for b in args.backend}
            shares: dict[str, list[float]] = {b: [] for b in args.backend}
            for r in range(args.repeats):
                for b, predictor in predictors.items():
                    stats = run_selfplay(lambda p=predictor: (p, key), lambda req: None, config,
                                         parallel_games=args.parallel_games,
                                         max_seconds=args.seconds, seed=r)
                    rates[b].append(stats.positions / stats.seconds)
                    leaves[b].append(stats.simulations / stats.seconds)
                    shares[b].append(stats.nn_share)
                    print(f"{blocks}x{filters} {runs} runs/move {b} ({chosen[b]}) repeat {r}: "
                          f"{rates[b][-1]:.1f} examples/s, {leaves[b][-1]:.0f} leaves/s, "
                          f"network share {shares[b][-1]:.1%}, "
                          f"{stats.games} games finished", flush=True)
            base = statistics.median(leaves[args.backend[0]])
            for b in args.backend:
                rate = statistics.median(leaves[b])
                table.append(f"| {blocks}x{filters} | {runs} | {b} ({chosen[b]}) | "
                             f"{statistics.median(rates[b]):.1f} | {rate:.0f} | "
                             f"{rate / base:.2f}x | {statistics.median(shares[b]):.0%} |")
    print(f"\n| net | runs/move | backend (runs as) | examples/s, median | leaves/s, median | "
          f"vs {args.backend[0]} | network share |\n|---|---:|---|---:|---:|---:|---:|")
    print("\n".join(table))


if __name__ == "__main__":
    main()
