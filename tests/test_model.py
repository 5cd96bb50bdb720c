"""Tests for pyhexz.nn and pyhexz.infra.atomicfile (tiny 2x16 net, a few seconds on CPU)."""

import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from conftest import model_device
from pyhexz.game.board import POLICY_SIZE
from pyhexz.infra.atomicfile import atomic_write_bytes, atomic_writer
from pyhexz.nn import (
    ILLEGAL_LOGIT,
    PRESETS,
    Checkpoint,
    HexzNet,
    ModelLoadError,
    Predictor,
    export_torchscript,
    load_checkpoint,
    load_model,
    save_checkpoint,
)

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
HEXZ_MODEL = FIXTURES / "hexz_conv2d_scriptmodule.pt"
# The networks' device: cpu unless HEXZ_TEST_DEVICE says otherwise (benchmarks/gpu_check.sh).
DEVICE = torch.device(model_device())


def tiny() -> HexzNet:
    return HexzNet(*PRESETS["tiny"])


def random_batch(n: int, seed: int = 0, p_legal: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    boards = rng.integers(0, 6, size=(n, 11, 11, 10)).astype(np.float32)
    masks = rng.random((n, 2, 11, 10)) < p_legal
    masks[:, 0, 0, 0] = True  # every row has at least one legal move
    return boards, masks


def tensors(boards: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """A numpy batch as tensors on the tests' device."""
    return torch.from_numpy(boards).to(DEVICE), torch.from_numpy(masks).to(DEVICE)


@pytest.fixture
def trained_net() -> HexzNet:
    """A tiny net whose BN statistics and weights moved away from their init."""
    torch.manual_seed(0)
    net = tiny().to(DEVICE)
    b, m = tensors(*random_batch(8))
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    for _ in range(2):
        logits, value = net(b, m)
        loss = -torch.log_softmax(logits, 1)[:, 0].mean() + value.square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


# --------------------------------------------------------------------------
# Network
# --------------------------------------------------------------------------


def test_forward_shapes_and_masking() -> None:
    torch.manual_seed(1)
    net = tiny().to(DEVICE).eval()
    boards, masks = random_batch(5)
    logits, value = net(*tensors(boards, masks))
    assert logits.shape == (5, POLICY_SIZE) and logits.dtype == torch.float32
    assert value.shape == (5, 1) and value.dtype == torch.float32
    flat = torch.from_numpy(masks.reshape(5, -1)).to(DEVICE)
    assert torch.all(logits[~flat] == ILLEGAL_LOGIT)
    assert torch.all(logits[flat] > -1e30)


def test_policy_index_is_type_row_col() -> None:
    net = tiny().eval()
    mask = torch.zeros((1, 2, 11, 10), dtype=torch.bool)
    mask[0, 1, 3, 4] = True  # a normal move at (3, 4)
    mask[0, 0, 10, 9] = True  # a flag move at (10, 9)
    logits, _ = net(torch.zeros((1, 11, 11, 10)), mask)
    legal = torch.nonzero(logits[0] > -1e30).flatten().tolist()
    assert legal == [0 * 110 + 10 * 10 + 9, 1 * 110 + 3 * 10 + 4]


def test_value_in_range_even_for_extreme_inputs() -> None:
    torch.manual_seed(2)
    net = tiny()  # training mode too: BN with batch stats must not break tanh
    boards = torch.randn(6, 11, 11, 10) * 1e4
    mask = torch.ones((6, 2, 11, 10), dtype=torch.bool)
    for mode in (True, False):
        net.train(mode)
        _, value = net(boards, mask)
        assert torch.all(value.abs() <= 1.0)


def test_presets_and_bad_params() -> None:
    assert PRESETS == {"small": (5, 64), "large": (10, 128), "tiny": (2, 16)}
    net = HexzNet(*PRESETS["small"])
    assert (net.blocks, net.filters) == (5, 64)
    for bad in ((0, 16), (2, -1), (2.0, 16), (True, 16)):
        with pytest.raises(ValueError,
                           match=r"HexzNet: (blocks|filters) must be a positive int, got "):
            HexzNet(*bad)


def test_scripted_matches_eager(trained_net: HexzNet, tmp_path: Path) -> None:
    trained_net.train()
    path = tmp_path / "net.pt"
    scripted = export_torchscript(trained_net, path)
    assert trained_net.training, "export must not change the caller's model mode"
    trained_net.eval()
    loaded = load_model(path, DEVICE)
    assert isinstance(loaded, torch.jit.ScriptModule) and not loaded.training
    b, m = tensors(*random_batch(4, seed=3))
    with torch.inference_mode():
        want = trained_net(b, m)
        for module in (scripted.to(DEVICE), loaded):
            got = module(b, m)
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])


