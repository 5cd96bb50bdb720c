"""Does int8 cost strength? The same checkpoint on the int8 backend against fp32, same runs
per move, over the fixture openings from both seats.

    python benchmarks/bench_int8_match.py --model PATH [--runs 100 200] [--openings 128]
        [--fp32 onnx] [--processes 1]

int8 may join `auto` (nn/backends.py INT8_IN_AUTO) only if the paired 95% interval of its
Elo against fp32 lies above -35 (the bar was set before the first match): a match that cannot
rule out a loss of that size is inconclusive, and auto stays on fp32. With several --runs the
games of every budget are pooled (each opening at each budget is one pair of games), which
narrows the interval; each budget's own summary is printed too. Prints the arena's summaries
and the decision. The openings are split across --processes processes (one core each).
"""

from __future__ import annotations

import argparse
import time

import benchlib  # noqa: E402,F401  (puts src/ on the path)

ELO_BAR = -35.0


def _part(model: str, runs: int, fp32: str, indices: list[int], q) -> None:
    from pyhexz.infra.process import init_worker_process
    init_worker_process()
    from pyhexz.nn import Predictor
    from pyhexz.search.players import NeuralPlayer, resolve_model_path
    from pyhexz.train.arena import load_openings, play_match
    path = resolve_model_path(model)
    openings = load_openings()
    games = 2 * len(indices)
    int8 = NeuralPlayer(Predictor.from_path(path, backend="int8"), runs, name="int8",
                        max_games=games)
    ref = NeuralPlayer(Predictor.from_path(path, backend=fp32), runs, name=f"fp32 ({fp32})",
                       max_games=games)
    if int8.predictor.backend.name != "int8":
        q.put("int8 did not build (see the log)")
        return
    r = play_match(int8, ref, [openings[i] for i in indices])
    q.put(r.outcomes)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint, TorchScript file or directory")
    ap.add_argument("--runs", type=int, nargs="+", default=[100],
                    help="MCTS simulations per move, both players; several: a match at each")
    ap.add_argument("--openings", type=int, default=128, help="fixture openings (x2 seats)")
    ap.add_argument("--fp32", default="onnx", choices=["torch", "onnx"],
                    help="the fp32 reference backend (onnx: the same runtime as int8)")
    ap.add_argument("--processes", type=int, default=1)
    a = ap.parse_args()
    from pyhexz.infra.process import configure_logging, spawn_context
    from pyhexz.train.arena import summarize
    configure_logging("WARNING")
    ctx = spawn_context()
    q = ctx.Queue()
    parts = [p for p in (list(range(a.openings))[i::a.processes] for i in range(a.processes))
             if p]
    pooled = []
    for runs in a.runs:
        t0 = time.monotonic()
        procs = [ctx.Process(target=_part, args=(a.model, runs, a.fp32, p, q)) for p in parts]
        for p in procs:
            p.start()
        results = [q.get() for _ in procs]
        for p in procs:
            p.join()
        if any(isinstance(r, str) for r in results):
            raise SystemExit(next(r for r in results if isinstance(r, str)))
        outcomes = [x for r in results for x in r]   # opening by opening: pairs stay together
        pooled += outcomes
        res = summarize("int8", f"fp32 ({a.fp32})", outcomes, time.monotonic() - t0,
                        games_per_opening=2)
        print(f"# int8 vs fp32: {a.model}, {runs} runs/move, {len(outcomes) // 2} openings x 2 "
              f"seats", flush=True)
        print(res.summary(), flush=True)
    if len(a.runs) > 1:
        res = summarize("int8", f"fp32 ({a.fp32})", pooled, 0.0, games_per_opening=2)
        print(f"# pooled: runs/move {' and '.join(map(str, a.runs))}, "
              f"{len(pooled) // 2} opening-budget pairs")
        print(res.summary())
    ok = res.elo_paired_low > ELO_BAR
    print(f"decision: int8 {'may join' if ok else 'stays out of'} auto (paired Elo low "
          f"{res.elo_paired_low:+.0f} {'>' if ok else '<='} {ELO_BAR:+.0f})")


if __name__ == "__main__":
    main()
