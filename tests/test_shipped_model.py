"""The model that ships with pyhexz: `pyhexz ship-model` (train/ship.py) writes it, nn/shipped.py
reads it and checks its SHA-256, and "default" names it wherever a model is named.

Real parts throughout: a real (tiny) network trained on real self-play games in a real
checkpoint repository, shipped into a temporary models folder (the package's stays untouched:
`shipped_root` points nn.shipped at the temporary one).
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import tomllib
import torch

from pyhexz import cli
from pyhexz.infra.storage import MODEL_FILE, ONNX_FILE, SCRIPT_FILE, sha256
from pyhexz.nn import load_checkpoint, load_model
from pyhexz.nn import shipped as shipped_mod
from pyhexz.nn.shipped import (
    NoShippedModel,
    ShippedModelError,
    default_model,
    default_model_file,
)
from pyhexz.search.players import NeuralPlayer, make_player, resolve_model_path
from pyhexz.search.timed import TimedPlayer
from pyhexz.train.arena import load_openings, play_match
from pyhexz.train.config import TrainConfig
from pyhexz.train.ship import ShipOptions, ship_model, training_record, write_strength
from pyhexz.train.trainer import InitModel, Trainer
from test_arena_cli import restore_process_state  # noqa: F401  (cli.main sets process state)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(trained_repo_factory):
    """A real run: checkpoints 0..2 of a 1 x 8 network, each trained on self-play games."""
    return trained_repo_factory("shipsrc")


def ckpt_dir(repo, n: int) -> Path:
    return Path(repo.storage.root) / repo.prefix / str(n)


@pytest.fixture
def root(tmp_path, monkeypatch) -> Path:
    """An empty models folder, which nn.shipped reads in place of the package's."""
    r = tmp_path / "models"
    monkeypatch.setattr(shipped_mod, "models_dir", lambda: r)
    return r


def ship(run, root: Path, name: str = "t1", n: int = 2, **kw) -> Path:
    kw.setdefault("training_dir", root.parent / "training")
    return ship_model(str(ckpt_dir(run, n)), ShipOptions(name=name, why="a test", root=root, **kw))


def net_outputs(module, boards: np.ndarray, masks: np.ndarray):
    with torch.inference_mode():
        return module(torch.from_numpy(boards), torch.from_numpy(masks))


def test_ship_model_writes_the_files_their_checksums_and_the_record(run, root) -> None:
    target = ship(run, root)
    # The trainer writes model.onnx into every checkpoint (tests/test_export.py): it ships too.
    shipped = {MODEL_FILE, SCRIPT_FILE, ONNX_FILE}
    assert sorted(p.name for p in target.iterdir()) == sorted({"meta.json"} | shipped)
    meta = json.loads((target / "meta.json").read_text())
    assert set(meta["files"]) == shipped
    for f, e in meta["files"].items():
        data = (target / f).read_bytes()
        assert e == {"sha256": sha256(data), "size": len(data)}
    src = run.read_verified(2, MODEL_FILE)
    assert meta["source"]["sha256"] == sha256(src)
    assert (meta["source"]["model"], meta["source"]["checkpoint"]) == (run.name, 2)
    assert meta["network"]["blocks"] == 1 and meta["network"]["filters"] == 8
    shipped = load_checkpoint(target / MODEL_FILE)
    assert shipped.optimizer_state is None   # the optimizer's moments do not ship
    assert meta["network"]["parameters"] == sum(p.numel() for p in shipped.model.parameters())
    # The training record comes from the run's checkpoints.
    t = meta["training"]
    assert t["examples_trained"] == run.meta(2)["examples_trained"] > 0
    assert t["games"] == sum(run.meta(m)["games"] for m in (0, 1, 2)) == 4
    assert t["trainer_settings"] == run.meta(2)["config"]
    assert meta["why"] == "a test" and meta["replaces"] is None
    # The weights are the run's; the TorchScript is the same network.
    original = load_checkpoint(ckpt_dir(run, 2) / MODEL_FILE).model
    for k, v in original.state_dict().items():
        assert torch.equal(v, shipped.model.state_dict()[k]), k
    boards = np.stack([b.encode()[0] for b in load_openings()[:4]])
    masks = np.stack([b.encode()[1] for b in load_openings()[:4]])
    for a, b in zip(net_outputs(original, boards, masks),
                    net_outputs(load_model(target / SCRIPT_FILE), boards, masks), strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    # It is the default now, and checks out.
    m = default_model(root)
    assert m.name == "t1" and m.checkpoint == 2
    m.verify()
    assert default_model_file(root) == target / MODEL_FILE
    # What a later run resumes from, outside the package: the run's checkpoint as it was.
    resumable = root.parent / "training" / "t1"
    assert (resumable / MODEL_FILE).read_bytes() == src
    assert load_checkpoint(resumable / MODEL_FILE).optimizer_state is not None
    assert json.loads((resumable / "meta.json").read_text())["sha256"][MODEL_FILE] == sha256(src)


def test_every_shipped_file_is_package_data(run, root) -> None:
    """pyproject's package-data patterns take every file ship-model writes, so it installs."""
    ship(run, root)
    patterns = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())[
        "tool"]["setuptools"]["package-data"]["pyhexz"]
    written = [p for p in root.rglob("*") if p.is_file()]
    assert len(written) == 5   # default.json, meta.json, model.pt, scriptmodule.pt, model.onnx
    for p in written:
        rel = "models/" + p.relative_to(root).as_posix()
        assert any(fnmatch.fnmatch(rel, pat) for pat in patterns), rel


