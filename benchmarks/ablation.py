"""Which changes pay: equal-time `pyhexz train` runs, one after the other, each a variant of the
defaults, and how strong each one's checkpoints are against rollout.

    # the ablation: the base, then the base minus each change (here "all": every change on)
    python benchmarks/ablation.py run --out runs/ablation --minutes 30 --ablate all
    # chosen variants: the defaults, the defaults plus the score head, all minus playout caps
    python benchmarks/ablation.py run --out runs/ablation --minutes 30 \
        --variants defaults defaults-score all+gumbel
    # the issue's targets for one run's last checkpoint
    python benchmarks/ablation.py target --dir runs/t30 --model-name local

`run` (the protocol of BENCHMARKS.md, "Ablation"): every variant is a `pyhexz train` run of
`--minutes` on this machine with the same network and workers (NETWORK), one after the other,
its variant's settings on top of the defaults. Then the last checkpoint of each plays the first
`--games` fixture openings from both seats against each opponent (200 simulations a move), two
matches at a time (one per core), and a learning curve takes the newest checkpoint at every
`--curve-minutes` of each run against the first opponent. With `--head-to-head N` each variant's
last checkpoint also plays its base's over N openings from both seats: where every variant beats
rollout 0.9 of the time, only that match tells them apart. It prints a Markdown table per
variant (with the minutes each took to reach a score of 0.5 and 0.9 on the curve) and the
curves. Each variant's matches are played as soon as its run ends, and its summary with their
results is kept in `--out` (VARIANT.json; the matches in matches/): run it again and it does
only what is missing, so an interrupted ablation resumes. The folder's .gitignore leaves out the
runs themselves, so the results can be committed and the ablation continued in another session
(nine runs of 30 minutes do not fit one) on the same kind of machine: a variant refuses to
train on another CPU than the earlier ones (`--any-machine` overrides). The runs are
sequential, so a machine that is busier for one of them biases it: the table gives each run's
examples/s to show that.

`target`: the issue's targets for a run's last checkpoint, at `--runs` simulations a move
against rollout:800 over all 128 openings from both seats, and at equal think time (0.5 s a
move each) against rollout, each match split over `--processes` processes (one core each),
plus the run's learning curve against rollout:800.

A variant is a base (`defaults`: `pyhexz train` as it is; `all`: every change in FEATURES on
but the ALTERNATIVES, which replace another change: `all+gumbel` swaps the Gumbel root in)
with at most one change added (`+NAME`) or taken away (`-NAME`): a change of FEATURES (issue
15's) or of LEARN3 (the settings of the earlier ablation, on by default). The changes are set
through their HEXZ_* variables (a switch on by default is named for switching it off, as its
flag flips between --x and --no-x with its default). Adding one is one entry in FEATURES.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import benchlib
import learning_curve


@dataclass(frozen=True)
class Feature:
    """One change: the HEXZ_* settings that switch it on, and those that switch it off. None:
    its settings are not wired in yet (variants with it refuse to run)."""

    on: dict[str, str] | None
    off: dict[str, str] | None = None


# Issue 15's changes. The training half (train/selfplay.py, train/trainer.py, nn/network.py):
FEATURES: dict[str, Feature] = {
    # a quarter of the moves searched fully and recorded, the rest with a quarter of the runs
    "playout-caps": Feature({"HEXZ_FULL_SEARCH_FRACTION": "0.25"},
                            {"HEXZ_FULL_SEARCH_FRACTION": "1"}),
    "score": Feature({"HEXZ_SCORE_WEIGHT": "0.5"}, {"HEXZ_SCORE_WEIGHT": "0"}),
    "window-growth": Feature({"HEXZ_REPLAY_WINDOW_START": "20000"},
                             {"HEXZ_REPLAY_WINDOW_START": "none"}),
    # on by default in `pyhexz train`, so its variable is named for switching it off
    "global-pooling": Feature({"HEXZ_NO_GLOBAL_POOLING": "0"}, {"HEXZ_NO_GLOBAL_POOLING": "1"}),
    # The search half (search/mcts.pyx, search/driver.py, search/evalcache.pyx, solver.pyx):
    # first play urgency reduction below the root (KataGo's 0.2; 0 at the root, which has noise)
    "fpu": Feature({"HEXZ_FPU_REDUCTION": "0.2", "HEXZ_FPU_REDUCTION_ROOT": "0"},
                   {"HEXZ_FPU_REDUCTION": "0", "HEXZ_FPU_REDUCTION_ROOT": "0"}),
    # forced playouts and policy target pruning (KataGo's k = 2)
    "forced-playouts": Feature({"HEXZ_FORCED_PLAYOUTS": "2"}, {"HEXZ_FORCED_PLAYOUTS": "0"}),
    # the evaluation cache: 8192 positions a game's tree (about 2.5 MB per game)
    "cache": Feature({"HEXZ_EVAL_CACHE": "8192"}, {"HEXZ_EVAL_CACHE": "0"}),
    # the exact endgame solver at 12 legal moves left
    "solver": Feature({"HEXZ_SOLVER_MOVES": "12"}, {"HEXZ_SOLVER_MOVES": "0"}),
    # the Gumbel root (16 moves considered) instead of PUCT + noise + forced playouts
    "gumbel": Feature({"HEXZ_GUMBEL": "16", "HEXZ_FORCED_PLAYOUTS": "0"},
                      {"HEXZ_GUMBEL": "0"}),
}
# Changes that replace another rather than add to it: "all" leaves them out (gumbel replaces
# the PUCT root that forced playouts steer; the two exclude each other), "all+gumbel" swaps.
ALTERNATIVES = frozenset({"gumbel"})
# learn3's changes (BENCHMARKS.md, the 25-minute ablation): on by default, not part of "all".
LEARN3: dict[str, Feature] = {
    "augment": Feature({"HEXZ_NO_AUGMENT": "0"}, {"HEXZ_NO_AUGMENT": "1"}),
    "temperature-drop": Feature({"HEXZ_SAMPLE_PLIES": "20"}, {"HEXZ_SAMPLE_PLIES": "all"}),
    # 2 samples per new example (the default since flagz-v1); off: learn3's 8
    "samples-2": Feature({"HEXZ_SAMPLES_PER_EXAMPLE": "2"}, {"HEXZ_SAMPLES_PER_EXAMPLE": "8"}),
    "lr-1e-3": Feature({"HEXZ_LEARNING_RATE": "1e-3"}, {"HEXZ_LEARNING_RATE": "1e-4"}),
}
BASES = ("defaults", "all")
NETWORK = ["--blocks", "3", "--filters", "32", "--num-workers", "2"]
TARGETS = {"rollout:800": 0.90, "equal think time": 0.75}
# The last checkpoints play rollout:800 (the yardstick) and rollout:8000: a 30-minute
# run of today's defaults scores about 0.95 against rollout:800, where 64 games cannot tell a
# better variant from a worse one; the stronger opponent keeps the scores off the ceiling.
OPPONENTS = ("rollout:800", "rollout:8000")
CURVE_MARKS = (0.5, 0.9)


def wired() -> list[str]:
    return [name for name, f in FEATURES.items() if f.on is not None]


def parse_variant(variant: str) -> tuple[str, str, str]:
    """(base, '+' or '-' or '', change) of a variant's name."""
    for base in BASES:
        if variant == base:
            return base, "", ""
        op = variant[len(base):len(base) + 1]
        if variant.startswith(base) and op in ("+", "-"):
            return base, op, variant[len(base) + 1:]
    raise ValueError(f"{variant!r}: a variant is BASE, BASE+CHANGE or BASE-CHANGE with BASE "
                     f"one of {', '.join(BASES)}")


