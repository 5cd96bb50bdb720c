#!/usr/bin/env python3
"""Speed of the Flagz engine (pyhexz.game.board) on one core.

Measures, interleaved so that every repeat of every figure sees the same machine weather:

  playouts      Board.playout(seed) from fresh Board.new positions: whole random games in
                compiled code, one Python call each.
  python games  whole games driven from Python,
                `while not b.is_over: b.play(*rng.choice(b.legal_moves()))`, from Board.new;
                also reported as plies per second.
  legal_moves   Board.legal_moves() calls on positions sampled from random games.
  encode        Board.encode() calls (planes and action mask as numpy arrays) on the same.

Each figure is measured in --repeats rounds of about --seconds each; the median and the range
over the rounds are printed. Run from the repository root after building the extension:

    python setup.py build_ext --build-lib=src
    python benchmarks/bench_board.py
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time

import numpy as np

import benchlib  # noqa: F401  (puts src/ on the path)
import pyhexz.game.board as board_module
from benchlib import cpu_model, cython_version, pin_to_one_core
from pyhexz.game.board import Board

TARGETS = {"playouts": 30_000, "python games": 5_000}





def sample_positions(n: int, seed: int) -> list:
    """n positions from random games, spread over all plies of the games (none finished)."""
    rng = random.Random(seed)
    out = []
    g = 0
    while len(out) < n:
        b = Board.new(seed * 100_003 + g)
        g += 1
        history = []
        while not b.is_over:
            history.append(b.copy())
            b.random_move(rng.getrandbits(63))
        out.extend(rng.sample(history, min(len(history), 8)))
    return out[:n]


# Each bench_* runs for about `seconds` and returns (operations, elapsed seconds, extra count).

def bench_playouts(seconds: float, rep: int):
    boards = [Board.new(rep * 1_000_003 + i) for i in range(256)]
    seed = rep * 1_000_000_007
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for b in boards:
            b.playout(seed + n)
            n += 1
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start, 0


def bench_python_games(seconds: float, rep: int):
    rng = random.Random(rep)
    games = plies = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for _ in range(32):
            b = Board.new(rep * 1_000_003 + games)
            while not b.is_over:
                b.play(*rng.choice(b.legal_moves()))
                plies += 1
            games += 1
        now = time.perf_counter()
        if now >= deadline:
            return games, now - start, plies


def bench_legal_moves(seconds: float, positions: list):
    n = 0
    total_moves = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for b in positions:
            total_moves += len(b.legal_moves())
        n += len(positions)
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start, total_moves


def bench_encode(seconds: float, positions: list):
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        for b in positions:
            b.encode()
        n += len(positions)
        now = time.perf_counter()
        if now >= deadline:
            return n, now - start, 0


def fmt(x: float) -> str:
    return f"{x:,.0f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=2.0,
                    help="length of one repeat of one measurement (default 2.0; the whole run "
                         "takes about 4 x repeats x seconds)")
    ap.add_argument("--repeats", type=int, default=5, help="repeats per measurement (default 5)")
    ap.add_argument("--positions", type=int, default=512,
                    help="sampled positions for legal_moves/encode (default 512)")
    ap.add_argument("--no-pin", action="store_true", help="do not pin the process to one core")
    args = ap.parse_args(argv)
    if args.seconds <= 0 or args.repeats < 1 or args.positions < 1:
        ap.error("--seconds must be > 0, --repeats and --positions >= 1")

    pinned = "not pinned (--no-pin)" if args.no_pin else pin_to_one_core()
    print("pyhexz engine benchmark (benchmarks/bench_board.py)")
    print(f"  date      {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"  python    {platform.python_implementation()} {platform.python_version()}")
    print(f"  numpy     {np.__version__}")
    print(f"  cython    {cython_version(board_module)}")
    print(f"  cpu       {cpu_model()}, {os.cpu_count()} logical CPUs")
    print(f"  affinity  {pinned}")
    print(f"  plan      {args.repeats} repeats x 4 measurements x {args.seconds:g} s, interleaved")
    sys.stdout.flush()

    positions = sample_positions(args.positions, seed=12345)
    # Warm up (first calls, caches, CPU frequency) before anything is timed.
    bench_playouts(0.2, 999)
    bench_python_games(0.2, 999)
    bench_legal_moves(0.1, positions)
    bench_encode(0.1, positions)

    rates: dict[str, list[float]] = {k: [] for k in
                                     ("playouts", "python games", "python plies", "legal_moves",
                                      "encode")}
    moves_per_call = []
    for rep in range(args.repeats):
        n, t, _ = bench_playouts(args.seconds, rep)
        rates["playouts"].append(n / t)
        n, t, plies = bench_python_games(args.seconds, rep)
        rates["python games"].append(n / t)
        rates["python plies"].append(plies / t)
        n, t, total = bench_legal_moves(args.seconds, positions)
        rates["legal_moves"].append(n / t)
        moves_per_call.append(total / n)
        n, t, _ = bench_encode(args.seconds, positions)
        rates["encode"].append(n / t)
        print(f"  repeat {rep + 1}/{args.repeats}: playouts {fmt(rates['playouts'][-1])}/s, "
              f"python games {fmt(rates['python games'][-1])}/s, "
              f"legal_moves {fmt(rates['legal_moves'][-1])}/s, "
              f"encode {fmt(rates['encode'][-1])}/s", flush=True)

    units = {"playouts": "playouts/s", "python games": "games/s", "python plies": "plies/s",
             "legal_moves": "calls/s", "encode": "calls/s"}
    print()
    print(f"{'measurement':<14} {'median':>12} {'min':>12} {'max':>12}  {'unit':<11} target")
    for name, xs in rates.items():
        med = statistics.median(xs)
        target = ""
        if name in TARGETS:
            ok = "met" if med >= TARGETS[name] else "MISSED"
            target = f">= {fmt(TARGETS[name])}: {ok} ({med / TARGETS[name]:.1f}x)"
        print(f"{name:<14} {fmt(med):>12} {fmt(min(xs)):>12} {fmt(max(xs)):>12}  "
              f"{units[name]:<11} {target}".rstrip())
    games = statistics.median(rates["python games"])
    plies = statistics.median(rates["python plies"])
    print()
    print(f"plies per Python-driven game: {plies / games:.1f}; legal moves per call on the "
          f"sampled positions: {statistics.mean(moves_per_call):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