def test_an_onnx_file_beside_the_checkpoint_ships_too(run, root, tmp_path) -> None:
    files = {f: run.read_verified(2, f) for f in (MODEL_FILE, SCRIPT_FILE)}
    # The bytes only travel: ship-model copies them, checked against the run's SHA-256.
    files["model.onnx"] = b"onnx bytes of checkpoint 3"
    run.publish(3, files, {})
    target = ship(run, root, n=3)
    assert (target / "model.onnx").read_bytes() == b"onnx bytes of checkpoint 3"
    assert json.loads((target / "meta.json").read_text())["files"]["model.onnx"]["sha256"] == \
        sha256(b"onnx bytes of checkpoint 3")


def test_a_new_model_replaces_the_default_and_names_the_one_it_replaced(run, root) -> None:
    first = ship(run, root, "v1", n=1)
    first_sha = sha256((first / MODEL_FILE).read_bytes())
    second = ship(run, root, "v2", n=2)
    assert default_model(root).name == "v2"
    assert json.loads((second / "meta.json").read_text())["replaces"] == {
        "name": "v1", "sha256": first_sha}
    assert not first.exists()     # one model ships; git keeps the old one
    with pytest.raises(ValueError, match="exists already"):
        ship(run, root, "v2", n=1)
    kept = ship(run, root, "v3", n=1, keep_others=True)
    assert second.exists() and kept.exists() and default_model(root).name == "v3"


def test_refusals_leave_the_default_as_it_was(run, root, tmp_path) -> None:
    ship(run, root, "v1", n=1)
    with pytest.raises(ValueError, match="MiB"):
        ship(run, root, "big", max_bytes=1000)
    with pytest.raises(ValueError, match="model name"):
        ship(run, root, "../x")
    with pytest.raises(ValueError, match="measured another model"):
        ship(run, root, "s", strength={"model_sha256": "0" * 64, "matches": []})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a zip archive"):
        ship_model(str(bad), ShipOptions(name="bad", why="x", root=root))
    assert sorted(p.name for p in root.iterdir()) == ["default.json", "v1"]
    assert default_model(root).name == "v1"


def test_a_strength_table_goes_into_the_record_of_the_model_it_measured(run, root) -> None:
    src_sha = sha256(run.read_verified(2, MODEL_FILE))
    table = {"model_sha256": src_sha, "matches": [{"match": "budget-200", "score": 0.95}]}
    target = ship(run, root, strength=table)
    assert json.loads((target / "meta.json").read_text())["strength"] == table
    # Measured later, on the shipped file:
    later = dict(table, model_sha256=sha256((target / MODEL_FILE).read_bytes()), openings=128)
    write_strength(target, later)
    assert json.loads((target / "meta.json").read_text())["strength"]["openings"] == 128
    default_model(root).verify()   # meta.json is not among the checked files
    with pytest.raises(ValueError, match="measured another model"):
        write_strength(target, dict(table, model_sha256="1" * 64))


