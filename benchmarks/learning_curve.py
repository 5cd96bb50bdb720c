"""Strength per checkpoint of a training run: arena matches against fixed opponents.

    python benchmarks/learning_curve.py --dir runs/learn1 --model learn1 \
        --opponents random rollout:800 --runs 200 --games 16 --every 5

For every `--every`-th checkpoint (and the last), plays the first `--games` fixture openings
from both seats against each opponent, the checkpoint searching `--runs` simulations a move,
and prints score, 95% interval (paired by opening) and Elo per checkpoint, as a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import benchlib  # noqa: E402,F401  (puts src/ on the path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--opponents", nargs="+", default=["random", "rollout:800"])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--games", type=int, default=16, help="openings (each played from both seats)")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--checkpoints", type=int, nargs="*", help="explicit checkpoint numbers")
    args = ap.parse_args()

    import torch
    torch.set_num_threads(1)
    from pyhexz.infra.storage import CheckpointRepo, LocalStorage
    from pyhexz.search.players import make_player
    from pyhexz.train.arena import load_openings, play_match

    repo = CheckpointRepo(LocalStorage(args.dir), args.model)
    nums = repo.checkpoints()
    if not nums:
        sys.exit(f"no checkpoints of {args.model} in {args.dir}")
    chosen = args.checkpoints or sorted(set(nums[::args.every]) | {nums[-1]})
    openings = load_openings()[:args.games]
    print("| checkpoint | examples trained | " + " | ".join(
        f"vs {o}: score [95% CI, paired], Elo" for o in args.opponents) + " |")
    print("|---:|---:|" + "---|" * len(args.opponents))
    for n in chosen:
        path = args.dir / repo.key(n, "model.pt")
        cells = []
        for i, opp in enumerate(args.opponents):
            me = make_player(f"{path}:{args.runs}", max_games=2 * len(openings))
            r = play_match(me, make_player(opp, seed=i), openings)
            interval = f"{r.score:.3f} [{r.score_paired_low:.2f}, {r.score_paired_high:.2f}]"
            cells.append(f"{interval}, {r.elo:+.0f}" if abs(r.elo) != float("inf") else
                         f"{interval}, {'+' if r.elo > 0 else '-'}inf")
        print(f"| {n} | {repo.meta(n).get('examples_trained', 0)} | " + " | ".join(cells) + " |",
              flush=True)


if __name__ == "__main__":
    main()