def settings(variant: str) -> dict[str, str]:
    """The HEXZ_* settings of a variant; ValueError for one that cannot run."""
    base, op, change = parse_variant(variant)
    env: dict[str, str] = {}
    if base == "all":
        for name in wired():
            if name not in ALTERNATIVES:
                env.update(FEATURES[name].on or {})
    if not op:
        return env
    feature = FEATURES.get(change) or LEARN3.get(change)
    if feature is None:
        raise ValueError(f"{variant!r}: no change {change!r}; the changes are "
                         f"{', '.join([*FEATURES, *LEARN3])}")
    wanted = feature.on if op == "+" else feature.off
    if wanted is None:
        raise ValueError(f"{variant!r}: the settings of {change!r} are not wired in yet "
                         "(FEATURES in benchmarks/ablation.py)")
    return {**env, **wanted}


def ablation(base: str) -> list[str]:
    """The base, then the base without each change (with each alternative swapped in). Since
    the KataGo changes won at equal time they are `pyhexz train`'s defaults, so both bases
    hold every change but the alternatives."""
    return [base] + [f"{base}{'+' if name in ALTERNATIVES else '-'}{name}" for name in wired()]


def dir_name(variant: str) -> str:
    """A directory and model name for a variant (model names allow no '+')."""
    return variant.replace("+", "-with-", 1) if "+" in variant else variant.replace(
        "-", "-without-", 1)


