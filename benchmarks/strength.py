"""The strength table of a model (issue 16, item 4): the matches that decide whether it ships.

    # the candidate checkpoint, before it ships, against rollout MCTS and the shipped default
    python benchmarks/strength.py --model runs/main/models/flagz/local --previous default \
        --out runs/strength-v2 --workers 16
    # stopped or on another machine with the folder copied along: the same command continues
    # a match added after shipping, on the shipped file, merged into its meta.json
    python benchmarks/strength.py --model default --out training/flagz-v2/strength-1s \
        --matches time-1s --write-meta src/pyhexz/models/flagz-v2

Plays every fixture opening from both seats (128 openings, 256 games per match):
`MODEL:200` vs `rollout:2000` and `MODEL:800` vs `rollout:8000` (10x the budget), `MODEL@1` vs
`rollout@1` (1 s a move each, one core each), and `MODEL:800` vs `PREVIOUS:800` when a previous
model is given; targets 0.90, 0.90, 0.90 and 0.55 (train/strength.py). Prints per match the
score, its 95% interval paired by opening, Elo and whether the target is met, as a Markdown
table for BENCHMARKS.md, and writes the table to OUT/strength.json, the file
`pyhexz ship-model --strength` takes; `--write-meta DIR` puts it into a shipped model's
meta.json directly.

One worker process per core (`--workers`, default: all cores); a timed match's think time is
per core, so do not run more workers than cores, nor other work beside it. Chunks of
`--chunk` openings are the unit of work and of resuming.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import benchlib
from pyhexz.infra.config import BACKENDS


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="default",
                    help="the model to measure: default (the shipped one), a checkpoint file or "
                         "a model folder (default: default)")
    ap.add_argument("--previous", help="the model it replaces, for the 'previous' match")
    ap.add_argument("--out", type=Path, required=True,
                    help="results folder: plan.json, results.jsonl, strength.json")
    ap.add_argument("--matches", nargs="+", help="only these (budget-200 budget-800 time-1s "
                                                 "previous)")
    ap.add_argument("--openings", type=int, default=128,
                    help="the first N fixture openings, each from both seats (default: all 128)")
    ap.add_argument("--chunk", type=int, default=4, help="openings per unit of work (default 4)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes, one core each (default: all cores)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default="auto", choices=BACKENDS,
                    help="the neural players' inference backend, recorded per match in the "
                         "plan (default: auto, as the CPU player serves)")
    ap.add_argument("--report", action="store_true", help="only print the table of OUT")
    ap.add_argument("--write-meta", type=Path, metavar="MODEL_DIR",
                    help="put the table into this shipped model's meta.json "
                         "(src/pyhexz/models/NAME)")
    a = ap.parse_args()

    from pyhexz.infra.process import configure_logging, setup_torch, sigterm_as_ctrl_c
    from pyhexz.train import strength
    from pyhexz.train.ship import write_strength
    configure_logging()
    setup_torch(1)
    sigterm_as_ctrl_c()   # `kill` or a background job's SIGINT: stop the workers, keep results
    try:
        if not a.report:
            plan = strength.make_plan(a.model, a.previous, a.matches, a.openings, a.chunk,
                                      backend=a.backend)
            t0 = time.monotonic()
            played = strength.play(a.out, plan, a.workers, device=a.device)
            print(f"# played {played} chunks in {time.monotonic() - t0:.0f} s with "
                  f"{a.workers} workers")
        t = strength.table(a.out)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"strength: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("strength: interrupted; the finished chunks are kept in "
              f"{a.out / strength.RESULTS_FILE}", file=sys.stderr)
        return 130
    t["machine"] = {"cpu": benchlib.cpu_model(), "cores": os.cpu_count(), "workers": a.workers}
    (a.out / strength.TABLE_FILE).write_text(json.dumps(t, indent=1) + "\n", encoding="utf-8")
    print(f"# strength of {t['model']} (sha256 {t['model_sha256'][:12]}), {t['openings']} "
          f"openings x 2 seats; {benchlib.cpu_model()}, {a.workers} workers")
    print(strength.markdown(t))
    print(f"# table: {a.out / strength.TABLE_FILE}")
    if a.write_meta:
        write_strength(a.write_meta, t)
        print(f"# written into {a.write_meta / 'meta.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
