"""Model files: training checkpoints, TorchScript export and loading either.

Two on-disk formats, told apart by content, never by file name:

* **Checkpoint** (``save_checkpoint`` / ``load_checkpoint``): a ``torch.save``
  dict ``{"format": "pyhexz.checkpoint", "version": 1, "params": {"blocks",
  "filters"[, "global_pooling"]}, "model_state", "optimizer_state", "meta"}`` for
  training. It holds only tensors and plain data, so it is read with
  ``weights_only=True``: a checkpoint from elsewhere cannot run code on load. The
  architecture is rebuilt from ``params``, which is why ``HexzNet`` depends on
  nothing else. A checkpoint written before one of the network's OPTIONAL_HEADS
  existed loads with that head freshly initialised (``Checkpoint.fresh``).
* **TorchScript** (``export_torchscript``): self-contained, runnable without
  pyhexz (this is the format the hexz project consumes). Always exported from a
  CPU copy in eval mode so any consumer can load it without ``map_location``.

``load_model`` accepts either and returns a module in eval mode. Every failure
to load becomes a ``ModelLoadError`` (a ``ValueError``) naming the file and the
problem; the original exception is chained for debugging. All writes go
through ``pyhexz.infra.atomicfile`` because workers load models while the trainer
overwrites them.

The hexz reference model (``fixtures/hexz_conv2d_scriptmodule.pt``)
-------------------------------------------------------------------
Inspected with torch 2.13 (``torch.jit.load(...).code`` / ``.graph``):

* Archive root ``scriptmodule/`` with ``code/__torch__/pyhexz/model.py``,
  ``constants.pkl``, ``data.pkl``, ``data/*``, ``version`` (3). Top-level class
  ``__torch__.pyhexz.model.HexzNeuralNetwork``.
* ``forward(self, b: Tensor, action_mask: Tensor) -> Tuple[Tensor, Tensor]``::

      x = cnn_blocks(b)
      policy = policy_head(x)
      policy = torch.where(torch.flatten(action_mask, 1), policy,
                           torch.full_like(policy, -1e32))
      return policy, torch.tanh(value_head(x))

* ``cnn_blocks``: 5 plain (non-residual) blocks Conv2d(3x3, padding="same")
  -> BatchNorm2d -> ReLU, 11 -> 128 -> ... -> 128 channels, conv bias on.
  ``policy_head``: Conv2d(128, 2, 1) -> BN -> ReLU -> Flatten -> Linear(220, 220).
  ``value_head``: Conv2d(128, 1, 1) -> BN -> ReLU -> Flatten -> Linear(110, 110)
  -> ReLU -> Linear(110, 1); tanh is applied in ``forward``.
* It confirms the input is channels-first (N, 11 planes, 11 rows, 10 cols),
  logits (N, 220), value (N, 1).
* It was saved in **training mode** (``training == True`` on every submodule),
  so it must be switched to eval mode before use or BatchNorm would normalise
  with batch statistics; ``load_model`` always calls ``.eval()``.
* It appears untrained: all BatchNorm running means are 0, variances 1,
  ``num_batches_tracked`` 0, and conv weights lie within PyTorch's default
  init bound 1/sqrt(fan_in). Its outputs are meaningful in shape only.
* torch 2.13 emits a DeprecationWarning from ``torch.jit.load/script/save``.
  TorchScript is still the only format hexz can consume, so we silence exactly
  those warnings around our own calls.

A TorchScript archive written by torch 2.13 is a zip whose entries live under
one root folder (the file's stem, or ``archive/`` when written to a file
object) and include ``<root>/constants.pkl`` and ``<root>/code/...``; a
``torch.save`` zip has ``<root>/data.pkl`` but neither of those, which is how
``load_model`` tells them apart.
"""

import contextlib
import copy
import dataclasses
import json
import os
import pickle
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from pyhexz.game.board import BOARD_SHAPE, MASK_SHAPE, POLICY_SIZE
from pyhexz.infra.atomicfile import atomic_writer
from pyhexz.nn.network import OPTIONAL_HEADS, HexzNet, unwrap

__all__ = ["Checkpoint", "ModelLoadError", "save_checkpoint", "load_checkpoint",
           "export_torchscript", "load_model", "load_model_bytes"]

