"""ONNX files of the network: export with the hexz signature, int8 quantization, and the
model.onnx that a published checkpoint may carry beside model.pt.

The ONNX graph has exactly the inputs and outputs of the hexz TorchScript signature
(network.py): ``board`` float32 (N, 11, 11, 10) and ``action_mask`` bool (N, 2, 11, 10) in,
``policy`` float32 (N, 220) logits (illegal = -1e32) and ``value`` float32 (N, 1) out, with
a dynamic batch axis. That is all Predictor needs (it takes the softmax itself), so one file
serves `pyhexz export --format onnx` and inference. The score head (forward_with_score) is
not exported: only training reads it.

Exporting uses torch's TorchScript-based exporter (``dynamo=False``): it handles both a
HexzNet and a hexz TorchScript module, and needs the `onnx` package but not onnxscript.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE
from pyhexz.infra.atomicfile import atomic_write_bytes
from pyhexz.infra.storage import META_FILE, ONNX_FILE, sha256
from pyhexz.nn.network import unwrap

__all__ = ["INPUT_NAMES", "OPSET", "OUTPUT_NAMES", "export_onnx", "onnx_beside", "opset_of",
           "quantize_int8", "write_onnx"]

log = logging.getLogger(__name__)

# Every operator the network uses is in opset 17, which onnxruntime has read since 1.14.
OPSET = 17
INPUT_NAMES = ("board", "action_mask")
OUTPUT_NAMES = ("policy", "value")
# Node names of the heads in the exported graph (torch names them after the modules).
POLICY_HEAD, VALUE_HEAD = "/policy_head/", "/value_head/"
# What int8 leaves in fp32 (quantize_int8).
FP32_PREFIXES = (POLICY_HEAD, VALUE_HEAD)


def export_onnx(model: nn.Module) -> bytes:
    """The ONNX bytes of ``model`` (a HexzNet or a hexz TorchScript module), from a CPU copy
    in eval mode, so the caller's model (maybe training on a GPU) is left as it was."""
    board = torch.zeros((2, *BOARD_SHAPE), dtype=torch.float32)
    mask = torch.ones((2, *MASK_SHAPE), dtype=torch.bool)
    with tempfile.TemporaryDirectory() as d, warnings.catch_warnings():
        # "You are using the legacy TorchScript-based ONNX export": chosen on purpose (above);
        # its UserWarnings and deepcopy's (non-leaf .grad, a ScriptMethod without signature)
        # say nothing here.
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        net = copy.deepcopy(unwrap(model)).cpu().eval()
        out = Path(d) / "model.onnx"
        torch.onnx.export(
            net, (board, mask), out, dynamo=False, opset_version=OPSET,
            input_names=list(INPUT_NAMES), output_names=list(OUTPUT_NAMES),
            dynamic_axes={name: {0: "batch"} for name in INPUT_NAMES + OUTPUT_NAMES})
        return out.read_bytes()


def write_onnx(model: nn.Module, path: str | os.PathLike[str]) -> bytes:
    """export_onnx, written atomically to ``path``; returns the bytes."""
    data = export_onnx(model)
    atomic_write_bytes(path, data)
    return data


def opset_of(data: bytes) -> int:
    """The default-domain opset an ONNX file records."""
    import onnx
    m = onnx.load_from_string(data)
    return next(o.version for o in m.opset_import if o.domain in ("", "ai.onnx"))


def onnx_beside(model_file: str | os.PathLike[str]) -> bytes | None:
    """The model.onnx of the published checkpoint (or shipped model) that ``model_file``
    belongs to, when its meta.json lists it and its SHA-256 matches; None otherwise. A
    model.onnx that is there but does not match is ignored with one log line (the network is
    converted instead)."""
    folder = Path(model_file).parent
    path = folder / ONNX_FILE
    if not path.is_file():
        return None
    try:
        meta = json.loads((folder / META_FILE).read_text())
        # A published checkpoint lists {"sha256": {file: hex}}, a shipped model (nn/shipped.py)
        # {"files": {file: {"sha256": hex, ...}}}.
        want = (meta["files"][ONNX_FILE]["sha256"] if "files" in meta
                else meta["sha256"][ONNX_FILE])
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("onnx file ignored path=%s reason='not listed in %s'", path, META_FILE)
        return None
    data = path.read_bytes()
    if sha256(data) != want:
        log.warning("onnx file ignored path=%s reason='SHA-256 mismatch'", path)
        return None
    return data


def quantize_int8(data: bytes, boards: np.ndarray, masks: np.ndarray, *,
                  fp32_prefixes: tuple[str, ...] = FP32_PREFIXES, reduce_range: bool = False,
                  method: object = None) -> bytes:
    """onnxruntime static int8 quantization of an fp32 ONNX model (QDQ, per-channel int8
    weights, uint8 activations), its activation ranges calibrated on ``boards``/``masks``
    (real positions). Here it beat PyTorch's FX static quantization (BENCHMARKS.md).

    ``fp32_prefixes``: the nodes whose names start with one of these stay fp32; by default
    both heads, a few percent of the work (BENCHMARKS.md, "int8 fidelity": on the shipped
    model half the policy error, the same top move 98.7% of the time instead of 95.1%, at the
    same speed).
    ``reduce_range``: 7-bit weights, which keeps AVX2's
    u8 x s8 multiply-adds from saturating on CPUs without VNNI. ``method``: the calibration
    (onnxruntime's CalibrationMethod; MinMax when None)."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    batches = [{"board": boards[i:i + 32], "action_mask": masks[i:i + 32]}
               for i in range(0, len(boards), 32)]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(batches)

        def get_next(self) -> dict | None:
            return next(self.it, None)

    with tempfile.TemporaryDirectory() as d:
        src, pre, dst = (Path(d) / n for n in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(data)
        quant_pre_process(str(src), str(pre))
        exclude = [n.name for n in onnx.load(str(pre)).graph.node
                   if fp32_prefixes and n.name.startswith(fp32_prefixes)]
        with _quiet_rank1_warnings():
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            per_channel=True, reduce_range=reduce_range,
                            calibrate_method=method or CalibrationMethod.MinMax,
                            nodes_to_exclude=exclude)
        return dst.read_bytes()


class _DropRank1Warning(logging.Filter):
    """onnxruntime's quantizer warns on the root logger, once per model and weight, that
    axis 1 is out of range for a rank-1 weight (the batch norm beside global pooling, which
    it cannot fold into a convolution) and quantizes that weight per tensor instead: expected
    here, and 8 warning lines per hot-swapped model in every self-play process."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "is out-of-range for weight" not in record.getMessage()


@contextlib.contextmanager
def _quiet_rank1_warnings() -> Iterator[None]:
    root = logging.getLogger()
    drop = _DropRank1Warning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)