def shown(env: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(env.items())) or "(none)"


# --------------------------------------------------------------------------
# Training runs
# --------------------------------------------------------------------------


def summary_file(out: Path, variant: str) -> Path:
    """Where a variant's summary (its run, then its match results) is kept."""
    return out / f"{dir_name(variant)}.json"


def train(out: Path, variant: str, minutes: float, extra: list[str]) -> dict:
    """Runs (or finds, from an earlier call) the variant's training run; returns its summary."""
    name = dir_name(variant)
    done = summary_file(out, variant)
    env = settings(variant)
    if done.exists():
        summary = json.loads(done.read_text())
        if summary["settings"] == env and summary["minutes"] == minutes:
            print(f"[ablation] {variant}: done before, {done}", flush=True)
            return summary
    log = out / f"{name}.log"
    cmd = [sys.executable, "-m", "pyhexz", "train", "--dir", str(out / name), "--model-name",
           name, *NETWORK, *extra, "--minutes", str(minutes)]
    print(f"[ablation] {variant}: {shown(env)} {' '.join(cmd[1:])}", flush=True)
    with log.open("w") as f:
        code = subprocess.run(["nice", "-n", "5", *cmd], stdout=f, stderr=subprocess.STDOUT,
                              env=benchlib.src_env(**env)).returncode
    text = log.read_text()
    if code:
        last = text.strip().splitlines()[-1:] or ["(no output)"]
        sys.exit(f"[ablation] {variant}: pyhexz train failed (exit {code}): {last[0]} "
                 f"(log: {log})")
    stopped = re.findall(r"train stopped checkpoint=(\d+) games=(\d+) examples=(\d+)", text)[-1]
    progress = re.findall(r"examples_per_s=([\d.]+)", text)
    summary = {"variant": variant, "name": name, "settings": env, "minutes": minutes,
               "checkpoint": int(stopped[0]), "games": int(stopped[1]),
               "examples": int(stopped[2]),
               "examples_per_s": float(progress[-1]) if progress else 0.0,
               "machine": machine(), "forward": forward(text)}
    done.write_text(json.dumps(summary, indent=1))
    return summary


def forward(log_text: str) -> str:
    """The forward pass the run's self-play measured when it chose its backend ("int8 0.90
    ms"; the slowest process's): machines that print the same CPU model have differed 6x in
    it, and an equal-time comparison is only fair between runs that agree on it."""
    chosen = re.findall(r"backend auto chose (\w+) \([^)]*?\b\1=([\d.]+)ms", log_text)
    if not chosen:
        return "?"
    backend, ms = max(chosen, key=lambda c: float(c[1]))
    return f"{backend} {float(ms):.2f} ms"


def repo_of(run_dir: Path, name: str):
    """The checkpoints of a `pyhexz train --dir run_dir --model-name name` run."""
    from pyhexz.infra.storage import CheckpointRepo, LocalStorage
    return CheckpointRepo(LocalStorage(run_dir), name)


# --------------------------------------------------------------------------
# Matches
# --------------------------------------------------------------------------


def match(player1: str, player2: str, openings: int, work: Path, processes: int = 1) -> dict:
    """`pyhexz arena` over the first `openings` fixture openings from both seats, split over
    `processes` processes; the result as arena's JSON, its intervals over all of them. Kept in
    `work`: asked again, it is read back."""
    from pyhexz.train.arena import default_openings_path, result_json, summarize

    key = re.sub(r"[^A-Za-z0-9.]+", "_", f"{player1}--{player2}--{openings}")[-150:]
    done = work / f"{key}.json"
    if done.exists():
        return json.loads(done.read_text())
    work.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in default_openings_path().read_text().splitlines() if ln.strip()]
    lines = lines[:openings]
    parts = [lines[i::processes] for i in range(processes) if lines[i::processes]]
    t0 = time.monotonic()
    procs = []
    log = work / f"{key}.log"   # the matches' progress lines
    with log.open("w") as err:
        for i, part in enumerate(parts):
            path = work / f"{key}.part{i}.jsonl"
            path.write_text("\n".join(part) + "\n")
            procs.append(subprocess.Popen(
                ["nice", "-n", "5", sys.executable, "-m", "pyhexz", "arena", player1, player2,
                 "--openings", str(path), "--json"], stdout=subprocess.PIPE, stderr=err,
                text=True, env=benchlib.src_env()))
        results = []
        for p in procs:
            stdout, _ = p.communicate()
            if p.returncode:
                raise RuntimeError(f"pyhexz arena {player1} {player2} failed "
                                   f"(exit {p.returncode}); log: {log}")
            results.append(json.loads(stdout))
    # Each part's outcomes come opening by opening, both seats together, so the
    # concatenation keeps the pairs the paired interval is computed over.
    merged = summarize(player1, player2, [x for r in results for x in r["outcomes"]],
                       time.monotonic() - t0, games_per_opening=2)
    out = json.loads(result_json(merged))
    done.write_text(json.dumps(out))
    for i in range(len(parts)):
        (work / f"{key}.part{i}.jsonl").unlink()
    return out