StrPath = str | os.PathLike[str]

CHECKPOINT_FORMAT = "pyhexz.checkpoint"
CHECKPOINT_VERSION = 1
_CHECKPOINT_KEYS = ("format", "version", "params", "model_state", "optimizer_state", "meta")


class ModelLoadError(ValueError):
    """A model or checkpoint file could not be loaded; says which file and why."""

    def __init__(self, path: StrPath, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"cannot load model file {self.path!r}: {reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        # Keep it picklable across process boundaries (self-play workers):
        # the default reduce would call __init__ with only the message.
        return (type(self), (self.path, self.reason))


def _short(e: BaseException, limit: int = 200) -> str:
    """First line of an exception, bounded; torch's messages can be pages long."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _require_file(path: str) -> None:
    if not os.path.exists(path):
        raise ModelLoadError(path, "file not found")
    if not os.path.isfile(path):
        raise ModelLoadError(path, "not a regular file")


@dataclass
class Checkpoint:
    """A loaded training checkpoint. ``model`` is on ``map_location``, in eval mode."""

    model: HexzNet
    params: dict[str, Any]
    optimizer_state: dict[str, Any] | None
    meta: dict[str, Any]
    # Parameters the file did not have (an optional head newer than it), left as initialised.
    fresh: list[str] = dataclasses.field(default_factory=list)


def save_checkpoint(
    path: StrPath,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    **meta: Any,
) -> None:
    """Atomically write a pyhexz checkpoint of ``model`` (and ``optimizer``) to ``path``.

    ``meta`` must be JSON-serialisable (model name, checkpoint number, examples
    trained, ...): plain data is what ``weights_only`` loading accepts, and it
    keeps the file readable by non-Python tooling after conversion.
    """
    net = unwrap(model)
    if not isinstance(net, HexzNet):
        raise TypeError(f"save_checkpoint expects a HexzNet, got {type(net).__name__}")
    try:
        # The round trip normalises tuples to lists etc., so what we save is
        # exactly what load_checkpoint will hand back.
        plain_meta = json.loads(json.dumps(meta))
    except (TypeError, ValueError) as e:
        raise TypeError(f"checkpoint meta must be JSON-serialisable: {e}") from e
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "params": net.params,
        "model_state": net.state_dict(),
        "optimizer_state": optimizer.state_dict() if optimizer is not None else None,
        "meta": plain_meta,
    }
    with atomic_writer(path) as f:
        torch.save(payload, f)


def _parse_params(path: str, params: Any) -> dict[str, Any]:
    if not isinstance(params, Mapping):
        raise ModelLoadError(path, f"'params' must be a dict, got {type(params).__name__}")
    expected, optional = {"blocks", "filters"}, {"global_pooling"}
    if not expected <= set(params) <= expected | optional:
        raise ModelLoadError(
            path,
            f"'params' must have the keys {sorted(expected)} (and optionally "
            f"{sorted(optional)}), got {sorted(map(str, params))}",
        )
    out: dict[str, Any] = {}
    for k in ("blocks", "filters"):
        v = params[k]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ModelLoadError(path, f"params[{k!r}] must be a positive int, got {v!r}")
        out[k] = v
    if "global_pooling" in params:
        if not isinstance(params["global_pooling"], bool):
            raise ModelLoadError(path, f"params['global_pooling'] must be a bool, got "
                                 f"{params['global_pooling']!r}")
        out["global_pooling"] = params["global_pooling"]
    return out


def _is_optional(key: str) -> bool:
    return key.split(".", 1)[0] in OPTIONAL_HEADS


def _check_state_shapes(path: str, net: nn.Module, state: Any, params: dict[str, Any]) -> None:
    """Explain a state_dict/architecture mismatch better than load_state_dict does. An
    optional head may be missing as a whole (the file is older than it)."""
    if not isinstance(state, Mapping):
        raise ModelLoadError(path, f"'model_state' must be a dict, got {type(state).__name__}")
    expected = net.state_dict()
    problems: list[str] = []
    missing = [k for k in expected if k not in state and not (
        _is_optional(k) and not any(j.split(".", 1)[0] == k.split(".", 1)[0] for j in state))]
    unexpected = [k for k in state if k not in expected]
    non_tensor = [k for k in state if k in expected and not isinstance(state[k], torch.Tensor)]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in expected
        if k in state and isinstance(state[k], torch.Tensor) and state[k].shape != expected[k].shape
    ]
    for label, items in (
        ("missing", missing),
        ("unexpected", unexpected),
        ("not tensors", non_tensor),
        ("shape mismatch", mismatched),
    ):
        if items:
            more = f" (+{len(items) - 3} more)" if len(items) > 3 else ""
            problems.append(f"{label}: {', '.join(map(str, items[:3]))}{more}")
    if problems:
        raise ModelLoadError(
            path,
            "'model_state' does not fit a HexzNet("
            + ", ".join(f"{k}={v}" for k, v in params.items()) + "): " + "; ".join(problems),
        )


def load_checkpoint(path: StrPath, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Load and validate a checkpoint written by ``save_checkpoint``.

    Raises ``ModelLoadError`` for a missing, truncated or corrupt file, a file
    that is not a pyhexz checkpoint, missing keys, an unsupported version, or
    weights that do not match the recorded params.
    """
    p = os.fspath(path)
    _require_file(p)
    # torch.save has written zip archives since torch 1.6 and so does
    # save_checkpoint. Checking first keeps the unpickler away from arbitrary
    # bytes and gives a truncated file (no zip directory at its end) a clear message.
    if not _is_zip(p):
        raise ModelLoadError(
            p, "not a zip archive as torch.save writes: the file is truncated, corrupt, "
            "or of another kind"
        )
    if _is_torchscript_archive(p):
        raise ModelLoadError(
            p, "this is a TorchScript model, not a training checkpoint (use load_model)")
    try:
        # Onto the CPU, whatever map_location says: only the network moves there (below).
        # Optimizer.load_state_dict moves the moments to their parameters' device itself but
        # keeps each tensor 'step' where it finds it; a step on the GPU makes Adam read it
        # back (one synchronisation per parameter per step) and differ from a fresh one's.
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's own message suggests weights_only=False, which we must not do.
        raise ModelLoadError(
            p,
            "the weights-only unpickler rejected the file: it is corrupt or holds objects "
            "other than tensors and plain data, so it is not a pyhexz checkpoint",
        ) from e
    except Exception as e:
        raise ModelLoadError(
            p, f"torch.load failed (corrupt, or not a torch.save file): {_short(e)}") from e

    if not isinstance(obj, Mapping):
        raise ModelLoadError(
            p, f"not a pyhexz checkpoint: top-level object is a {type(obj).__name__}, not a dict"
        )
    fmt = obj.get("format")
    if fmt != CHECKPOINT_FORMAT:
        hint = ""
        if fmt is None and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            hint = " (it looks like a bare state_dict)"
        raise ModelLoadError(
            p, f"not a pyhexz checkpoint: 'format' is {fmt!r}, expected {CHECKPOINT_FORMAT!r}{hint}"
        )
    missing = [k for k in _CHECKPOINT_KEYS if k not in obj]
    if missing:
        raise ModelLoadError(p, f"checkpoint is missing keys {missing}")
    version = obj["version"]
    if version != CHECKPOINT_VERSION or isinstance(version, bool):
        raise ModelLoadError(
            p, f"unsupported checkpoint version {version!r} "
            f"(this pyhexz reads version {CHECKPOINT_VERSION})"
        )
    params = _parse_params(p, obj["params"])
    optimizer_state = obj["optimizer_state"]
    if optimizer_state is not None and not isinstance(optimizer_state, Mapping):
        raise ModelLoadError(
            p, f"'optimizer_state' must be a dict or None, got {type(optimizer_state).__name__}"
        )
    meta = obj["meta"]
    if not isinstance(meta, Mapping):
        raise ModelLoadError(p, f"'meta' must be a dict, got {type(meta).__name__}")

    net = HexzNet(**params)
    _check_state_shapes(p, net, obj["model_state"], params)
    try:
        # Not strict: _check_state_shapes allowed only a whole optional head to be missing.
        fresh = net.load_state_dict(obj["model_state"], strict=False).missing_keys
    except Exception as e:  # e.g. dtype trouble not caught by the shape check
        raise ModelLoadError(p, f"'model_state' could not be loaded: {_short(e)}") from e
    net.to(map_location)
    # Eval by default: a forgotten .eval() silently degrades inference, while a
    # trainer always calls .train() explicitly.
    net.eval()
    return Checkpoint(
        model=net,
        params=params,
        optimizer_state=dict(optimizer_state) if optimizer_state is not None else None,
        meta=dict(meta),
        fresh=list(fresh),
    )


# --------------------------------------------------------------------------
# TorchScript
# --------------------------------------------------------------------------


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Hide the "torch.jit.X is deprecated" warnings (torch 2.13) for our own calls.

    hexz consumes TorchScript, so there is no alternative to act on. Only these
    warnings are filtered (catch_warnings restores the filters afterwards).
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning
        )
        yield


