"""ONNX export as a product: `pyhexz export --format onnx`, the hexz signature in the file, and
the model.onnx that every checkpoint carries (written by the trainer, listed in meta.json,
used by the backends when valid)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import network_positions
from pyhexz import cli
from pyhexz.infra.storage import MODEL_FILE, ONNX_FILE, CheckpointRepo, LocalStorage
from pyhexz.nn import HexzNet, load_model, save_checkpoint
from pyhexz.nn import onnxfile as onnxlib
from pyhexz.search.players import load_predictor
from pyhexz.train.config import TrainConfig
from pyhexz.train.trainer import Trainer

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")


@pytest.fixture(scope="module")
def positions(fixture_states) -> tuple[np.ndarray, np.ndarray]:
    return network_positions(fixture_states, 32)


def session(path: Path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def assert_agrees(sess, module: torch.nn.Module, boards: np.ndarray, masks: np.ndarray) -> None:
    """The file's outputs are the module's to 1e-5: logits of legal moves, the -1e32 of
    illegal ones, values."""
    logits, value = sess.run(None, {"board": boards, "action_mask": masks})
    with torch.inference_mode():
        want_logits, want_value = module(torch.from_numpy(boards), torch.from_numpy(masks))
    legal = masks.reshape(len(masks), -1)
    np.testing.assert_allclose(logits[legal], want_logits.numpy()[legal], atol=1e-5, rtol=0)
    assert (logits[~legal] == -1e32).all()
    np.testing.assert_allclose(value, want_value.numpy(), atol=1e-5, rtol=0)


def test_cli_exports_a_checkpoint_with_the_hexz_signature(tmp_path: Path, positions,
                                                          capsys) -> None:
    torch.manual_seed(0)
    net = HexzNet(2, 16).eval()
    save_checkpoint(tmp_path / "model.pt", net)
    out = tmp_path / "out.onnx"
    assert cli.main(["export", "--format", "onnx", str(tmp_path / "model.pt"), str(out)]) == 0
    assert f"(onnx, opset {onnxlib.OPSET}, dynamic batch)" in capsys.readouterr().out
    sess = session(out)
    ins, outs = sess.get_inputs(), sess.get_outputs()
    assert [(i.name, i.type, i.shape[1:]) for i in ins] == [
        ("board", "tensor(float)", [11, 11, 10]), ("action_mask", "tensor(bool)", [2, 11, 10])]
    assert [(o.name, o.shape[1:]) for o in outs] == [("policy", [220]), ("value", [1])]
    assert all(isinstance(x.shape[0], str) for x in ins + outs)   # the dynamic batch axis
    assert onnxlib.opset_of(out.read_bytes()) == onnxlib.OPSET
    boards, masks = positions
    for n in (1, 5, len(boards)):
        assert_agrees(sess, net, boards[:n], masks[:n])


def test_hexz_torchscript_fixture_exports(fixtures_dir: Path, tmp_path: Path, positions) -> None:
    src = fixtures_dir / "hexz_conv2d_scriptmodule.pt"
    out = tmp_path / "hexz.onnx"
    assert cli.main(["export", "--format", "onnx", str(src), str(out)]) == 0
    assert_agrees(session(out), load_model(src), *positions)


def test_export_of_a_bad_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a model")
    assert cli.main(["export", "--format", "onnx", str(bad), str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot load model file" in err[0]
    assert not (tmp_path / "x.onnx").exists()


def test_torchscript_stays_the_default_format(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "model.pt", HexzNet(1, 8))
    assert cli.main(["export", str(tmp_path / "model.pt"), str(tmp_path / "ts.pt")]) == 0
    assert isinstance(load_model(tmp_path / "ts.pt"), torch.jit.ScriptModule)


def test_checkpoints_carry_model_onnx_and_the_backends_use_it(tmp_path: Path, positions,
                                                             monkeypatch) -> None:
    repo = CheckpointRepo(LocalStorage(tmp_path), "unit")
    trainer = Trainer(repo, TrainConfig(blocks=1, filters=8))
    meta = repo.meta(0)
    assert ONNX_FILE in meta["sha256"]
    folder = tmp_path / "models/flagz/unit/checkpoints/0"
    assert_agrees(session(folder / ONNX_FILE), trainer.net.eval(), *positions)

    # The file is used as it is: with conversion impossible, the onnx backend still runs.
    def no_export(_model):
        raise AssertionError("converted although the checkpoint has model.onnx")
    monkeypatch.setattr(onnxlib, "export_onnx", no_export)
    assert load_predictor(repo, 0, backend="onnx").backend.name == "onnx"
    from pyhexz.nn import Predictor
    assert Predictor.from_path(folder / MODEL_FILE, backend="onnx").backend.name == "onnx"


def test_tampered_model_onnx_is_ignored_with_one_log_line(tmp_path: Path, caplog) -> None:
    repo = CheckpointRepo(LocalStorage(tmp_path), "unit")
    Trainer(repo, TrainConfig(blocks=1, filters=8))
    folder = tmp_path / "models/flagz/unit/checkpoints/0"
    data = (folder / ONNX_FILE).read_bytes()
    (folder / ONNX_FILE).write_bytes(data[:-10] + b"0123456789")
    caplog.set_level(logging.INFO)
    from pyhexz.nn import Predictor
    for p in (load_predictor(repo, 0, backend="onnx"),
              Predictor.from_path(folder / MODEL_FILE, backend="onnx")):
        assert p.backend.name == "onnx"   # converted from model.pt instead
    said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(said) == 2 and all("onnx file ignored" in m for m in said), said


def test_checkpoint_without_onnx_extra_is_published_without_it(tmp_path: Path, monkeypatch,
                                                               caplog) -> None:
    def fail(_model):
        raise ModuleNotFoundError("No module named 'onnx'")
    monkeypatch.setattr(onnxlib, "export_onnx", fail)
    repo = CheckpointRepo(LocalStorage(tmp_path), "unit")
    caplog.set_level(logging.INFO)
    Trainer(repo, TrainConfig(blocks=1, filters=8))
    assert set(repo.meta(0)["sha256"]) == {MODEL_FILE, "scriptmodule.pt"}
    assert any(f"checkpoint without {ONNX_FILE}" in r.getMessage() for r in caplog.records)
    meta = json.loads((tmp_path / "models/flagz/unit/checkpoints/0/meta.json").read_text())
    assert ONNX_FILE not in meta["size"]