def cell(m: dict) -> str:
    # arena's JSON has no infinity: a clean sweep's Elo is null.
    elo = (f"{m['elo']:+.0f}" if m["elo"] is not None
           else "+inf" if m["score"] > 0.5 else "-inf")
    return (f"{m['wins']}/{m['draws']}/{m['losses']}, {m['score']:.3f} "
            f"[{m['score_paired_low']:.2f}, {m['score_paired_high']:.2f}], {elo}")


def first_reaching(curve: list[tuple[float, dict]], score: float) -> str:
    """Minutes into the run of the first curve point at `score` or better."""
    return next((f"{minutes:.1f}" for minutes, m in curve if m["score"] >= score), "-")


def curve_points(run_dir: Path, name: str, every: float) -> list[tuple[int, float]]:
    """(checkpoint, minutes into the run) of the run's learning curve."""
    if every <= 0:
        return []
    repo = repo_of(run_dir, name)
    return [(n, learning_curve.minutes_into_run(repo, n))
            for n in learning_curve.at_minutes(repo, every)]


def model_file(run_dir: Path, name: str, n: int) -> Path:
    return run_dir / repo_of(run_dir, name).key(n, "model.pt")


def neural_player(run_dir: Path, name: str, n: int, runs: int) -> str:
    """The arena spec of checkpoint n searching `runs` simulations a move."""
    return f"{model_file(run_dir, name, n)}:{runs}"


# --------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------


def machine() -> str:
    """The machine a run trained on: equal-time runs compare only on the same kind (the
    CPUs of these sessions differ 3x in a forward pass)."""
    flags = set()
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next((ln for ln in f if ln.startswith("flags")), ":").split(":")[1].split())
    except OSError:
        pass
    extra = [x for x in ("avx512_vnni", "amx_tile") if x in flags]
    return f"{benchlib.cpu_model()}, {os.cpu_count()} cores" + (
        f", {' '.join(extra)}" if extra else "")


def measured_with(args: argparse.Namespace) -> dict:
    """The match settings a variant's results hold (asked again with others, they are redone
    while the run is still there)."""
    done = {"opponents": args.opponents, "games": args.games, "runs": args.runs,
            "curve_minutes": args.curve_minutes, "curve_games": args.curve_games}
    # only when asked for, so the summaries measured before it existed still count as done
    return {**done, "head_to_head": args.head_to_head} if args.head_to_head else done


def base_model(args: argparse.Namespace, variant: str) -> str | None:
    """The last checkpoint of the variant's base, which the variant plays head to head; None
    for the base itself."""
    base = parse_variant(variant)[0]
    if variant == base:
        return None
    done = summary_file(args.out, base)
    if not done.exists():
        sys.exit(f"[ablation] {variant}: --head-to-head plays it against {base}, which has not "
                 f"run in {args.out} (put {base} first in --variants)")
    n = json.loads(done.read_text())["checkpoint"]
    return neural_player(args.out / dir_name(base), dir_name(base), n, args.runs)


