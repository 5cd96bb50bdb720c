"""What checking that every example is a Flagz position costs the training server.

    python benchmarks/bench_validate.py              # defaults: --requests 40 --repeats 7

Real self-play games cut into requests of 100 examples, as bench_ingest.py posts them. Timed,
side by side in one run, per example (median over the repeats):

- decode: `examples.decode`, everything the server runs on a request's examples (arrays out
  of their np.save bytes, shapes, values, the position check);
- position check: `board.check_encoded` alone (rebuild each position from its planes, encode
  it again, compare), the part issue 13 added;
- the share of decode that the position check is.
"""

from __future__ import annotations

import argparse
import statistics
import time

import benchlib  # also puts src/ on the path

EXAMPLES_PER_REQUEST = 100


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    from pyhexz import hexz_pb2 as pb
    from pyhexz.game.board import check_encoded
    from pyhexz.game.examples import decode
    from pyhexz.search.driver import SearchConfig, uniform_evaluator
    from pyhexz.train.selfplay import run_selfplay

    print(f"machine: {benchlib.cpu_model()}; {benchlib.pin_to_one_core()}")
    games: list = []
    key = pb.ModelKey(name="bench", checkpoint=0)
    while sum(len(g.examples) for g in games) < a.requests * EXAMPLES_PER_REQUEST:
        run_selfplay(lambda: (uniform_evaluator, key), games.append, SearchConfig(runs_per_move=2),
                     parallel_games=16, max_games=16, seed=len(games))
    examples = [ex for g in games for ex in g.examples]
    requests = [examples[i * EXAMPLES_PER_REQUEST:(i + 1) * EXAMPLES_PER_REQUEST]
                for i in range(a.requests)]
    arrays = [decode(r) for r in requests]
    n = a.requests * EXAMPLES_PER_REQUEST

    def timed(f) -> float:
        t0 = time.perf_counter()
        f()
        return (time.perf_counter() - t0) / n * 1e6

    full, check = [], []
    for _ in range(a.repeats):   # interleaved, so both see the same machine
        full.append(timed(lambda: [decode(r) for r in requests]))
        check.append(timed(lambda: [check_encoded(x.boards, x.masks) for x in arrays]))
    f, c = statistics.median(full), statistics.median(check)
    print(f"{n} examples in requests of {EXAMPLES_PER_REQUEST}, median of {a.repeats} repeats")
    print(f"decode          {f:7.2f} us/example  ({1e6 / f:,.0f} examples/s on one core)")
    print(f"position check  {c:7.2f} us/example  ({c / f:.0%} of decode)")


if __name__ == "__main__":
    main()
