"""The models that ship with pyhexz, as package data, checked against their SHA-256 when used.

A model ships in the package folder `pyhexz/models/` (src/pyhexz/models in the repository),
written by `pyhexz ship-model` (nn/packaging.py):

    models/default.json          {"name": NAME}: the shipped model that plays by default
    models/NAME/model.pt         the pyhexz checkpoint: weights only, no optimizer state
    models/NAME/scriptmodule.pt  the same network as TorchScript with the hexz signature
    models/NAME/model.onnx       the same as ONNX, where the checkpoint came with one
    models/NAME/meta.json        the SHA-256 and size of each file, the network's shape, where
                                 it came from and how it was trained, its strength table, why

`default.json` is written last, so a half-written model folder is never the default. A model
is used through `ShippedModel.path`, which checks the file against the SHA-256 in meta.json
first: a file that fails is a `ShippedModelError`, never a silently different network.

"default" is the name of the shipped default wherever a model is named (`arena default:800`,
`train --init default`, `selfplay --model default`); the CPU player plays it when given no
model path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pyhexz.infra.storage import META_FILE, MODEL_FILE, sha256

DEFAULT_SPEC = "default"
POINTER_FILE = "default.json"
FORMAT = "pyhexz.shipped-model"
VERSION = 1


class NoShippedModel(FileNotFoundError):
    """This pyhexz ships no default model."""


class ShippedModelError(ValueError):
    """A shipped model is there but cannot be trusted: a file fails its SHA-256 check, or the
    folder or its meta.json is broken. Says which file and why."""


def models_dir() -> Path:
    """The package's models folder (its location in an install or the repository's src/)."""
    return Path(str(resources.files("pyhexz") / "models"))


@dataclass
class ShippedModel:
    """One model folder under models/ and its meta.json."""

    name: str
    dir: Path
    meta: dict[str, Any]

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """File name -> {"sha256", "size"}, as meta.json records them."""
        return self.meta["files"]

    @property
    def checkpoint(self) -> int:
        """The checkpoint number it was shipped from (0 when unknown)."""
        return int((self.meta.get("source") or {}).get("checkpoint") or 0)

    @property
    def label(self) -> str:
        net = self.meta.get("network", {})
        return (f"shipped model {self.name} ({net.get('blocks')} x {net.get('filters')}, "
                f"checkpoint {self.checkpoint})")

    def path(self, file: str = MODEL_FILE) -> Path:
        """`file` of the model, checked against its SHA-256 first."""
        entry = self.files.get(file)
        if entry is None:
            raise ShippedModelError(f"shipped model {self.name} has no {file} "
                                    f"(it has {sorted(self.files)})")
        path = self.dir / file
        if not path.is_file():
            raise ShippedModelError(f"shipped model {self.name}: {path} is missing")
        digest = sha256(path.read_bytes())
        if digest != entry["sha256"]:
            raise ShippedModelError(
                f"shipped model {self.name}: {path} fails its SHA-256 check (file {digest[:12]}, "
                f"meta.json {str(entry['sha256'])[:12]}): the file is corrupt or was replaced")
        return path

    def verify(self) -> None:
        """Checks every file the model lists."""
        for file in self.files:
            self.path(file)


def read_model(directory: Path) -> ShippedModel:
    """The shipped model in `directory` (a models/NAME folder), its meta.json checked for
    form; its files are checked when used (`ShippedModel.path`)."""
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ShippedModelError(f"{directory} is not a shipped model: no {META_FILE}") from None
    except (OSError, ValueError) as e:
        raise ShippedModelError(f"{meta_path} cannot be read: {e}") from None
    found = meta.get("format") if isinstance(meta, dict) else None
    if not isinstance(meta, dict) or found != FORMAT:
        raise ShippedModelError(f"{meta_path} is not the meta.json of a shipped model "
                                f"(format {found!r}, expected {FORMAT!r})")
    if meta.get("version") != VERSION:
        raise ShippedModelError(f"{meta_path}: version {meta.get('version')!r} is not the one "
                                f"this pyhexz reads ({VERSION})")
    files = meta.get("files")
    if (not isinstance(files, dict) or MODEL_FILE not in files
            or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str)
                       for e in files.values())):
        raise ShippedModelError(f"{meta_path}: 'files' must map each file, {MODEL_FILE} among "
                                f"them, to its sha256")
    return ShippedModel(directory.name, directory, meta)


def default_name(root: Path | None = None) -> str:
    """The name of the default shipped model; NoShippedModel when none ships."""
    root = models_dir() if root is None else root
    pointer = root / POINTER_FILE
    try:
        name = json.loads(pointer.read_text(encoding="utf-8"))["name"]
    except FileNotFoundError:
        raise NoShippedModel(f"no model ships with this pyhexz ({pointer} does not exist)") \
            from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ShippedModelError(f"{pointer} cannot be read: {type(e).__name__}: {e}") from None
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ShippedModelError(f"{pointer}: 'name' must be a model folder name, got {name!r}")
    return name


def default_model(root: Path | None = None) -> ShippedModel:
    """The default shipped model (models/default.json names it). NoShippedModel when none
    ships; ShippedModelError when it is broken."""
    root = models_dir() if root is None else root
    return read_model(root / default_name(root))


def default_model_file(root: Path | None = None) -> Path:
    """The default shipped model's checkpoint file, checked against its SHA-256."""
    return default_model(root).path(MODEL_FILE)


__all__ = ["DEFAULT_SPEC", "NoShippedModel", "ShippedModelError", "ShippedModel", "models_dir",
           "read_model", "default_name", "default_model", "default_model_file"]