def test_strength_tables_measured_apart_add_up(run, root) -> None:
    """The budget matches measured before shipping, time-1s afterwards on the shipped file
    on another machine: meta.json holds both, each row saying what it measured and where."""
    src_sha = sha256(run.read_verified(2, MODEL_FILE))
    budget = {"model": "runs/x", "model_sha256": src_sha, "machine": {"cpu": "A"},
              "matches": [{"match": "budget-200", "score": 0.95},
                          {"match": "time-1s", "score": 0.5, "complete": False}]}
    target = ship(run, root, strength=budget)
    shipped_sha = sha256((target / MODEL_FILE).read_bytes())
    timed = {"model": "default", "model_sha256": shipped_sha, "machine": {"cpu": "B"},
             "matches": [{"match": "time-1s", "score": 0.9, "complete": True}]}
    write_strength(target, timed)
    t = json.loads((target / "meta.json").read_text())["strength"]
    assert [(r["match"], r["score"]) for r in t["matches"]] == [("budget-200", 0.95),
                                                                ("time-1s", 0.9)]
    assert [r["measured"] for r in t["matches"]] == [
        {"model": "runs/x", "model_sha256": src_sha, "machine": {"cpu": "A"}},
        {"model": "default", "model_sha256": shipped_sha, "machine": {"cpu": "B"}}]
    assert t["model_sha256"] == shipped_sha