def test_score_head_is_beside_the_hexz_interface(trained_net: HexzNet, tmp_path: Path) -> None:
    """forward keeps the hexz signature (logits, value); forward_with_score adds the score
    head's output and agrees with forward on the other two. The TorchScript export has only
    the hexz forward."""
    b, m = tensors(*random_batch(5, seed=4))
    with torch.inference_mode():
        out = trained_net(b, m)
        logits, value, score = trained_net.forward_with_score(b, m)
    assert len(out) == 2 and score.shape == (5, 1) and score.dtype == torch.float32
    torch.testing.assert_close(logits, out[0])
    torch.testing.assert_close(value, out[1])
    scripted = export_torchscript(trained_net, tmp_path / "net.pt")
    assert not hasattr(scripted, "forward_with_score")


@pytest.mark.parametrize("blocks, pooling_blocks", [(1, [0]), (3, [1]), (5, [1, 4])])
def test_global_pooling_network(blocks: int, pooling_blocks: list, tmp_path: Path) -> None:
    """Global pooling puts GlobalPoolingBlocks into the tower; the network keeps the hexz
    interface, exports to TorchScript, and its checkpoint rebuilds it."""
    from pyhexz.nn.network import GlobalPoolingBlock

    torch.manual_seed(6)
    net = HexzNet(blocks, 8, global_pooling=True).eval()
    assert [i for i, blk in enumerate(net.tower) if isinstance(blk, GlobalPoolingBlock)] \
        == pooling_blocks
    assert net.params == {"blocks": blocks, "filters": 8, "global_pooling": True}
    assert HexzNet(blocks, 8).params == {"blocks": blocks, "filters": 8}
    boards, masks = random_batch(3, seed=5)
    b, m = torch.from_numpy(boards), torch.from_numpy(masks)
    with torch.inference_mode():
        want = net(b, m)
    assert want[0].shape == (3, POLICY_SIZE) and want[1].shape == (3, 1)
    save_checkpoint(tmp_path / "c.pt", net)
    export_torchscript(net, tmp_path / "s.pt")
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.params == net.params and ckpt.fresh == []
    with torch.inference_mode():
        for module in (ckpt.model, load_model(tmp_path / "s.pt")):
            got = module(b, m)
            torch.testing.assert_close(got[0], want[0])
            torch.testing.assert_close(got[1], want[1])
    with pytest.raises(ValueError, match="global_pooling must be a bool"):
        HexzNet(2, 8, global_pooling=1)  # type: ignore[arg-type]


def test_checkpoint_from_before_the_score_head_loads_with_a_fresh_one(
        trained_net: HexzNet, tmp_path: Path) -> None:
    """A checkpoint written before the score head existed (no score_head.* weights) loads: the
    head starts as initialised, the rest is the file's, so forward is exactly as it was."""
    raw_path = tmp_path / "new.pt"
    save_checkpoint(raw_path, trained_net)
    raw = torch.load(raw_path, weights_only=True)
    raw["model_state"] = {k: v for k, v in raw["model_state"].items()
                          if not k.startswith("score_head.")}
    old = _write_raw(tmp_path / "old.pt", raw)
    ckpt = load_checkpoint(old, DEVICE)
    assert ckpt.fresh and all(k.startswith("score_head.") for k in ckpt.fresh)
    assert {k for k, _ in trained_net.named_parameters() if k.startswith("score_head.")} \
        <= set(ckpt.fresh)
    b, m = tensors(*random_batch(4, seed=6))
    with torch.inference_mode():
        for got, want in zip(ckpt.model(b, m), trained_net(b, m), strict=True):
            torch.testing.assert_close(got, want)
    assert isinstance(load_model(old), HexzNet)
    # Only a whole head may be missing: part of one is a broken file.
    raw["model_state"]["score_head.0.weight"] = trained_net.state_dict()["score_head.0.weight"]
    _assert_load_error(_write_raw(tmp_path / "half.pt", raw), "missing: score_head.1.")


