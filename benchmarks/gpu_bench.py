"""The GPU path's figures: self-play examples/s, training samples/s, torch vs onnxruntime.

    python benchmarks/gpu_bench.py [--device cuda] [--dry-run] [--results FILE]
                                   [--sections selfplay,train,onnx] [--seconds 10]

benchmarks/gpu_check.sh runs it after the tests (BENCHMARKS.md, "GPU"); it also runs alone.
Each figure is one line that starts with `FIGURE <section>`, printed as soon as it is measured;
a section that cannot run prints `SKIP <section>: why`, one that breaks `FAIL <section>: why`
(and the exit status is 1), and the other sections still run. `--results FILE` adds those
lines to FILE too (gpu_check.sh's figures file), rewriting it atomically after each, so a run
cut short keeps what it measured.

- selfplay: the project's self-play loop (train.selfplay.run_selfplay, what `pyhexz selfplay
  --device cuda` runs in each process) with a fresh network on the device, `--parallel-games`
  = the network's batch. Every searched position counts, finished game or not (as in
  bench_selfplay.py): short runs of hundreds of games at once finish none.
- train: the trainer's steps (train.trainer.train_steps, AdamW and augmentation as
  TrainConfig's defaults) over random legal-shaped examples.
- onnx: the same network exported with torch.onnx (pyhexz has no ONNX export of its own yet,
  issue 14 item 2) and run by onnxruntime's CUDA execution provider (the CPU one on the CPU),
  numpy in, numpy out on both sides, against torch; needs onnxruntime-gpu, else SKIP.

`--dry-run`: the CPU, tiny networks, batches and times, so that the whole script runs in well
under a minute and is tested on machines without a GPU (tests/test_gpu_check.py).
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import benchlib  # noqa: F401  (puts src/ on the path)

SECTIONS = ("selfplay", "train", "onnx")


@dataclass(frozen=True)
class Sizes:
    """What one run measures: networks (blocks, filters) and batch sizes per section."""

    nets: tuple[tuple[int, int], ...]
    selfplay_batches: tuple[int, ...]
    runs_per_move: int
    train_batches: tuple[int, ...]
    onnx_batches: tuple[int, ...]
    seconds: float          # per self-play or training figure, after its warm-up

    @staticmethod
    def full(seconds: float) -> Sizes:
        return Sizes(nets=((10, 128), (5, 64), (3, 32)), selfplay_batches=(256, 512, 1024),
                     runs_per_move=100, train_batches=(256, 1024), onnx_batches=(256, 1024),
                     seconds=seconds)

    @staticmethod
    def dry() -> Sizes:
        return Sizes(nets=((2, 16), (1, 8)), selfplay_batches=(4, 8), runs_per_move=4,
                     train_batches=(16,), onnx_batches=(4,), seconds=0.5)


class Report:
    """The FIGURE / SKIP / FAIL lines: printed, and added to `path` (atomically rewritten)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines = path.read_text().splitlines() if path is not None and path.exists() else []
        self.failed = False

    def add(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)
        if self.path is not None:
            from pyhexz.infra.atomicfile import atomic_write_bytes
            atomic_write_bytes(self.path, ("\n".join(self.lines) + "\n").encode())

    def figure(self, section: str, **values: object) -> None:
        self.add(f"FIGURE {section} " + " ".join(f"{k}={_fmt(v)}" for k, v in values.items()))

    def skip(self, section: str, why: str) -> None:
        self.add(f"SKIP {section}: {why}")

    def fail(self, section: str, why: str) -> None:
        self.failed = True
        self.add(f"FAIL {section}: {why}")


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 1e-2 and v != 0 else f"{v:.1f}" if abs(v) >= 100 \
            else f"{v:.3f}"
    return str(v)


