"""Strength per checkpoint of a training run: arena matches against fixed opponents.

    python benchmarks/learning_curve.py --dir runs/learn1 --model learn1 \
        --opponents random rollout:800 --runs 200 --games 16 --every 5
    python benchmarks/learning_curve.py --dir runs/t30 --model local --every-minutes 5

For every `--every`-th checkpoint (or the last checkpoint published by each `--every-minutes`
mark of the run's time), and the last, plays the first `--games` fixture openings from both
seats against each opponent, the checkpoint searching `--runs` simulations a move, and prints
minutes into the run, score, 95% interval (paired by opening) and Elo per checkpoint, as a
Markdown table. Minutes count from checkpoint 0, which `pyhexz train` writes as it starts.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import benchlib  # noqa: E402,F401  (puts src/ on the path)

if TYPE_CHECKING:
    from pyhexz.infra.storage import CheckpointRepo


def minutes_into_run(repo: CheckpointRepo, n: int) -> float:
    """When checkpoint n was published, in minutes after checkpoint 0."""
    return (repo.meta(n)["created"] - repo.meta(0)["created"]) / 60


def at_minutes(repo: CheckpointRepo, every: float) -> list[int]:
    """The newest checkpoint published by each `every`-minute mark of the run, and the last."""
    nums = repo.checkpoints()
    when = {n: minutes_into_run(repo, n) for n in nums}
    marks = [every * k for k in range(1, int(when[nums[-1]] // every) + 1)]
    chosen = {max(n for n in nums if when[n] <= m) for m in marks}
    return sorted(chosen | {nums[-1]})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--opponents", nargs="+", default=["random", "rollout:800"])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--games", type=int, default=16, help="openings (each played from both seats)")
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--every-minutes", type=float,
                    help="a checkpoint per this many minutes of the run, instead of --every")
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
    if args.checkpoints:
        chosen = args.checkpoints
    elif args.every_minutes:
        chosen = at_minutes(repo, args.every_minutes)
    else:
        chosen = sorted(set(nums[::args.every]) | {nums[-1]})
    openings = load_openings()[:args.games]
    print("| checkpoint | minutes | examples trained | " + " | ".join(
        f"vs {o}: score [95% CI, paired], Elo" for o in args.opponents) + " |")
    print("|---:|---:|---:|" + "---|" * len(args.opponents))
    for n in chosen:
        path = args.dir / repo.key(n, "model.pt")
        cells = []
        for i, opp in enumerate(args.opponents):
            me = make_player(f"{path}:{args.runs}", max_games=2 * len(openings))
            r = play_match(me, make_player(opp, seed=i), openings)
            interval = f"{r.score:.3f} [{r.score_paired_low:.2f}, {r.score_paired_high:.2f}]"
            cells.append(f"{interval}, {r.elo:+.0f}" if abs(r.elo) != float("inf") else
                         f"{interval}, {'+' if r.elo > 0 else '-'}inf")
        print(f"| {n} | {minutes_into_run(repo, n):.1f} | "
              f"{repo.meta(n).get('examples_trained', 0)} | " + " | ".join(cells) + " |",
              flush=True)


if __name__ == "__main__":
    main()