# --------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------


def test_checkpoint_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(4)
    net = tiny().to(DEVICE)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    logits, value = net(*tensors(*random_batch(4)))
    (value.sum() - torch.log_softmax(logits, 1)[:, 0].sum()).backward()
    opt.step()

    path = tmp_path / "ckpt.pt"
    meta = {"model_name": "test", "checkpoint": 7, "examples": 12345, "lr": 1e-3,
            "tags": ("a", "b")}
    save_checkpoint(path, net, opt, **meta)
    ckpt = load_checkpoint(path, DEVICE)

    assert isinstance(ckpt, Checkpoint)
    assert ckpt.params == {"blocks": 2, "filters": 16}
    assert ckpt.meta == {**meta, "tags": ["a", "b"]}  # JSON-normalised
    assert not ckpt.model.training
    want = net.state_dict()
    got = ckpt.model.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k

    assert ckpt.optimizer_state is not None
    opt2 = torch.optim.Adam(ckpt.model.parameters(), lr=1.0)
    opt2.load_state_dict(ckpt.optimizer_state)
    assert opt2.param_groups[0]["lr"] == 1e-3
    s1, s2 = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert s1.keys() == s2.keys() and len(s1) > 0
    for k in s1:
        for name in ("step", "exp_avg", "exp_avg_sq"):
            assert torch.equal(torch.as_tensor(s1[k][name]), torch.as_tensor(s2[k][name]))

    # Without an optimizer; load_model gives the same network in eval mode.
    save_checkpoint(path, net)
    assert load_checkpoint(path).optimizer_state is None
    model = load_model(path)
    assert isinstance(model, HexzNet) and not model.training


def test_save_checkpoint_rejects_non_json_meta(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(tmp_path / "c.pt", tiny(), step=np.int64(3))
    with pytest.raises(TypeError, match="HexzNet"):
        save_checkpoint(tmp_path / "c.pt", nn.Linear(2, 2))
    assert list(tmp_path.iterdir()) == []


def _write_raw(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def _assert_load_error(path: Path, *fragments: str) -> None:
    for loader in (load_checkpoint, load_model):
        with pytest.raises(ModelLoadError,
                           match=rf"cannot load model file .*{re.escape(path.name)}") as info:
            loader(path)
        msg = str(info.value)
        assert path.name in msg, msg
        for fragment in fragments:
            assert fragment in msg, msg


def test_load_errors_missing_truncated_garbage(tmp_path: Path) -> None:
    _assert_load_error(tmp_path / "nope.pt", "file not found")

    good = tmp_path / "good.pt"
    save_checkpoint(good, tiny())
    data = good.read_bytes()
    half = tmp_path / "half.pt"
    half.write_bytes(data[: len(data) // 2])
    _assert_load_error(half, "not a zip archive", "truncated")

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(5).bytes(4096))
    _assert_load_error(garbage, "not a zip archive")

    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"format": "pyhexz.checkpoint"}))
    _assert_load_error(pickled, "not a zip archive")

    other_zip = tmp_path / "other.pt"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("x/readme.txt", "hello")
    _assert_load_error(other_zip, "torch.load failed")

    with pytest.raises(ModelLoadError, match="not a regular file"):
        load_model(tmp_path)


class _Custom:
    """Stands for any pickled Python object a weights-only load must refuse."""


