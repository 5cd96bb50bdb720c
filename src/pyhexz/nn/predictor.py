"""Batched inference for the search.

``Predictor`` is the search's hot path: it validates the numpy batch cheaply,
wraps it with ``torch.from_numpy`` (no copy on CPU), runs under
``torch.inference_mode`` and returns move probabilities and values as numpy
arrays. It is safe to share between threads (eval mode, no mutable state).
This module never calls ``torch.set_num_threads``; the CLI owns process setup.
"""

import os
from typing import Any

import numpy as np
import torch
from torch import nn

from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE, POLICY_SIZE
from pyhexz.nn.checkpoint import load_model

__all__ = ["Predictor"]

StrPath = str | os.PathLike[str]

def _describe(a: Any) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def _as_tensor(a: np.ndarray) -> torch.Tensor:
    # from_numpy shares memory. It rejects negative strides and warns on
    # read-only arrays, so only those rare inputs pay for a copy.
    if not a.flags.writeable or any(s < 0 for s in a.strides):
        a = np.array(a, order="C")
    return torch.from_numpy(a)


class Predictor:
    """Batched inference for the search: numpy in, numpy out.

    ``probs, values = predictor(boards, masks)`` with ``boards`` float32
    (N, 11, 11, 10) and ``masks`` bool (N, 2, 11, 10) returns ``probs`` float32
    (N, 220) (softmax over legal moves; exactly 0 on illegal ones, and all 0 in
    a row without any legal move) and ``values`` float32 (N,).

    The constructor moves ``module`` to ``device`` and sets it to eval mode in
    place; pass a copy if the same object is still being trained.
    """

    __slots__ = ("module", "device")

    def __init__(self, module: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.module = module.to(self.device).eval()

    @classmethod
    def from_path(cls, path: StrPath, device: str | torch.device = "cpu") -> "Predictor":
        """Load a checkpoint or TorchScript file (see ``load_model``)."""
        return cls(load_model(path, device), device)

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
