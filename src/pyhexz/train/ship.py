"""Shipping a trained checkpoint with pyhexz: `pyhexz ship-model CHECKPOINT --name NAME --why ...`.

Writes the model folder that nn/shipped.py reads (models/NAME/ in the package: model.pt with
the weights only, scriptmodule.pt, model.onnx where the checkpoint has one, meta.json) and
makes it the default. What a later run needs to resume training (the full checkpoint, Adam's
state included; not the replay window) goes to a training folder outside the package
(`training/NAME/` by default), because the size limit of what ships (20 MB) is for the
network, not for the optimizer's moments.

meta.json is the model's record (docs/shipped-model.md describes every field): the SHA-256
and size of each file; the network's shape; the checkpoint it came from; how it was trained,
collected from the run's own checkpoints (every `pyhexz train` session records its command
line and settings in the checkpoints it writes: the commands, their settings, examples, wall
time); the strength table (benchmarks/strength.py); why this checkpoint; the model it
replaces.

The folder is written under a temporary name and renamed into place, then `default.json` is
replaced: a crash leaves either the old default or the new one, never half of one. Unless
told to keep them, the other model folders are removed afterwards (git keeps them), so the
package holds one model.
"""

from __future__ import annotations

import json
import logging
import platform
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from pyhexz.game.board import BOARD_SHAPE, POLICY_SIZE
from pyhexz.infra.atomicfile import atomic_write_bytes
from pyhexz.infra.storage import (
    META_FILE,
    MODEL_FILE,
    ONNX_FILE,
    SCRIPT_FILE,
    CheckpointRepo,
    StorageError,
    sha256,
)
from pyhexz.nn import export_torchscript, load_checkpoint, save_checkpoint
from pyhexz.nn.shipped import (
    FORMAT,
    POINTER_FILE,
    VERSION,
    NoShippedModel,
    ShippedModelError,
    default_model,
    models_dir,
)
from pyhexz.search.players import published_checkpoint, resolve_model_path

log = logging.getLogger(__name__)

MAX_SHIPPED_BYTES = 20 * 1024 * 1024
JOB_META = "job"   # the meta.json entry in which `pyhexz train` records its session


@dataclass
class ShipOptions:
    name: str
    why: str
    root: Path | None = None              # the models folder; None: the package's
    training_dir: Path | None = None      # where the resumable checkpoint goes; None: nowhere
    notes: str | None = None              # how it was trained, beyond what the run recorded
    strength: dict | None = None          # the strength table (benchmarks/strength.py)
    model_name: str | None = None         # picks the model in a storage folder
    keep_others: bool = False
    max_bytes: int = MAX_SHIPPED_BYTES
    extra: dict = field(default_factory=dict)


@dataclass
class Source:
    """The checkpoint to ship: its bytes (checked against the run's SHA-256 where it was
    published) and, for a published checkpoint, its run."""

    path: Path
    model: bytes
    onnx: bytes | None
    repo: CheckpointRepo | None
    number: int | None


def read_source(path: str, model_name: str | None = None) -> Source:
    """A checkpoint file, a published checkpoint's folder, a model folder or a `train --dir`
    folder (its newest published checkpoint)."""
    p = Path(path)
    if (p / "models" / "flagz").is_dir():
        models = sorted(d.name for d in (p / "models" / "flagz").iterdir() if d.is_dir())
        if not model_name and len(models) != 1:
            raise ValueError(f"{p} holds models {models}: say which with --model-name")
        p = p / "models" / "flagz" / (model_name or models[0])
    file = (p / MODEL_FILE) if (p / MODEL_FILE).is_file() else resolve_model_path(p)
    found = published_checkpoint(file)
    if found is None:
        onnx = file.parent / ONNX_FILE
        return Source(file, file.read_bytes(), onnx.read_bytes() if onnx.is_file() else None,
                      None, None)
    repo, n = found
    listed = repo.meta(n).get("sha256", {})
    try:
        return Source(file, repo.read_verified(n, MODEL_FILE),
                      repo.read_verified(n, ONNX_FILE) if ONNX_FILE in listed else None, repo, n)
    except StorageError as e:   # a corrupt file: one line, not a traceback
        raise ValueError(str(e)) from None