def test_load_errors_wrong_content(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    save_checkpoint(good, tiny(), checkpoint=1)
    raw = torch.load(good, weights_only=True)

    _assert_load_error(_write_raw(tmp_path / "list.pt", [1, 2, 3]), "top-level object is a list")
    _assert_load_error(
        _write_raw(tmp_path / "obj.pt", {**raw, "meta": _Custom()}),
        "weights-only unpickler rejected",
    )
    _assert_load_error(_write_raw(tmp_path / "fmt.pt", {"format": "other"}),
                       "not a pyhexz checkpoint")
    _assert_load_error(_write_raw(tmp_path / "sd.pt", raw["model_state"]), "bare state_dict")
    _assert_load_error(
        _write_raw(tmp_path / "keys.pt",
                   {k: v for k, v in raw.items() if k not in ("model_state", "meta")}),
        "missing keys",
        "model_state",
    )
    _assert_load_error(
        _write_raw(tmp_path / "ver.pt", {**raw, "version": 2}), "unsupported checkpoint version 2"
    )
    _assert_load_error(
        _write_raw(tmp_path / "params.pt", {**raw, "params": {"blocks": 2}}),
        "'params' must have the keys ['blocks', 'filters']", "got ['blocks']",
    )
    _assert_load_error(
        _write_raw(tmp_path / "params2.pt", {**raw, "params": {**raw["params"], "depth": 2}}),
        "(and optionally ['global_pooling'])", "got ['blocks', 'depth', 'filters']",
    )
    _assert_load_error(
        _write_raw(tmp_path / "gpool.pt", {**raw, "params": {**raw["params"],
                                                             "global_pooling": 1}}),
        "params['global_pooling'] must be a bool, got 1",
    )
    _assert_load_error(
        _write_raw(tmp_path / "gpool2.pt", {**raw, "params": {**raw["params"],
                                                              "global_pooling": True}}),
        "does not fit a HexzNet(blocks=2, filters=16, global_pooling=True)", "missing: tower.1.",
    )
    _assert_load_error(
        _write_raw(tmp_path / "shape.pt", {**raw, "params": {"blocks": 2, "filters": 32}}),
        "does not fit a HexzNet(blocks=2, filters=32)",
        "shape mismatch",
    )
    _assert_load_error(
        _write_raw(tmp_path / "depth.pt", {**raw, "params": {"blocks": 3, "filters": 16}}),
        "missing: tower.2.",
    )
    bigger = tmp_path / "big.pt"
    save_checkpoint(bigger, HexzNet(3, 16))
    _assert_load_error(
        _write_raw(tmp_path / "extra.pt",
                   {**torch.load(bigger, weights_only=True), "params": raw["params"]}),
        "unexpected: tower.2.",
    )


def test_load_checkpoint_on_torchscript_file(tmp_path: Path) -> None:
    path = tmp_path / "net.pt"
    export_torchscript(tiny(), path)
    with pytest.raises(ModelLoadError, match="TorchScript model, not a training checkpoint"):
        load_checkpoint(path)


class _WrongInterface(nn.Module):
    def forward(self, board: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
        return board.flatten(1)


def test_load_model_rejects_wrong_torchscript_interface(tmp_path: Path) -> None:
    path = tmp_path / "wrong.pt"
    export_torchscript(_WrongInterface(), path)
    with pytest.raises(ModelLoadError, match="TorchScript module returned Tensor"):
        load_model(path)


def test_model_load_error_is_value_error_and_picklable() -> None:
    err = ModelLoadError("/x/y.pt", "broken")
    assert isinstance(err, ValueError)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.path, copy.reason, str(copy)) == (err.path, err.reason, str(err))


# --------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------


def test_atomic_writes_leave_no_temp_files(tmp_path: Path) -> None:
    net = tiny()
    save_checkpoint(tmp_path / "a.pt", net)
    save_checkpoint(tmp_path / "a.pt", net)  # overwrite
    export_torchscript(net, tmp_path / "b.pt")
    atomic_write_bytes(tmp_path / "c.bin", b"hello")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pt", "b.pt", "c.bin"]
    assert (tmp_path / "c.bin").read_bytes() == b"hello"


def test_atomic_writer_error_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError, match="boom"):
        with atomic_writer(target) as f:
            f.write(b"new, partial")
            raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


def test_atomic_writer_respects_umask(tmp_path: Path) -> None:
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f.bin", b"x")
    finally:
        os.umask(old)
    assert (tmp_path / "f.bin").stat().st_mode & 0o777 == 0o640


# --------------------------------------------------------------------------
# Predictor
# --------------------------------------------------------------------------


