"""The forward pass alone, per backend and batch size, and why int8 is onnxruntime's.

    python benchmarks/bench_forward.py [--nets 3x32 5x64] [--batches 1 8 32] [--seconds 2]

For each network size: torch (the reference), onnx, int8 (onnxruntime quantize_static, the
`int8` backend) and fx-int8 (PyTorch FX static quantization, x86 backend, calibrated on the
same positions; measured here only, to compare the two quantizers), each timed at each batch
size in turns, as a ratio to torch, with its largest difference from torch (probabilities and
values) on 256 real positions. One core, one thread.
"""

from __future__ import annotations

import argparse
import copy

import benchlib  # noqa: E402,F401  (puts src/ on the path)


def fx_int8(net, boards, masks):
    """PyTorch FX static quantization of `net`, calibrated on the positions, as a backend."""
    import torch
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

    from pyhexz.nn.backends import TorchBackend
    b, m = torch.from_numpy(boards), torch.from_numpy(masks)
    with torch.no_grad():
        prepared = prepare_fx(copy.deepcopy(net).eval(), get_default_qconfig_mapping("x86"),
                              (b[:2], m[:2]))
        for i in range(0, len(b), 32):
            prepared(b[i:i + 32], m[i:i + 32])
        backend = TorchBackend(convert_fx(prepared), torch.device("cpu"))
    backend.name = "fx-int8"
    return backend


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nets", nargs="+", default=["3x32", "5x64"])
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    pinned = benchlib.pin_to_one_core()
    import statistics
    import warnings
    warnings.simplefilter("ignore")
    import torch
    torch.set_num_threads(1)
    from pyhexz.nn import HexzNet, Predictor
    from pyhexz.nn.backends import calibration_positions, max_error
    boards, masks = calibration_positions()
    print(f"# forward pass, one thread, {pinned}, torch {torch.__version__}")
    print("| net | backend | " + " | ".join(f"batch {b}" for b in a.batches)
          + " | max diff from torch |\n|---|---|" + "---:|" * (len(a.batches) + 1))
    for spec in a.nets:
        blocks, filters = map(int, spec.split("x"))
        torch.manual_seed(0)
        net = HexzNet(blocks, filters)
        with torch.no_grad():   # BatchNorm statistics as a trained net has them, not identity
            for mod in net.modules():
                if isinstance(mod, torch.nn.BatchNorm2d):
                    mod.weight.uniform_(0.5, 1.5)
                    mod.running_var.uniform_(0.5, 2.0)
        net.eval()
        backends = {b: Predictor(net, backend=b).backend for b in ("torch", "onnx", "int8")}
        backends["fx-int8"] = fx_int8(net, boards, masks)
        want = backends["torch"](boards, masks)
        times: dict[tuple[str, int], list[float]] = {}
        for _ in range(a.repeats):
            for size in a.batches:
                for name, be in backends.items():
                    times.setdefault((name, size), []).append(
                        benchlib.per_call(be, boards[:size], masks[:size], seconds=a.seconds))
        for name, be in backends.items():
            cells = []
            for size in a.batches:
                t = statistics.median(times[(name, size)])
                base = statistics.median(times[("torch", size)])
                cells.append(f"{t * 1e3:.2f} ms ({base / t:.2f}x)")
            print(f"| {spec} | {name} | " + " | ".join(cells)
                  + f" | {max_error(be(boards, masks), want):.1e} |", flush=True)


if __name__ == "__main__":
    main()