def synchronize(device) -> None:
    """Waits for the device's queued work (asynchronous CUDA kernels), so timings are real."""
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def random_batch(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Boards and masks of the network's input shapes, every row with a legal move."""
    from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE
    boards = rng.integers(0, 2, size=(n, *BOARD_SHAPE)).astype(np.float32)
    masks = rng.random((n, *MASK_SHAPE)) < 0.3
    masks[:, 1, 0, 0] = True
    return boards, masks


def new_net(blocks: int, filters: int, device):
    import torch

    from pyhexz.nn import HexzNet
    torch.manual_seed(0)
    return HexzNet(blocks, filters).to(device).eval()


# --------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------


def bench_selfplay(report: Report, sizes: Sizes, device) -> None:
    from pyhexz import hexz_pb2 as pb
    from pyhexz.nn import Predictor
    from pyhexz.search.driver import SearchConfig
    from pyhexz.train.selfplay import run_selfplay

    config = SearchConfig(runs_per_move=sizes.runs_per_move)
    rng = np.random.default_rng(0)
    key = pb.ModelKey(name="gpu-bench", checkpoint=0)
    for blocks, filters in sizes.nets:
        predictor = Predictor(new_net(blocks, filters, device), device)

        def source(predictor: Predictor = predictor) -> tuple[Predictor, pb.ModelKey]:
            return predictor, key

        for batch in sizes.selfplay_batches:
            for _ in range(3):   # kernels loaded and chosen for this batch size first
                predictor(*random_batch(batch, rng))
            stats = run_selfplay(source, lambda req: None, config, parallel_games=batch,
                                 max_seconds=sizes.seconds, seed=batch)
            seconds = stats.seconds
            report.figure("selfplay", net=f"{blocks}x{filters}", batch=batch,
                          runs_per_move=sizes.runs_per_move,
                          examples_per_s=stats.positions / seconds,
                          simulations_per_s=stats.simulations / seconds,
                          nn_share=stats.nn_share, moves=stats.positions, seconds=seconds)


def random_examples(n: int, rng: np.random.Generator):
    """`n` training examples of legal shape: visit distributions over the legal moves,
    results of +-1, scores; speed does not depend on what they say."""
    from pyhexz.game.examples import Arrays
    boards, masks = random_batch(n, rng)
    probs = masks * rng.random(masks.shape).astype(np.float32)
    probs /= probs.reshape(n, -1).sum(1).reshape(n, 1, 1, 1)
    results = rng.choice(np.array([-1.0, 1.0], np.float32), n)
    scores = rng.normal(0, 9, n).astype(np.float32)
    return Arrays(boards, masks, probs.astype(np.float32), results, scores)


def bench_train(report: Report, sizes: Sizes, device) -> None:
    import torch

    from pyhexz.train.config import TrainConfig
    from pyhexz.train.trainer import ReplayWindow, train_steps

    cfg = TrainConfig()
    rng = np.random.default_rng(0)
    window = ReplayWindow(4096)
    window.add(random_examples(4096, rng))
    for blocks, filters in sizes.nets:
        net = new_net(blocks, filters, device)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate,
                                weight_decay=cfg.weight_decay)
        for batch in sizes.train_batches:
            # train_steps copies the weights first (its rollback on a non-finite loss), as the
            # trainer's every call does; 20 steps a call keeps that copy a small share.
            def steps(n: int, batch: int = batch, net=net, opt=opt) -> None:
                train_steps(net, opt, window, n * batch, batch, rng, device,
                            augment=cfg.augment, score_weight=cfg.score_weight)
            steps(2)
            synchronize(device)
            t0 = time.perf_counter()
            done = 0
            while done == 0 or time.perf_counter() - t0 < sizes.seconds:
                steps(20)
                done += 20
            synchronize(device)
            seconds = time.perf_counter() - t0
            report.figure("train", net=f"{blocks}x{filters}", batch=batch,
                          samples_per_s=done * batch / seconds, steps=done, seconds=seconds,
                          augment=cfg.augment)


def export_onnx(net, path: Path) -> str:
    """torch.onnx export of the hexz signature (boards, masks) -> (logits, value) with a
    dynamic batch axis; returns which exporter wrote it. Here until pyhexz exports ONNX
    itself (issue 14, item 2)."""
    import torch

    from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE
    cpu_net = net.cpu() if next(net.parameters()).device.type != "cpu" else net
    args = (torch.zeros((2, *BOARD_SHAPE)), torch.ones((2, *MASK_SHAPE), dtype=torch.bool))
    names = dict(input_names=["boards", "masks"], output_names=["logits", "value"])
    batch_axis = {name: {0: "batch"} for name in ("boards", "masks", "logits", "value")}
    try:
        with warnings.catch_warnings():   # "the legacy TorchScript-based ONNX export"
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(cpu_net, args, str(path), dynamo=False, opset_version=17,
                              dynamic_axes=batch_axis, **names)
        return "torchscript-based, opset 17"
    except Exception as first:   # a torch without the TorchScript-based exporter
        try:
            batch = torch.export.Dim("batch")
            torch.onnx.export(cpu_net, args, str(path), dynamo=True,
                              dynamic_shapes=({0: batch}, {0: batch}), **names)
            return "dynamo"
        except Exception as second:
            raise RuntimeError(f"torch.onnx.export failed: {first!r}; dynamo: {second!r}") \
                from second


def time_calls(fn: Callable[[], object], seconds: float, least: int = 5) -> float:
    """Seconds per call of `fn` (which returns host memory, so it waits for the device)."""
    fn()
    t0 = time.perf_counter()
    n = 0
    while n < least or time.perf_counter() - t0 < seconds:
        fn()
        n += 1
    return (time.perf_counter() - t0) / n


