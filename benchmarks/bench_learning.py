"""What the training switches cost per second, on one core: their side of the equal-time trade.

    python benchmarks/bench_learning.py [--repeats 5] [--seconds 20]

Side by side, off and on, interleaved repeats on one core, medians and ratios (a fresh 3 x 32
network: speed does not depend on the weights):

- global pooling: one forward pass of a batch of 32 positions (what self-play's network call
  does), plain network against one with GlobalPoolingBlocks;
- score head: one training step of a batch of 256 (forward, losses, backward, Adam), score
  weight 0 against 0.5;
- playout caps: self-play with 32 games at once at 100 simulations a move, every move full
  against a quarter full (the rest 25 simulations): moves played and network leaves per
  second. Games go as fast as their moves; a quarter of the moves are recorded.

Whether a switch pays is the ablation's question (benchmarks/ablation.py); this says what it
costs or saves per second, which the ablation's equal-time runs pay or collect.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import benchlib  # noqa: E402,F401  (puts src/ on the path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=20, help="self-play time per repeat")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--filters", type=int, default=32)
    args = ap.parse_args()

    pinned = benchlib.pin_to_one_core()
    import numpy as np
    import torch
    torch.set_num_threads(1)
    from pyhexz import hexz_pb2 as pb
    from pyhexz.game.examples import Arrays, decode
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.search.driver import SearchConfig
    from pyhexz.train.selfplay import run_selfplay
    from pyhexz.train.trainer import ReplayWindow, train_steps

    print(f"# {benchlib.cpu_model()}, python {platform.python_version()}, torch "
          f"{torch.__version__}, net {args.blocks}x{args.filters}, {pinned}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    torch.manual_seed(0)
    nets = {False: HexzNet(args.blocks, args.filters).eval(),
            True: HexzNet(args.blocks, args.filters, global_pooling=True).eval()}
    key = pb.ModelKey(name="bench")

    # Real positions: a few self-play games with the plain network.
    games: list = []
    run_selfplay(lambda: (Predictor(nets[False]), key), games.append,
                 SearchConfig(runs_per_move=8), parallel_games=8, max_games=8, seed=0)
    data = Arrays.concat([decode(list(g.examples)) for g in games])
    window = ReplayWindow(len(data))
    window.add(data)
    boards, masks = torch.from_numpy(data.boards[:32]), torch.from_numpy(data.masks[:32])

    def forward_ms(pooling: bool) -> float:
        net = nets[pooling]
        with torch.inference_mode():
            net(boards, masks)
            t0 = time.perf_counter()
            for _ in range(50):
                net(boards, masks)
        return (time.perf_counter() - t0) / 50 * 1000

    trainee = HexzNet(args.blocks, args.filters)
    optimizer = torch.optim.AdamW(trainee.parameters(), lr=1e-4)

    def step_ms(score_weight: float) -> float:
        rng = np.random.default_rng(0)
        train_steps(trainee, optimizer, window, 256, 256, rng, torch.device("cpu"),
                    augment=True, score_weight=score_weight)   # warm
        t0 = time.perf_counter()
        train_steps(trainee, optimizer, window, 256 * 10, 256, rng, torch.device("cpu"),
                    augment=True, score_weight=score_weight)
        return (time.perf_counter() - t0) / 10 * 1000

    predictor = Predictor(nets[False])

    def selfplay_rates(fraction: float, seed: int) -> tuple[float, float]:
        config = SearchConfig(runs_per_move=100, sample_plies=20, full_search_fraction=fraction)
        s = run_selfplay(lambda: (predictor, key), lambda req: None, config, parallel_games=32,
                         max_seconds=args.seconds, seed=seed)
        return s.positions / s.seconds, s.simulations / s.seconds

    rows: dict[str, dict[bool, list]] = {"forward": {False: [], True: []},
                                         "step": {False: [], True: []},
                                         "selfplay": {False: [], True: []}}
    for r in range(args.repeats):
        for on in (False, True) if r % 2 == 0 else (True, False):
            rows["forward"][on].append(forward_ms(on))
            rows["step"][on].append(step_ms(0.5 if on else 0.0))
            rows["selfplay"][on].append(selfplay_rates(0.25 if on else 1.0, r))
        print(f"repeat {r}: forward {rows['forward'][False][-1]:.2f} / "
              f"{rows['forward'][True][-1]:.2f} ms, step {rows['step'][False][-1]:.0f} / "
              f"{rows['step'][True][-1]:.0f} ms, self-play moves/s "
              f"{rows['selfplay'][False][-1][0]:.1f} / {rows['selfplay'][True][-1][0]:.1f}",
              flush=True)

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    print(f"\nmedians of {args.repeats} repeats, off / on, and on / off:\n")
    print("| switch | measure | off | on | on / off |")
    print("|---|---|---:|---:|---:|")
    for name, what, part in (("global pooling", "forward pass, batch 32", "forward"),
                             ("score head (weight 0.5)", "training step, batch 256", "step")):
        off, on = med(rows[part][False]), med(rows[part][True])
        print(f"| {name} | {what} | {off:.2f} ms | {on:.2f} ms | {on / off:.2f} |")
    for i, what in enumerate(("moves played/s", "network leaves/s")):
        off = med([x[i] for x in rows["selfplay"][False]])
        on = med([x[i] for x in rows["selfplay"][True]])
        print(f"| playout caps (0.25, 25 runs) | self-play {what} | {off:.1f} | {on:.1f} | "
              f"{on / off:.2f} |")


if __name__ == "__main__":
    main()
