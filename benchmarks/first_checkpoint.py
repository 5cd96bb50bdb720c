"""The first minutes of `pyhexz train`: when the first game and the first checkpoint arrive.

    python benchmarks/first_checkpoint.py [--timeout 900] [-- EXTRA TRAIN FLAGS]

Runs `pyhexz train --dir TMP` as a new user would (its defaults, plus any flags after `--`)
until checkpoint 1 is written, then stops it with SIGINT, as Ctrl-C would. Reports, in
seconds from the command's start:

- the first progress line, and what its estimates said (first_games_in, first_checkpoint_in);
- the first finished game (the first file in incoming/);
- checkpoint 1 (its log line);
- how long the stop took, and how many games under way were kept (unfinished/).

Issue 17's target: the first checkpoint within 5 minutes on an idle two-core machine. The
load average at the start and the end is printed beside the result: on a busy machine the
times grow with it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib

CHECKPOINT_1 = re.compile(r"checkpoint model=\S+ checkpoint=1 ")
PROGRESS = re.compile(r"progress elapsed=\S+ .*first_games_in=(\S+) first_checkpoint_in=(\S+)")
KEPT = re.compile(r"train stopped .* unfinished_kept=(\d+)")


def measure(extra: list[str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="first-checkpoint-") as tmp:
        run_dir = Path(tmp) / "run"
        incoming = run_dir / "models" / "flagz" / "local" / "incoming"
        cmd = [sys.executable, "-m", "pyhexz", "train", "--dir", str(run_dir), *extra]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=benchlib.src_env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, bufsize=0, start_new_session=True)
        assert proc.stderr is not None
        fd = proc.stderr.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        out: dict = {"command": " ".join(["pyhexz", *cmd[3:]]), "load_start": os.getloadavg()[0]}
        log: list[str] = []
        pending = b""
        try:
            while "checkpoint_1_s" not in out:
                if time.monotonic() - t0 > timeout:
                    out["timed_out"] = True
                    break
                if proc.poll() is not None:
                    raise SystemExit("train exited early:\n" + "".join(log[-30:]))
                lines = []
                if sel.select(timeout=0.2):
                    pending += os.read(fd, 1 << 16)
                    *done, pending = pending.split(b"\n")
                    lines = [b.decode(errors="replace") + "\n" for b in done]
                for line in lines:
                    log.append(line)
                    now = round(time.monotonic() - t0, 1)
                    m = PROGRESS.search(line)
                    if m and "first_progress_s" not in out:
                        out.update(first_progress_s=now, estimate_first_games=m[1],
                                   estimate_first_checkpoint=m[2])
                    if m and "first_estimate_s" not in out and m[2] != "?":
                        out.update(first_estimate_s=now, estimated_first_games=m[1],
                                   estimated_first_checkpoint=m[2])
                    if CHECKPOINT_1.search(line):
                        out["checkpoint_1_s"] = now
                if "first_game_s" not in out and incoming.is_dir() and any(
                        p.name.endswith(".pb.gz") and not p.name.startswith(".")
                        for p in incoming.iterdir()):
                    out["first_game_s"] = round(time.monotonic() - t0, 1)
        finally:
            stop = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, rest = proc.communicate(timeout=120)
            log.append((pending + rest).decode(errors="replace"))
            out["stop_s"] = round(time.monotonic() - stop, 1)
            out["exit_code"] = proc.returncode
        m = KEPT.search("".join(log))
        out["unfinished_kept"] = int(m[1]) if m else None
        out["load_end"] = os.getloadavg()[0]
        return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--timeout", type=float, default=900, help="give up after this many s")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("extra", nargs="*", help="flags for `pyhexz train` (after --)")
    a = ap.parse_args()
    r = measure(a.extra, a.timeout)
    r["machine"] = f"{benchlib.cpu_model()}, {len(os.sched_getaffinity(0))} usable cores"
    if a.json:
        print(json.dumps(r, indent=1))
        return
    for k, v in r.items():
        print(f"{k:28} {v}")


if __name__ == "__main__":
    main()
