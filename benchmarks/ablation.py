"""Which of `pyhexz train`'s settings matter: equal-time training runs that each leave one out.

    python benchmarks/ablation.py --out runs/ablation --minutes 25 \
        --variants defaults no-augment sample-all

Every variant is a `pyhexz train` run of `--minutes` on this machine, one after the other, with
the same network and workers (`--blocks 3 --filters 32 --num-workers 2`) and its variant's flags
on top of the defaults. Then the last checkpoint of each plays the first `--games` fixture
openings from both seats against each opponent (200 simulations a move), and the script prints
a Markdown table. The runs are sequential, so a machine that is busier for one of them biases
it: the table gives each run's examples/s to show that.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import benchlib

# What each variant changes from `pyhexz train`'s defaults (the learn3 settings).
VARIANTS = {
    "defaults": [],
    "no-augment": ["--no-augment"],                  # no mirror images of the board
    "sample-all": ["--sample-plies", "all"],         # no temperature drop
    "samples-1": ["--samples-per-example", "1"],     # learn2's sampling rate
    "lr-1e-4": ["--learning-rate", "1e-4"],          # learn2's learning rate
}
NETWORK = ["--blocks", "3", "--filters", "32", "--num-workers", "2"]


def train(out: Path, name: str, minutes: float) -> dict:
    log = out / f"{name}.log"
    cmd = [sys.executable, "-m", "pyhexz", "train", "--dir", str(out / name), "--model-name",
           name, *NETWORK, *VARIANTS[name], "--minutes", str(minutes)]
    print(f"[ablation] {name}: {' '.join(cmd[1:])}", flush=True)
    with log.open("w") as f:
        subprocess.run(["nice", "-n", "5", *cmd], stdout=f, stderr=subprocess.STDOUT,
                       check=True, env=benchlib.src_env())
    text = log.read_text()
    stopped = re.findall(r"train stopped checkpoint=(\d+) games=(\d+) examples=(\d+)", text)[-1]
    progress = re.findall(r"examples_per_s=([\d.]+)", text)
    return {"checkpoint": int(stopped[0]), "games": int(stopped[1]),
            "examples": int(stopped[2]), "examples_per_s": float(progress[-1]) if progress else 0}


def arena(out: Path, name: str, checkpoint: int, opponent: str, games: int) -> dict:
    from pyhexz.infra.storage import CheckpointRepo, LocalStorage

    model = out / name / CheckpointRepo(LocalStorage(out / name), name).key(checkpoint, "model.pt")
    res = subprocess.run([sys.executable, "-m", "pyhexz", "arena", f"{model}:200", opponent,
                          "--games", str(games), "--json"], capture_output=True, text=True,
                         check=True, env=benchlib.src_env())
    return json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--minutes", type=float, default=25)
    ap.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--opponents", nargs="+", default=["rollout:800"])
    ap.add_argument("--games", type=int, default=32, help="openings (each from both seats)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"# {benchlib.cpu_model()}, {os.cpu_count()} cores", flush=True)

    runs = {name: train(args.out, name, args.minutes) for name in args.variants}
    # Two matches at a time: one per core, now that no training runs.
    with ThreadPoolExecutor(2) as pool:
        results = {(name, opp): pool.submit(arena, args.out, name, r["checkpoint"], opp,
                                            args.games)
                   for name, r in runs.items() for opp in args.opponents}
        results = {k: f.result() for k, f in results.items()}

    print(f"\n{args.minutes:g} minutes each; last checkpoint at 200 simulations a move, "
          f"{args.games} openings x 2 seats\n")
    print("| variant | flags | checkpoints | games | examples | examples/s | "
          + " | ".join(f"vs {o}: W/D/L, score [95% CI, paired], Elo" for o in args.opponents)
          + " |")
    print("|---|---|---:|---:|---:|---:|" + "---|" * len(args.opponents))
    for name, r in runs.items():
        cells = []
        for opp in args.opponents:
            m = results[name, opp]
            # arena's JSON has no infinity: a clean sweep's Elo is null.
            elo = (f"{m['elo']:+.0f}" if m["elo"] is not None
                   else "+inf" if m["score"] > 0.5 else "-inf")
            cells.append(f"{m['wins']}/{m['draws']}/{m['losses']}, {m['score']:.3f} "
                         f"[{m['score_paired_low']:.2f}, {m['score_paired_high']:.2f}], {elo}")
        print(f"| {name} | `{' '.join(VARIANTS[name]) or '(none)'}` | {r['checkpoint']} | "
              f"{r['games']} | {r['examples']} | {r['examples_per_s']:.0f} | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
