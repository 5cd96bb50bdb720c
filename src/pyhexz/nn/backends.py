"""Inference backends behind Predictor: the network's forward pass on torch, onnxruntime or
onnxruntime int8, and `auto`, the fastest of them that is exact enough, chosen once.

Self-play spends nearly all its time in the forward pass, and onnxruntime runs this network's
small convolutions up to twice as fast as eager torch on one CPU core (BENCHMARKS.md,
"Inference backends"). Every backend takes validated numpy batches (Predictor checks them) and
returns Predictor's contract: probabilities float32 (N, 220), exactly 0 on illegal moves, and
values float32 (N,).

    torch  the reference: the module under inference_mode, on its device
    onnx   onnxruntime with one intra-op thread (torch's thread count: HEXZ_TORCH_THREADS), the
           CUDA execution provider when the device is cuda and onnxruntime has it
    int8   onnxruntime with the network statically quantized to int8, calibrated on real
           positions (onnxfile.quantize_int8)
    auto   the fastest exact-enough one, measured at start-up on real positions; int8 only
           where INT8_IN_AUTO says the strength match allowed it

A backend that cannot be built (the model does not convert, onnxruntime is missing, the
result disagrees with torch) falls back to torch with one log line; it never fails a run.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Protocol

import numpy as np
import torch
from torch import nn

from pyhexz.game.board import POLICY_SIZE
from pyhexz.infra.config import BACKENDS
from pyhexz.nn.checkpoint import _short

__all__ = ["BACKENDS", "INT8_IN_AUTO", "Backend", "OnnxBackend", "TorchBackend",
           "calibration_positions", "choose_backend", "make_backend", "masked_softmax"]

log = logging.getLogger(__name__)

# Whether `auto` may pick int8: yes since the int8-vs-fp32 match on the shipped model
# (BENCHMARKS.md, "int8 strength": both heads fp32, 512 games at 100 and 200 runs a move)
# ruled out a loss of 35 Elo, the bar set before the first match.
INT8_IN_AUTO = True
# Largest difference from torch (probabilities and values) that a backend may show on the
# calibration positions: fp32 backends differ only by summation order; int8 by quantization,
# and a larger error than this means the quantization broke the network.
# int8: the shipped model's largest value error over 1024 positions is 0.15 (mean 0.015;
# BENCHMARKS.md, "int8 fidelity"); a broken quantization is off by far more.
TOLERANCE = {"onnx": 1e-4, "int8": 0.25}
CALIBRATION_POSITIONS = 256


class Backend(Protocol):
    """Predictor's forward pass: validated numpy batches in, (probs, values) out."""

    name: str

    def __call__(self, boards: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        ...


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    # from_numpy shares memory. It rejects negative strides and warns on
    # read-only arrays, so only those rare inputs pay for a copy.
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a, order="C")
    return torch.from_numpy(a)