def test_a_shipped_file_that_fails_its_check_is_refused_loudly(run, root) -> None:
    with pytest.raises(NoShippedModel, match="no model ships"):
        default_model(root)
    target = ship(run, root)
    data = bytearray((target / MODEL_FILE).read_bytes())
    data[len(data) // 2] ^= 1
    (target / MODEL_FILE).write_bytes(bytes(data))
    with pytest.raises(ShippedModelError, match="model.pt fails its SHA-256 check"):
        default_model(root).path()
    with pytest.raises(ShippedModelError, match="SHA-256"):
        resolve_model_path("default")
    (target / "meta.json").write_text("{}")
    with pytest.raises(ShippedModelError, match="not the meta.json of a shipped model"):
        default_model(root)
    (root / "default.json").write_text('{"name": "../etc"}')
    with pytest.raises(ShippedModelError, match="must be a model folder name"):
        default_model(root)


def test_default_is_a_player_everywhere_a_model_is_named(run, root, capsys) -> None:
    ship(run, root)
    p = make_player("default:4", max_games=2)
    assert isinstance(p, NeuralPlayer) and p.name == "default:4" and p.runs == 4
    r = play_match(p, make_player("random", seed=1), load_openings()[:1])
    assert r.games == 2
    timed = make_player("default@0.05")
    assert isinstance(timed, TimedPlayer) and not timed.searcher.rollout
    b = load_openings()[2]
    assert timed.choose([b])[0] in b.legal_moves()
    with pytest.raises(ValueError, match="think time must be > 0 seconds"):
        make_player("rollout@soon")
    assert cli.main(["arena", "default:4", "random", "--games", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["player1"] == "default:4" and out["games"] == 2


def test_no_shipped_model_is_one_line_where_default_is_asked_for(root, capsys) -> None:
    assert cli.main(["arena", "default", "random", "--games", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("pyhexz arena: error: no model ships"), err


def test_a_new_run_can_start_from_the_shipped_model(run, root, tmp_path, caplog) -> None:
    from pyhexz.infra.storage import CheckpointRepo, LocalStorage
    from pyhexz.train.local import _init_model
    ship(run, root)
    init = _init_model("default")
    assert init.source.startswith("default (")
    repo = CheckpointRepo(LocalStorage(tmp_path / "fresh"), "fresh")
    # The flags' network size gives way to the model's.
    t = Trainer(repo, TrainConfig(blocks=2, filters=4), init=init)
    assert t.config.blocks == 1 and t.config.filters == 8
    meta = repo.meta(0)
    assert meta["params"] == {"blocks": 1, "filters": 8}
    assert meta["init"] == {"source": init.source, "optimizer_state": False,
                            "sha256": sha256(default_model_file().read_bytes())}
    started = load_checkpoint(ckpt_dir(repo, 0) / MODEL_FILE).model.state_dict()
    for k, v in load_checkpoint(default_model_file()).model.state_dict().items():
        assert torch.equal(v, started[k]), k
    # From the resumable checkpoint: Adam's state comes along.
    resumable = InitModel(load_checkpoint(root.parent / "training/t1" / MODEL_FILE), "t", "x")
    repo2 = CheckpointRepo(LocalStorage(tmp_path / "fresh2"), "fresh2")
    t2 = Trainer(repo2, TrainConfig(), init=resumable)
    assert t2.optimizer.state_dict()["state"], "the optimizer state was not carried over"
    # A run with checkpoints resumes, whatever --init says.
    with caplog.at_level(logging.INFO, logger="pyhexz"):
        Trainer(repo, TrainConfig(blocks=2, filters=4), init=init)
    assert "init ignored model=fresh" in caplog.text


def test_ship_model_command(run, root, tmp_path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("trained on the lead's machine\n")
    code = cli.main(["ship-model", str(ckpt_dir(run, 2)), "--name", "c1", "--why", "the best",
                     "--models-dir", str(root), "--training-dir", str(tmp_path / "tr"),
                     "--notes", str(notes)])
    assert code == 0
    out = capsys.readouterr().out
    assert "shipped c1 as the default model" in out and str(root / "c1" / MODEL_FILE) in out
    meta = default_model(root).meta
    assert meta["training"]["notes"] == "trained on the lead's machine\n"
    assert (tmp_path / "tr" / "c1" / MODEL_FILE).exists()
    # A corrupt checkpoint in the run: one line, exit 2.
    bad = ckpt_dir(run, 1) / MODEL_FILE
    saved = bad.read_bytes()
    try:
        bad.write_bytes(saved[:-10] + b"0123456789")
        code = cli.main(["ship-model", str(ckpt_dir(run, 1)), "--name", "c2", "--why", "x",
                         "--models-dir", str(root)])
    finally:
        bad.write_bytes(saved)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "SHA-256 mismatch" in err[0], err


def test_training_record_of_a_run_without_session_records(run) -> None:
    """Runs of the training server record no `pyhexz train` session: the record says so
    instead of inventing a wall time."""
    rec = training_record(run, 2)
    assert rec["wall_time_complete"] is False
    assert [s["command"] for s in rec["sessions"]] == [None]
    assert rec["sessions"][0]["first_checkpoint"] == 0
    assert rec["sessions"][0]["last_checkpoint"] == 2


def test_package_ships_no_untrained_model() -> None:
    """Nothing unproven ships (issue 16): a model folder in the package carries a strength
    table with at least one complete match, and wins every complete match (the table as a
    whole takes core-hours, so a model may ship with part of it measured; docs/shipped-model.md
    says which parts, its meta.json which are missing)."""
    models = REPO_ROOT / "src" / "pyhexz" / "models"
    try:
        m = default_model(models)
    except NoShippedModel:
        return
    m.verify()
    table = m.meta.get("strength") or {}
    assert table.get("openings") == 128, "the table is over all fixture openings"
    complete = [r for r in table.get("matches", []) if r.get("complete")]
    assert complete, f"{m.name} ships without a complete strength match"
    assert all(r["score"] > 0.5 for r in complete), f"{m.name} loses a match of its table"
    assert os.path.getsize(m.dir / MODEL_FILE) <= 20 * 2**20


def test_the_players_of_default_use_its_model_onnx(run, root, monkeypatch) -> None:
    """`default` as a player (arena, benchmarks) runs the shipped model.onnx, checked against
    the shipped meta.json, instead of converting the network again."""
    pytest.importorskip("onnxruntime")
    from pyhexz.nn import Predictor, onnxfile
    ship(run, root, n=2)

    def no_export(_model):
        raise AssertionError("converted although the shipped model has model.onnx")
    monkeypatch.setattr(onnxfile, "export_onnx", no_export)
    predictor = Predictor.from_path(resolve_model_path("default"), backend="onnx")
    assert predictor.backend.name == "onnx"