def bench_onnx(report: Report, sizes: Sizes, device) -> None:
    try:
        import onnxruntime as ort
    except ImportError as e:
        report.skip("onnx", f"onnxruntime is not importable ({e}); install onnxruntime-gpu")
        return
    provider = "CUDAExecutionProvider" if device.type == "cuda" else "CPUExecutionProvider"
    available = ort.get_available_providers()
    if provider not in available:
        report.skip("onnx", f"onnxruntime {ort.__version__} has no {provider} (it has "
                    f"{', '.join(available)}): install onnxruntime-gpu")
        return
    rng = np.random.default_rng(1)
    options = ort.SessionOptions()
    if device.type == "cpu":
        options.intra_op_num_threads = 1   # as every pyhexz process runs torch
    for blocks, filters in sizes.nets:
        net = new_net(blocks, filters, "cpu")
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "net.onnx"
            exporter = export_onnx(net, path)
            session = ort.InferenceSession(str(path), options, providers=[provider])
        net = net.to(device)
        for batch in sizes.onnx_batches:
            boards, masks = random_batch(batch, rng)
            run_torch, run_ort = torch_runner(net, device, boards, masks), \
                ort_runner(session, boards, masks)
            (t_logits, t_value), (o_logits, o_value) = run_torch(), run_ort()
            legal = masks.reshape(batch, -1)
            diff = max(float(np.abs(t_logits[legal] - o_logits[legal]).max()),
                       float(np.abs(t_value - o_value).max()))
            torch_s = time_calls(run_torch, sizes.seconds / 2)
            ort_s = time_calls(run_ort, sizes.seconds / 2)
            report.figure("onnx", net=f"{blocks}x{filters}", batch=batch, provider=provider,
                          torch_ms=torch_s * 1e3, onnxruntime_ms=ort_s * 1e3,
                          speedup=torch_s / ort_s, max_abs_diff=diff,
                          exporter=exporter.split(",")[0])


Outputs = tuple[np.ndarray, np.ndarray]


def torch_runner(net, device, boards: np.ndarray, masks: np.ndarray) -> Callable[[], Outputs]:
    """The network's logits and values for the batch, numpy in and out, as Predictor runs it."""
    import torch

    def run() -> Outputs:
        with torch.inference_mode():
            logits, value = net(torch.from_numpy(boards).to(device),
                                torch.from_numpy(masks).to(device))
            return logits.cpu().numpy(), value.cpu().numpy()
    return run


def ort_runner(session, boards: np.ndarray, masks: np.ndarray) -> Callable[[], Outputs]:
    def run() -> Outputs:
        logits, value = session.run(["logits", "value"], {"boards": boards, "masks": masks})
        return logits, value
    return run


# --------------------------------------------------------------------------


def describe(device) -> str:
    import torch
    parts = [f"python {platform.python_version()}", f"torch {torch.__version__}",
             f"device {device}"]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        parts += [f"{props.name} ({props.multi_processor_count} SMs, "
                  f"{props.total_memory / 2**30:.0f} GiB)", f"CUDA {torch.version.cuda}",
                  f"cuDNN {torch.backends.cudnn.version()}",
                  f"TF32 convolutions {'on' if torch.backends.cudnn.allow_tf32 else 'off'}"]
    else:
        parts.append(benchlib.cpu_model())
    return ", ".join(parts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda", help="torch device (default cuda)")
    ap.add_argument("--dry-run", action="store_true",
                    help="the CPU, tiny sizes: checks the script, measures nothing useful")
    ap.add_argument("--results", type=Path, help="also keep the figure lines in this file")
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, of {', '.join(SECTIONS)}")
    ap.add_argument("--seconds", type=float, default=10.0,
                    help="measured seconds per self-play or training figure (default 10)")
    args = ap.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        ap.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        ap.error("--seconds must be a positive number")

    import torch
    torch.set_num_threads(1)
    device = torch.device("cpu" if args.dry_run else args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu_bench: error: device {device}, but torch {torch.__version__} sees no CUDA "
              f"device (--dry-run runs on the CPU)", file=sys.stderr)
        return 2
    sizes = Sizes.dry() if args.dry_run else Sizes.full(args.seconds)
    report = Report(args.results)
    report.add(f"# gpu_bench{' --dry-run' if args.dry_run else ''}: {describe(device)}")
    benches = {"selfplay": bench_selfplay, "train": bench_train, "onnx": bench_onnx}
    for name in sections:
        try:
            benches[name](report, sizes, device)
        except Exception as e:   # one broken section must not cost the others' figures
            report.fail(name, f"{type(e).__name__}: {e}".splitlines()[0])
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