class TorchBackend:
    """The reference: the module itself, under inference_mode, on ``device``."""

    name = "torch"

    def __init__(self, module: nn.Module, device: torch.device) -> None:
        self.module = module
        self.device = device

    def __call__(self, boards: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = boards.shape[0]
        with torch.inference_mode():
            # .to() is a no-op (no copy) when the device is the CPU.
            board_t = _as_tensor(boards).to(self.device)
            mask_t = _as_tensor(masks).to(self.device)
            logits, value = self.module(board_t, mask_t)
            probs = torch.softmax(logits.float(), dim=1)
            # exp(-1e32 - max) already underflows to 0 for illegal moves; this
            # only matters for rows with no legal move, where softmax would
            # spread mass uniformly over illegal ones.
            probs.masked_fill_(~mask_t.reshape(n, POLICY_SIZE), 0.0)
            return probs.cpu().numpy(), value.float().reshape(n).cpu().numpy()


def masked_softmax(logits: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Softmax over the legal moves of each row; illegal moves exactly 0, and a row without
    a legal move all 0 (as TorchBackend). Masks itself rather than trusting the -1e32 of
    the graph: quantization may not keep that value."""
    legal = masks.reshape(len(logits), POLICY_SIZE)
    z = np.where(legal, logits.astype(np.float32, copy=False), np.float32(-np.inf))
    top = z.max(axis=1, keepdims=True)
    top[~np.isfinite(top)] = 0.0
    e = np.exp(z - top)
    total = e.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    return (e / total).astype(np.float32, copy=False)


def _providers(device: torch.device) -> list[str]:
    import onnxruntime as ort
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        _say_no_cuda()
    elif device.type != "cpu":
        log.warning("onnxruntime has no provider for device=%s; it runs on the CPU", device)
    return ["CPUExecutionProvider"]


@functools.cache
def _say_no_cuda() -> None:
    """Said once a process: the CUDA device was asked for, onnxruntime cannot use it."""
    log.warning("onnxruntime has no CUDAExecutionProvider (install onnxruntime-gpu); "
                "the onnx backend runs on the CPU")


class OnnxBackend:
    """onnxruntime on ONNX bytes with the hexz signature (onnxfile.py); ``name`` says which
    (onnx or int8). ``threads``: intra-op threads, by default torch's (one per process)."""

    def __init__(self, data: bytes, device: torch.device, name: str = "onnx",
                 threads: int | None = None) -> None:
        import onnxruntime as ort
        self.name = name
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(data, options, providers=_providers(device))

    def __call__(self, boards: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        logits, value = self.session.run(None, {"board": np.ascontiguousarray(boards),
                                                "action_mask": np.ascontiguousarray(masks)})
        return masked_softmax(logits, masks), value.reshape(len(boards)).astype(np.float32)


@functools.cache
def calibration_positions(n: int = CALIBRATION_POSITIONS, seed: int = 14
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(boards, masks) of ``n`` real positions: the fixture openings after 0-80 random plies,
    the spread of a game's stages. Fixed seeds: every process calibrates on the same ones
    (another ``seed``: positions the calibration never saw, for measuring it)."""
    import random

    from pyhexz.train.arena import load_openings, random_positions
    rng = random.Random(seed)
    openings = load_openings()
    plies = (rng.randint(0, 80) for _ in range(10 * n))
    starts = (openings[i % len(openings)] for i in range(10 * n))
    boards, masks = zip(*(b.encode() for _, b in zip(range(n), random_positions(
        starts, plies, rng), strict=False)), strict=True)
    return np.stack(boards), np.stack(masks)


def max_error(got: tuple[np.ndarray, np.ndarray], want: tuple[np.ndarray, np.ndarray]) -> float:
    """The largest absolute difference of probabilities or values."""
    return float(max(np.abs(got[0] - want[0]).max(), np.abs(got[1] - want[1]).max()))


def seconds_per_call(backend: Backend, boards: np.ndarray, masks: np.ndarray) -> float:
    """A backend's time for a batch of 32 (self-play) plus one of 1 (the CPU player), median
    of 5 after a warm-up call."""
    total = 0.0
    for size in (32, 1):
        b, m = boards[:size], masks[:size]
        backend(b, m)
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            backend(b, m)
            times.append(time.perf_counter() - t0)
        total += sorted(times)[2]
    return total


def choose_backend(reference: Backend, candidates: list[Callable[[], Backend]],
                   boards: np.ndarray, masks: np.ndarray,
                   measure: Callable[[Backend, np.ndarray, np.ndarray], float] = seconds_per_call
                   ) -> Backend:
    """`auto`: the fastest of ``reference`` and the candidates (built by the callables) that
    agrees with the reference within TOLERANCE on ``boards``/``masks``. A candidate that
    cannot be built or disagrees is left out with a log line. ``measure`` is the timing
    (tests pass their own)."""
    want = reference(boards, masks)
    timed = [(measure(reference, boards, masks), 0, reference)]
    for i, build in enumerate(candidates, 1):
        backend = _built(build)
        if backend is None:
            continue
        err = max_error(backend(boards, masks), want)
        if err > TOLERANCE.get(backend.name, 0.0):
            log.warning("backend auto: %s left out, it differs from torch by %.2g", backend.name,
                        err)
            continue
        timed.append((measure(backend, boards, masks), i, backend))
    best = min(timed, key=lambda t: t[:2])[2]
    log.info("backend auto chose %s (%s)", best.name,
             " ".join(f"{b.name}={t * 1e3:.2f}ms" for t, _, b in timed))
    return best


def _built(build: Callable[[], Backend]) -> Backend | None:
    try:
        return build()
    except Exception as e:   # noqa: BLE001 - any failure to convert means: use torch
        log.warning("backend %s cannot be built, using torch: %s",
                    getattr(build, "backend_name", "?"), _short(e))
        return None


class _Builders:
    """How to build each non-torch backend for one module; the fp32 ONNX bytes are made
    once (or are the checkpoint's model.onnx) and shared by onnx and int8."""

    def __init__(self, module: nn.Module, device: torch.device, onnx: bytes | None) -> None:
        self.module, self.device, self._onnx = module, device, onnx

    def fp32(self) -> bytes:
        if self._onnx is None:
            from pyhexz.nn.onnxfile import export_onnx
            self._onnx = export_onnx(self.module)
        return self._onnx

    def build(self, name: str) -> Callable[[], Backend]:
        def make() -> Backend:
            if name == "onnx":
                return OnnxBackend(self.fp32(), self.device)
            from pyhexz.nn.onnxfile import quantize_int8
            return OnnxBackend(quantize_int8(self.fp32(), *calibration_positions()),
                               self.device, name="int8")
        make.backend_name = name  # type: ignore[attr-defined]
        return make


# The name auto chose for a kind of network on a device: chosen once a process (a worker
# that swaps in each new checkpoint keeps the choice).
_auto_choice: dict[tuple[str, int], str] = {}


def make_backend(module: nn.Module, device: torch.device, name: str = "torch",
                 onnx: bytes | None = None) -> Backend:
    """The backend ``name`` (one of BACKENDS) for ``module`` (on ``device``, in eval mode).
    ``onnx``: the network's ONNX bytes when already at hand (a checkpoint's model.onnx)."""
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    reference = TorchBackend(module, device)
    if name == "torch":
        return reference
    builders = _Builders(module, device, onnx)
    kind = (str(device), sum(p.numel() for p in module.parameters()))
    if name == "auto" and kind in _auto_choice:
        name = _auto_choice[kind]
        if name == "torch":
            return reference
    boards, masks = calibration_positions()
    boards, masks = boards[:64], masks[:64]
    if name == "auto":
        names = ["onnx", "int8"] if INT8_IN_AUTO else ["onnx"]
        chosen = choose_backend(reference, [builders.build(n) for n in names], boards, masks)
        _auto_choice[kind] = chosen.name
        return chosen
    backend = _built(builders.build(name))
    if backend is None:
        return reference
    err = max_error(backend(boards, masks), reference(boards, masks))
    if err > TOLERANCE[name]:
        log.warning("backend %s differs from torch by %.2g (more than %g), using torch", name,
                    err, TOLERANCE[name])
        return reference
    return backend