def measure(args: argparse.Namespace, summary: dict) -> dict:
    """Plays a finished run's matches (its last checkpoint against every opponent, the curve's
    checkpoints against the first), two at a time, and puts the results into its summary."""
    name = summary["name"]
    run_dir = args.out / name
    if not (run_dir / "models").is_dir():
        sys.exit(f"[ablation] {summary['variant']}: its results were measured with other "
                 f"match settings and its run folder {run_dir} is gone; measure with "
                 f"{measured_with(args)} needs the run again (delete {args.out / name}.json)")
    curve = curve_points(run_dir, name, args.curve_minutes)
    jobs = {(opp, summary["checkpoint"], args.games) for opp in args.opponents}
    jobs |= {(args.opponents[0], n, args.curve_games) for n, _ in curve}
    work = args.out / "matches"
    base = base_model(args, summary["variant"]) if args.head_to_head else None
    with ThreadPoolExecutor(2) as pool:   # one match per core, now that no training runs
        futures = {job: pool.submit(match, neural_player(run_dir, name, job[1], args.runs),
                                    job[0], job[2], work) for job in jobs}
        # The base first: its score is what the change is worth (above 0.5: the change pays).
        # Split over both cores: on a rerun that adds it, it is the only match left to play.
        head = pool.submit(match, base, neural_player(run_dir, name, summary["checkpoint"],
                                                      args.runs),
                           args.head_to_head, work, 2) if base else None
        results = {job: f.result() for job, f in futures.items()}
        extra = {"head_to_head": head.result()} if head else {}
    return {**summary, **extra, "measured_with": measured_with(args),
            "last": {opp: results[opp, summary["checkpoint"], args.games]
                     for opp in args.opponents},
            "curve": [{"minutes": minutes, "checkpoint": n,
                       "result": results[args.opponents[0], n, args.curve_games]}
                      for n, minutes in curve]}


# The results of an ablation are small and take sessions to collect (nine runs of 30 minutes),
# so its folder is meant to be committed: everything but the runs themselves.
GITIGNORE = "# written by benchmarks/ablation.py: keep the results, not the runs\n/*/\n!/matches/\n"


def cmd_run(args: argparse.Namespace) -> None:
    variants = args.variants or ablation(args.ablate)
    for v in variants:
        settings(v)   # every variant must be runnable before the first hour is spent
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / ".gitignore").write_text(GITIGNORE)
    here = machine()
    runs = {}
    for v in variants:
        earlier = [json.loads(f.read_text()) for f in sorted(args.out.glob("*.json"))]
        other = next((r for r in earlier if r.get("machine", here) != here), None)
        done = summary_file(args.out, v)
        if other is not None and not done.exists() and not args.any_machine:
            sys.exit(f"[ablation] {v}: this machine ({here}) is not the one that trained "
                     f"{other['variant']} ({other['machine']}); equal-time runs compare only "
                     "on one kind of machine (--any-machine to run anyway)")
        summary = train(args.out, v, args.minutes, args.train_args)
        if summary.get("measured_with") != measured_with(args):
            summary = measure(args, summary)
            done.write_text(json.dumps(summary, indent=1))
        runs[v] = summary
        print(f"[ablation] {v}: " + ", ".join(f"vs {o} {m['score']:.3f}"
                                              for o, m in summary["last"].items()), flush=True)
    print_table(args, runs)


def print_table(args: argparse.Namespace, runs: dict[str, dict]) -> None:
    """The ablation's Markdown table and curves, from the variants' summaries alone."""
    machines = sorted({r.get("machine", "?") for r in runs.values()})
    print(f"\n{args.minutes:g} minutes each, `{' '.join(NETWORK + args.train_args)}`, on "
          f"{' / '.join(machines)}; last checkpoint at {args.runs} simulations a move, "
          f"{args.games} openings x 2 seats; curve: every {args.curve_minutes:g} minutes "
          f"against {args.opponents[0]}, {args.curve_games} openings x 2 seats\n")
    head = any("head_to_head" in r for r in runs.values())
    print("| variant | settings | forward | checkpoints | games | examples | examples/s | "
          + " | ".join(f"vs {o}: W/D/L, score [95% CI, paired], Elo" for o in args.opponents)
          + (" | base vs it (above 0.5: the change pays)" if head else "")
          + " | " + " | ".join(f"minutes to {s}" for s in CURVE_MARKS) + " |")
    print("|---|---|---|---:|---:|---:|---:|" + "---|" * (len(args.opponents) + head)
          + "---:|" * len(CURVE_MARKS))
    for v, r in runs.items():
        curve = [(p["minutes"], p["result"]) for p in r["curve"]]
        print(f"| {v} | `{shown(r['settings'])}` | {r.get('forward', '?')} | "
              f"{r['checkpoint']} | {r['games']} | "
              f"{r['examples']} | {r['examples_per_s']:.0f} | "
              + " | ".join(cell(r["last"][o]) for o in args.opponents) + " | "
              + (f"{cell(r['head_to_head']) if 'head_to_head' in r else '-'} | " if head else "")
              + " | ".join(first_reaching(curve, s) for s in CURVE_MARKS) + " |")
    if args.curve_minutes > 0:
        print(f"\nLearning curves: score against {args.opponents[0]} of the newest checkpoint "
              f"at each mark (minutes into the run: score)\n")
        for v, r in runs.items():
            points = ", ".join(f"{p['minutes']:.1f}: {p['result']['score']:.2f}"
                               for p in r["curve"])
            print(f"- {v}: {points}")