def training_record(repo: CheckpointRepo, n: int) -> dict[str, Any]:
    """How checkpoint n of a run came to be, from the meta.json of checkpoints 0..n: each
    `pyhexz train` session (command, settings, checkpoints, wall time), the examples and
    games trained, the seconds spent in training steps, the trainer's settings."""
    sessions: list[dict[str, Any]] = []
    games = 0
    train_seconds = 0.0
    metas = [(m, repo.meta(m)) for m in repo.checkpoints() if m <= n]
    for m, meta in metas:
        games += int(meta.get("games", 0))
        train_seconds += float((meta.get("stats") or {}).get("seconds", 0.0))
        job = meta.get(JOB_META) or {}
        started = job.get("started")
        if not sessions or sessions[-1]["started"] != started:
            sessions.append({"command": job.get("command"), "settings": job.get("settings"),
                             "started": started, "first_checkpoint": m})
        sessions[-1].update(last_checkpoint=m, last_created=meta.get("created"))
    wall = 0.0
    for s in sessions:
        known = s["started"] is not None and s["last_created"] is not None
        s["wall_seconds"] = round(s["last_created"] - s["started"], 1) if known else None
        wall += s["wall_seconds"] or 0.0
    final = metas[-1][1] if metas else {}
    return {
        "model": repo.name, "checkpoints": n, "examples_trained": final.get("examples_trained"),
        "games": games, "train_step_seconds": round(train_seconds, 1),
        "wall_seconds": round(wall, 1),
        "wall_time_complete": all(s["wall_seconds"] is not None for s in sessions),
        "trainer_settings": final.get("config"), "sessions": sessions,
    }


def ship_model(source_path: str, options: ShipOptions) -> Path:
    """Ships the checkpoint at `source_path` as models/NAME and makes it the default; returns
    the model folder. ValueError (with what is wrong) when it cannot."""
    o = options
    root = models_dir() if o.root is None else o.root
    _check_name(o.name)
    target = root / o.name
    if target.exists():
        raise ValueError(f"{target} exists already: ship under a new name (names are versions)")
    src = read_source(source_path, o.model_name)
    if o.strength is not None:
        check_strength(o.strength, sha256(src.model))
    with tempfile.TemporaryDirectory() as d:
        tmp_file = Path(d) / MODEL_FILE
        tmp_file.write_bytes(src.model)
        ckpt = load_checkpoint(tmp_file)   # ModelLoadError (a ValueError) says what is wrong
    try:
        previous = default_model(root)
        replaces: dict | None = {"name": previous.name,
                                 "sha256": previous.files[MODEL_FILE]["sha256"]}
    except NoShippedModel:
        replaces = None
    except ShippedModelError as e:
        log.warning("ship-model the current default is broken error=%r", str(e))
        replaces = {"name": None, "error": str(e)}

    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{o.name}.", dir=root))
    try:
        save_checkpoint(staging / MODEL_FILE, ckpt.model, None,
                        **dict(ckpt.meta, shipped_as=o.name))
        export_torchscript(ckpt.model, staging / SCRIPT_FILE)
        if src.onnx is not None:
            atomic_write_bytes(staging / ONNX_FILE, src.onnx)
        sizes = {f.name: f.stat().st_size for f in sorted(staging.iterdir())}
        files = {name: {"sha256": sha256((staging / name).read_bytes()), "size": size}
                 for name, size in sizes.items()}
        total = sum(sizes.values())
        if total > o.max_bytes:
            raise ValueError(f"the model's files take {total / 2**20:.1f} MiB, more than the "
                             f"{o.max_bytes / 2**20:.0f} MiB that may ship")
        meta = _meta(o, src, ckpt.params, files, replaces,
                     sum(p.numel() for p in ckpt.model.parameters()))
        atomic_write_bytes(staging / META_FILE, (json.dumps(meta, indent=1) + "\n").encode())
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    atomic_write_bytes(root / POINTER_FILE, (json.dumps({"name": o.name}) + "\n").encode())
    log.info("shipped model=%s dir=%s bytes=%d replaces=%s", o.name, target, total,
             (replaces or {}).get("name"))
    if not o.keep_others:
        for other in root.iterdir():
            if other.is_dir() and other != target:
                shutil.rmtree(other)
                log.info("ship-model removed the previous model dir=%s", other)
    if o.training_dir is not None:
        _write_training_state(o.training_dir / o.name, src, meta)
    return target


