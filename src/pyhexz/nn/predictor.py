"""Batched inference for the search.

``Predictor`` is the search's hot path: it validates the numpy batch cheaply and hands it to
its backend (nn/backends.py: torch, onnxruntime, int8, or the fastest exact one), which
returns move probabilities and values as numpy arrays. It is safe to share between threads
(eval mode, no mutable state). This module never calls ``torch.set_num_threads``; the CLI owns
process setup.
"""

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE, POLICY_SIZE
from pyhexz.nn.backends import Backend, make_backend
from pyhexz.nn.checkpoint import load_model

__all__ = ["Predictor"]

StrPath = str | os.PathLike[str]

def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


class Predictor:
    """Batched inference for the search: numpy in, numpy out.

    ``probs, values = predictor(boards, masks)`` with ``boards`` float32
    (N, 11, 11, 10) and ``masks`` bool (N, 2, 11, 10) returns ``probs`` float32
    (N, 220) (softmax over legal moves; exactly 0 on illegal ones, and all 0 in
    a row without any legal move) and ``values`` float32 (N,).

    The constructor moves ``module`` to ``device`` and sets it to eval mode in
    place; pass a copy if the same object is still being trained. ``backend``: one of
    BACKENDS (nn/backends.py); torch, the reference, unless asked. ``onnx``: the network's
    ONNX bytes when at hand (a checkpoint's model.onnx), so the onnx backends need not
    convert it.
    """

    __slots__ = ("module", "device", "backend")

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu",
                 backend: str = "torch", onnx: bytes | None = None) -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()
        self.backend: Backend = make_backend(self.module, self.device, backend, onnx)

    @classmethod
    def from_path(cls, path: StrPath, device: str | torch.device = "cpu",
                  backend: str = "torch") -> "Predictor":
        """Load a checkpoint or TorchScript file (see ``load_model``); for a backend other
        than torch, the checkpoint's model.onnx when it has a valid one."""
        onnx = None
        if backend != "torch":
            from pyhexz.nn.onnxfile import onnx_beside
            onnx = onnx_beside(path)
        return cls(load_model(path, device), device, backend, onnx)

    def __call__(self, boards: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if not (
            isinstance(boards, np.ndarray)
            and boards.dtype == np.float32
            and boards.ndim == 4
            and boards.shape[1:] == BOARD_SHAPE
        ):
            raise ValueError(
                f"boards must be a float32 array of shape (N, *{BOARD_SHAPE}), "
                f"got {_describe(boards)}"
            )
        if not (
            isinstance(masks, np.ndarray)
            and masks.dtype == np.bool_
            and masks.ndim == 4
            and masks.shape[1:] == MASK_SHAPE
        ):
            raise ValueError(f"masks must be a bool array of shape (N, *{MASK_SHAPE}), "
                             f"got {_describe(masks)}")
        n = boards.shape[0]
        if masks.shape[0] != n:
            raise ValueError(
                f"boards and masks have different batch sizes: {n} vs {masks.shape[0]}")
        if n == 0:
            return np.zeros((0, POLICY_SIZE), np.float32), np.zeros((0,), np.float32)
        return self.backend(boards, masks)