def _is_zip(path: str) -> bool:
    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _is_torchscript_archive(path: str) -> bool:
    """True iff ``path`` is a zip laid out like a torch.jit.save archive."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (OSError, zipfile.BadZipFile):
        return False
    for name in names:
        _, sep, rest = name.partition("/")
        if sep and (rest == "constants.pkl" or rest.startswith("code/")):
            return True
    return False


def export_torchscript(model: nn.Module, path: StrPath) -> torch.jit.ScriptModule:
    """Script ``model`` and atomically save it to ``path``; return the scripted module.

    Scripts a CPU copy in eval mode: the file then loads anywhere without
    ``map_location``, BatchNorm uses running statistics, and the caller's model
    (possibly mid-training on a GPU) is left untouched.
    """
    net = copy.deepcopy(unwrap(model)).cpu().eval()
    with _quiet_jit():
        scripted = torch.jit.script(net)
        with atomic_writer(path) as f:
            torch.jit.save(scripted, f)
    return scripted


def _check_interface(path: str, module: nn.Module) -> None:
    """Run a tiny batch so a file with the wrong interface fails at load time,
    not in the middle of a search."""
    n = 2
    board = torch.zeros((n, *BOARD_SHAPE), dtype=torch.float32)
    mask = torch.ones((n, *MASK_SHAPE), dtype=torch.bool)
    try:
        with torch.inference_mode():
            out = module(board, mask)
        ok = (
            isinstance(out, tuple)
            and len(out) == 2
            and all(isinstance(t, torch.Tensor) for t in out)
            and tuple(out[0].shape) == (n, POLICY_SIZE)
            and out[1].numel() == n
        )
        got = (
            tuple(tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__ for t in out)
            if isinstance(out, tuple)
            else type(out).__name__
        )
    except Exception as e:
        raise ModelLoadError(
            path, f"TorchScript module does not run as forward(board, action_mask): {_short(e)}"
        ) from e
    if not ok:
        raise ModelLoadError(
            path,
            f"TorchScript module returned {got} for a batch of {n}; expected "
            f"(logits ({n}, {POLICY_SIZE}), value ({n}, 1))",
        )


def load_model(path: StrPath, device: str | torch.device = "cpu") -> nn.Module:
    """Load a pyhexz checkpoint or a TorchScript model, on ``device``, in eval mode.

    The format is detected from the content. Anything else raises
    ``ModelLoadError``. Loading goes through the CPU first so that a bad file
    and an unavailable device give distinct errors.
    """
    p = os.fspath(path)
    dev = torch.device(device)
    _require_file(p)
    module: nn.Module
    if _is_torchscript_archive(p):
        try:
            with _quiet_jit():
                module = torch.jit.load(p, map_location="cpu")
        except Exception as e:
            raise ModelLoadError(p, f"TorchScript archive could not be loaded: {_short(e)}") from e
        # hexz saved its model in training mode; eval() is essential.
        module.eval()
        _check_interface(p, module)
    else:
        module = load_checkpoint(p, map_location="cpu").model
    return module.to(dev).eval()


def load_model_bytes(data: bytes, device: str | torch.device = "cpu",
                     source: str = "<bytes>") -> nn.Module:
    """``load_model`` for model bytes from Redis or HTTP; ``source`` names them in errors.

    The bytes go through a temporary file so that format detection and every check are the
    same as for a file on disk.
    """
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "model.pt"
        path.write_bytes(data)
        try:
            return load_model(path, device)
        except ModelLoadError as e:
            raise ModelLoadError(source, e.reason) from e