def cmd_target(args: argparse.Namespace) -> None:
    repo = repo_of(args.dir, args.model_name)
    n = repo.latest()
    if n is None:
        sys.exit(f"no checkpoints of {args.model_name} in {args.dir}")
    model = model_file(args.dir, args.model_name, n)
    work = args.dir / "target"
    print(f"# {args.model_name} checkpoint {n} ({model}), "
          f"{learning_curve.minutes_into_run(repo, n):.1f} minutes into its run", flush=True)
    against = {
        "rollout:800": match(neural_player(args.dir, args.model_name, n, args.runs),
                             "rollout:800", args.openings, work, args.processes),
        "equal think time": match(f"{model}@{args.think:g}s", f"rollout@{args.think:g}s",
                                  args.think_openings or args.openings, work, args.processes),
    }
    print("\n| match | openings x 2 seats | W/D/L, score [95% CI, paired], Elo | target | met |")
    print("|---|---:|---|---:|---|")
    for what, m in against.items():
        target = TARGETS[what]
        print(f"| `{m['player1']}` vs `{m['player2']}` | {m['openings']} | {cell(m)} | "
              f">= {target:.2f} | {'yes' if m['score'] >= target else 'no'} |")
    if args.curve_minutes > 0:
        curve = [(minutes, match(neural_player(args.dir, args.model_name, k, args.runs),
                                 "rollout:800", args.curve_games, work, args.processes))
                 for k, minutes in curve_points(args.dir, args.model_name, args.curve_minutes)]
        print(f"\nLearning curve against rollout:800 ({args.curve_games} openings x 2 seats): "
              + ", ".join(f"{minutes:.1f} min: {m['score']:.2f}" for minutes, m in curve))
        print("Minutes to " + ", ".join(f"{s}: {first_reaching(curve, s)}" for s in CURVE_MARKS)
              + " (learn3: 45 to 0.5, 110 to 0.9)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="equal-time training runs and their strength")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=30)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--variants", nargs="+", help="BASE, BASE+CHANGE or BASE-CHANGE")
    which.add_argument("--ablate", choices=BASES, default="all",
                       help="the base and the base minus each change (alternatives swapped in)")
    p.add_argument("--opponents", nargs="+", default=list(OPPONENTS),
                   help="the last checkpoint plays each; the curve the first")
    p.add_argument("--games", type=int, default=32, help="openings (each from both seats)")
    p.add_argument("--runs", type=int, default=200, help="simulations a move in the matches")
    p.add_argument("--curve-minutes", type=float, default=5, help="0: no learning curve")
    p.add_argument("--curve-games", type=int, default=32)
    p.add_argument("--head-to-head", type=int, default=0, metavar="OPENINGS",
                   help="also play each variant's last checkpoint against its base's over "
                   "this many openings x 2 seats (0: none)")
    p.add_argument("--any-machine", action="store_true",
                   help="run a variant on another kind of machine than the earlier ones")
    p.add_argument("--train-args", nargs=argparse.REMAINDER, default=[],
                   help="more `pyhexz train` flags for every run (last on the line)")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("target", help="a run's last checkpoint against the issue's targets")
    p.add_argument("--dir", type=Path, required=True, help="the run's `pyhexz train --dir`")
    p.add_argument("--model-name", default="local")
    p.add_argument("--openings", type=int, default=128)
    p.add_argument("--runs", type=int, default=200)
    p.add_argument("--think", type=float, default=0.5, help="seconds a move, both players")
    p.add_argument("--think-openings", type=int, default=None,
                   help="openings of the equal-think-time match (default: --openings; its "
                   "128 x 2 games at 0.5 s a move take about 80 core-minutes)")
    p.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    p.add_argument("--curve-minutes", type=float, default=5, help="0: no learning curve")
    p.add_argument("--curve-games", type=int, default=32)
    p.set_defaults(func=cmd_target)
    return ap


def main() -> None:
    ap = build_parser()
    args = ap.parse_args()
    try:
        if args.command == "run":
            for v in args.variants or []:
                settings(v)
    except ValueError as e:
        ap.error(str(e))
    print(f"# {benchlib.cpu_model()}, {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    args.func(args)


if __name__ == "__main__":
    main()