def _check_name(name: str) -> None:
    ok = name and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
    if not ok:
        raise ValueError(f"model name {name!r}: use letters, digits, '-', '_' and '.', not "
                         "starting with '.'")


def _meta(o: ShipOptions, src: Source, params: dict[str, int], files: dict, replaces,
          parameters: int) -> dict[str, Any]:
    run_meta = src.repo.meta(src.number) if src.repo is not None and src.number is not None \
        else {}
    return {
        "format": FORMAT, "version": VERSION, "name": o.name, "game": "flagz",
        "shipped": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "why": o.why,
        "files": files,
        "network": {"class": "HexzNet", **params, "parameters": parameters,
                    "input": [int(x) for x in BOARD_SHAPE], "policy": int(POLICY_SIZE),
                    "signature": "forward(board (N, 11, 11, 10) float32, action_mask "
                                 "(N, 2, 11, 10) bool) -> (logits (N, 220), value (N, 1))"},
        "source": {"path": str(src.path), "sha256": sha256(src.model),
                   "model": src.repo.name if src.repo is not None else None,
                   "checkpoint": src.number, "created": run_meta.get("created"),
                   "examples_trained": run_meta.get("examples_trained"),
                   "losses": run_meta.get("stats")},
        "training": {**(training_record(src.repo, src.number)
                        if src.repo is not None and src.number is not None else {}),
                     "notes": o.notes},
        "strength": o.strength,
        "replaces": replaces,
        "built_with": {"torch": torch.__version__, "python": platform.python_version()},
        **o.extra,
    }


def _write_training_state(directory: Path, src: Source, meta: dict) -> None:
    """The full checkpoint (weights and optimizer state) and its record, for resuming:
    `pyhexz train --init training/NAME/model.pt`."""
    directory.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(directory / MODEL_FILE, src.model)
    record = {"shipped_as": meta["name"], "sha256": {MODEL_FILE: sha256(src.model)},
              "source": meta["source"], "training": meta["training"]}
    atomic_write_bytes(directory / META_FILE, (json.dumps(record, indent=1) + "\n").encode())
    log.info("ship-model wrote the resumable checkpoint dir=%s bytes=%d", directory,
             len(src.model))


def check_strength(strength: dict, *model_sha256: str) -> None:
    """A strength table (benchmarks/strength.py) belongs to the model: it measured a file
    with one of these SHA-256s (the shipped file, or the checkpoint it was shipped from)."""
    measured = strength.get("model_sha256") if isinstance(strength, dict) else None
    if measured not in model_sha256:
        raise ValueError(f"the strength table measured another model (sha256 "
                         f"{str(measured)[:12]}, this one is {model_sha256[0][:12]})")


def write_strength(model_dir: Path, strength: dict) -> None:
    """Puts a strength table into a shipped model's meta.json (benchmarks/strength.py), if it
    measured this model, beside the matches of the table already there (`merge_strength`)."""
    path = model_dir / META_FILE
    meta = json.loads(path.read_text(encoding="utf-8"))
    check_strength(strength, meta["files"][MODEL_FILE]["sha256"], meta["source"]["sha256"])
    meta["strength"] = merge_strength(meta.get("strength"), strength)
    atomic_write_bytes(path, (json.dumps(meta, indent=1) + "\n").encode())


# What says where a table's matches were measured, copied into each row when tables merge.
MEASURED_KEYS = ("model", "model_sha256", "machine", "written")


def merge_strength(old: dict | None, new: dict) -> dict:
    """One table from two measured apart (the budget matches of a model in one results folder
    before it shipped, its time-1s match in another afterwards, on another machine): the new
    table with the old one's other matches; a match in both is the new one's. Each row of a
    merged table says which file it measured, where and when (`measured`)."""
    if not old or not old.get("matches"):
        return new
    ids = {row["match"] for row in new["matches"]}

    def stamped(row: dict, table: dict) -> dict:
        return row if "measured" in row else dict(
            row, measured={k: table[k] for k in MEASURED_KEYS if k in table})
    return dict(new, matches=[stamped(r, old) for r in old["matches"] if r["match"] not in ids]
                + [stamped(r, new) for r in new["matches"]])


__all__ = ["ShipOptions", "ship_model", "read_source", "training_record", "write_strength",
           "check_strength", "merge_strength",
           "JOB_META", "MAX_SHIPPED_BYTES"]