def _check_probs(probs: np.ndarray, values: np.ndarray, masks: np.ndarray) -> None:
    n = masks.shape[0]
    assert probs.shape == (n, POLICY_SIZE) and probs.dtype == np.float32
    assert values.shape == (n,) and values.dtype == np.float32
    flat = masks.reshape(n, -1)
    assert np.all(probs[~flat] == 0.0)
    assert np.all(probs[flat] > 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.all(np.abs(values) <= 1.0)


def test_predictor_tiny(trained_net: HexzNet) -> None:
    pred = Predictor(trained_net, DEVICE)
    boards, masks = random_batch(6, seed=6)
    masks[5] = False  # no legal move at all: all-zero row, not a uniform one
    probs, values = pred(boards, masks)
    _check_probs(probs[:5], values[:5], masks[:5])
    assert np.all(probs[5] == 0.0)

    # Same numbers as the module itself.
    with torch.inference_mode():
        logits, value = trained_net(*tensors(boards, masks))
    np.testing.assert_allclose(probs[:5], torch.softmax(logits[:5], 1).cpu().numpy(),
                               rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(values, value.flatten().cpu().numpy(), rtol=1e-6)


def test_predictor_odd_inputs(trained_net: HexzNet) -> None:
    pred = Predictor(trained_net, DEVICE)
    boards, masks = random_batch(4, seed=7)
    want_p, want_v = pred(boards, masks)

    ro_boards, ro_masks = boards.copy(), masks.copy()
    ro_boards.flags.writeable = False
    ro_masks.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # from_numpy warns on read-only arrays
        p, v = pred(ro_boards, ro_masks)
    np.testing.assert_array_equal(p, want_p)

    p, v = pred(boards[::-1], masks[::-1])  # negative strides
    np.testing.assert_allclose(p, want_p[::-1], rtol=1e-5, atol=1e-7)

    p, v = pred(boards[:0], masks[:0])
    assert p.shape == (0, POLICY_SIZE) and v.shape == (0,)


@pytest.mark.parametrize(
    "boards, masks, match",
    [
        (np.zeros((2, 11, 11, 10), np.float64), np.ones((2, 2, 11, 10), bool),
         "boards must be a float32"),
        (np.zeros((2, 11, 10, 11), np.float32), np.ones((2, 2, 11, 10), bool), "boards must be"),
        (np.zeros((11, 11, 10), np.float32), np.ones((2, 11, 10), bool), "boards must be"),
        ([[0.0]], np.ones((1, 2, 11, 10), bool), "got list"),
        (np.zeros((2, 11, 11, 10), np.float32), np.ones((2, 2, 11, 10), np.uint8),
         "masks must be a bool"),
        (np.zeros((2, 11, 11, 10), np.float32), np.ones((2, 220), bool), "masks must be"),
        (np.zeros((2, 11, 11, 10), np.float32), np.ones((3, 2, 11, 10), bool),
         "different batch sizes"),
    ],
)
def test_predictor_rejects_bad_input(boards: object, masks: object, match: str) -> None:
    pred = Predictor(tiny(), DEVICE)
    with pytest.raises(ValueError, match=match):
        pred(boards, masks)  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# The hexz reference model
# --------------------------------------------------------------------------


@pytest.mark.skipif(not HEXZ_MODEL.exists(), reason=f"hexz fixture model not found at {HEXZ_MODEL}")
def test_hexz_fixture_model() -> None:
    module = load_model(HEXZ_MODEL, DEVICE)
    # The file was saved in training mode; load_model must switch every submodule.
    assert not any(m.training for m in module.modules())

    boards, masks = random_batch(5, seed=8, p_legal=0.2)
    masks[2] = False
    masks[2, 1, 7, 3] = True  # a single legal move
    with torch.inference_mode():
        logits, value = module(*tensors(boards, masks))
    assert logits.shape == (5, POLICY_SIZE) and value.shape == (5, 1)
    assert torch.all(logits[~torch.from_numpy(masks.reshape(5, -1)).to(DEVICE)] == ILLEGAL_LOGIT)

    pred = Predictor.from_path(HEXZ_MODEL, DEVICE)
    probs, values = pred(boards, masks)
    _check_probs(probs, values, masks)
    assert probs[2, 110 + 7 * 10 + 3] == pytest.approx(1.0)

    # Eval mode means a position's output does not depend on its batch mates.
    p1, v1 = pred(boards[1:2], masks[1:2])
    np.testing.assert_allclose(p1[0], probs[1], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(v1[0], values[1], rtol=1e-4, atol=1e-6)


def test_load_model_bytes_names_its_source(tmp_path):
    from pyhexz.nn import HexzNet, ModelLoadError, export_torchscript, load_model_bytes

    export_torchscript(HexzNet(1, 8), tmp_path / "s.pt")
    m = load_model_bytes((tmp_path / "s.pt").read_bytes(), source="redis key k")
    assert m is not None
    with pytest.raises(ModelLoadError, match="redis key k"):
        load_model_bytes(b"garbage", source="redis key k")
