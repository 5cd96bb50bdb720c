"""How exact is int8, per way of quantizing? Variants of onnxruntime's static quantization
of one checkpoint, each compared with fp32 (onnxruntime) on real positions it was not
calibrated on (calibration_positions with another seed), and timed at batch 32.

    python benchmarks/bench_int8_fidelity.py --model PATH [--positions 1024]
        [--variants product all-int8 ...]

Per variant: the value's mean and largest absolute error, the policy's mean total variation
distance, how often the most probable move is the same as fp32's, and the time per call at
batch 32 as a ratio to fp32. One core, one thread. The `int8` backend quantizes as
onnxfile.quantize_int8 does (the variant `product`).
"""

from __future__ import annotations

import argparse
import statistics

import benchlib  # noqa: E402,F401  (puts src/ on the path)


def variants():
    """name -> keyword arguments of onnxfile.quantize_int8."""
    from onnxruntime.quantization import CalibrationMethod

    from pyhexz.nn.onnxfile import VALUE_HEAD
    # product: what the int8 backend does (both heads in fp32).
    return {
        "product": {},
        "all-int8": {"fp32_prefixes": ()},
        "value-head-fp32": {"fp32_prefixes": (VALUE_HEAD,)},
        "all-int8+reduce-range": {"fp32_prefixes": (), "reduce_range": True},
        "all-int8+percentile": {"fp32_prefixes": (), "method": CalibrationMethod.Percentile},
        "product+percentile": {"method": CalibrationMethod.Percentile},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint, TorchScript file or directory")
    ap.add_argument("--positions", type=int, default=1024)
    ap.add_argument("--variants", nargs="+", default=None)
    ap.add_argument("--seconds", type=float, default=1.0, help="per timing")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    benchlib.pin_to_one_core()
    import warnings
    warnings.simplefilter("ignore")
    import logging
    logging.getLogger("root").setLevel(logging.ERROR)
    import numpy as np
    import torch
    torch.set_num_threads(1)

    from pyhexz.nn import Predictor
    from pyhexz.nn.backends import OnnxBackend, calibration_positions
    from pyhexz.nn.onnxfile import export_onnx, quantize_int8
    from pyhexz.search.players import resolve_model_path

    path = resolve_model_path(a.model)
    net = Predictor.from_path(path, backend="torch").module
    fp32_bytes = export_onnx(net)
    cpu = torch.device("cpu")
    fp32 = OnnxBackend(fp32_bytes, cpu)
    boards, masks = calibration_positions(a.positions, seed=2026)   # unseen positions
    want_p, want_v = fp32(boards, masks)
    calib = calibration_positions()
    table = variants()
    names = a.variants or list(table)
    backends = {"fp32": fp32}
    rows = {}
    for name in names:
        q = OnnxBackend(quantize_int8(fp32_bytes, *calib, **table[name]), cpu, name=name)
        backends[name] = q
        p, v = q(boards, masks)
        dv = np.abs(v - want_v)
        tv = 0.5 * np.abs(p - want_p).sum(axis=1)
        same = (p.argmax(axis=1) == want_p.argmax(axis=1)).mean()
        rows[name] = (dv.mean(), dv.max(), tv.mean(), same)
    times: dict[str, list[float]] = {n: [] for n in backends}
    b32, m32 = boards[:32], masks[:32]
    for _ in range(a.repeats):
        for name, backend in backends.items():
            times[name].append(benchlib.per_call(backend, b32, m32, seconds=a.seconds))
    base = statistics.median(times["fp32"])
    print(f"# int8 fidelity: {path}, {a.positions} positions, batch-32 time vs fp32 (onnx) "
          f"{base * 1e3:.2f} ms")
    print("| variant | value mean abs err | value max abs err | policy mean TV | same top move "
          "| speed vs fp32 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in names:
        mv, xv, tv, same = rows[name]
        print(f"| {name} | {mv:.4f} | {xv:.4f} | {tv:.4f} | {same:.3f} | "
              f"{base / statistics.median(times[name]):.2f}x |")


if __name__ == "__main__":
    main()
