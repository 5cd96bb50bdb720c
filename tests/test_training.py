"""Tests for pyhexz.train.trainer and pyhexz.infra.storage: replay window, losses, guards,
checkpoints."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import model_device
from pyhexz import hexz_pb2 as pb
from pyhexz.game.examples import Arrays, InvalidExampleError, decode, encode_array
from pyhexz.game.symmetry import transform
from pyhexz.infra.storage import (
    META_FILE,
    MODEL_FILE,
    ONNX_FILE,
    SCRIPT_FILE,
    CheckpointExistsError,
    CheckpointRepo,
    LocalStorage,
    StorageError,
    open_storage,
    sha256,
    validate_model_name,
)
from pyhexz.nn import HexzNet, load_checkpoint, load_model, save_checkpoint
from pyhexz.nn.network import SCORE_SCALE
from pyhexz.search.driver import SearchConfig
from pyhexz.search.driver import uniform_evaluator as uniform
from pyhexz.train.selfplay import run_selfplay
from pyhexz.train.trainer import (
    NonFiniteError,
    ReplayWindow,
    TrainConfig,
    Trainer,
    losses,
    read_examples_archive,
    train_steps,
    trained_game_names,
)

# The networks' device: cpu unless HEXZ_TEST_DEVICE says otherwise (benchmarks/gpu_check.sh).
DEVICE = torch.device(model_device())


def net_on_device() -> HexzNet:
    return HexzNet(2, 16).to(DEVICE)


def tensors(a: Arrays, n: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n boards and masks of `a` as tensors on the tests' device."""
    return (torch.from_numpy(a.boards[:n]).to(DEVICE),
            torch.from_numpy(a.masks[:n]).to(DEVICE))


@pytest.fixture(scope="module")
def games() -> list[pb.AddTrainingExamplesRequest]:
    """Six real self-play games (uniform priors, 4 runs a move): a few hundred examples."""
    out: list[pb.AddTrainingExamplesRequest] = []
    run_selfplay(lambda: (uniform, pb.ModelKey(name="u", checkpoint=0)), out.append,
                 SearchConfig(runs_per_move=4), parallel_games=6, max_games=6, seed=7)
    assert len(out) == 6
    return out


@pytest.fixture(scope="module")
def data(games) -> Arrays:
    return Arrays.concat([decode(list(g.examples)) for g in games])


def tagged(ids) -> Arrays:
    """Arrays whose results identify the rows (id / 100)."""
    ids = np.asarray(ids)
    n = len(ids)
    boards = np.zeros((n, 11, 11, 10), np.float32)
    boards[:, 0, 0, 0] = ids
    masks = np.zeros((n, 2, 11, 10), bool)
    masks[:, 1, 0, 0] = True
    probs = masks.astype(np.float32)
    return Arrays(boards, masks, probs, (ids / 100).astype(np.float32))


def window_ids(w: ReplayWindow) -> list[int]:
    return sorted(int(x) for x in w.data.boards[:len(w), 0, 0, 0])


def state_equal(a: dict, b: dict) -> bool:
    """Deep equality of (optimizer or module) state dicts, tensors compared exactly."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)
                and a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b))
    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(state_equal(a[k], b[k]) for k in a))
    if isinstance(a, (list, tuple)):
        return (isinstance(b, (list, tuple)) and len(a) == len(b)
                and all(state_equal(x, y) for x, y in zip(a, b, strict=True)))
    return a == b


def snapshot(net, opt) -> tuple[dict, dict]:
    import copy
    return copy.deepcopy(net.state_dict()), copy.deepcopy(opt.state_dict())


# --------------------------------------------------------------------------
# Replay window
# --------------------------------------------------------------------------


def test_replay_window_ring() -> None:
    w = ReplayWindow(5)
    assert len(w) == 0
    w.add(tagged([0, 1, 2]))
    assert len(w) == 3 and window_ids(w) == [0, 1, 2]
    w.add(tagged([3, 4, 5, 6]))
    assert len(w) == 5 and window_ids(w) == [2, 3, 4, 5, 6]  # the oldest were overwritten
    w.add(tagged([]))
    assert window_ids(w) == [2, 3, 4, 5, 6]
    w.add(tagged(range(10, 22)))  # more than the capacity at once: the newest 5
    assert len(w) == 5 and window_ids(w) == [17, 18, 19, 20, 21]
    w.add(tagged([30]))
    assert window_ids(w) == [18, 19, 20, 21, 30]
    # Rows stay consistent across all four arrays.
    for i in range(len(w)):
        assert w.data.results[i] == pytest.approx(w.data.boards[i, 0, 0, 0] / 100)


def test_replay_window_sample_only_stored_rows() -> None:
    w = ReplayWindow(100)
    w.add(tagged([5, 6, 7]))
    s = w.sample(64, np.random.default_rng(0))
    assert len(s) == 64
    ids = s.boards[:, 0, 0, 0].astype(int)
    assert set(ids) == {5, 6, 7}  # never an empty (zero) slot
    np.testing.assert_allclose(s.results, ids / 100, rtol=1e-6)


def test_replay_window_samples_the_newest() -> None:
    """`newest` k: only the k newest examples are drawn, across the ring's wrap too."""
    w = ReplayWindow(5)
    w.add(tagged(range(8)))            # holds 3..7, the newest at slot 2
    rng = np.random.default_rng(0)

    def drawn(newest):
        return set(w.sample(200, rng, newest).boards[:, 0, 0, 0].astype(int))
    assert drawn(None) == drawn(5) == drawn(50) == {3, 4, 5, 6, 7}
    assert drawn(2) == {6, 7} and drawn(1) == {7} and drawn(0) == {7}
    w.add(tagged([8, 9, 10]))          # 6..10
    assert drawn(4) == {7, 8, 9, 10}


def test_window_grows_with_the_run_as_katago_s() -> None:
    fixed = cfg(replay_window=5000)
    assert [fixed.window_at(n) for n in (0, 10, 10**7)] == [5000] * 3
    grow = cfg(replay_window=5000, replay_window_start=1000)
    assert grow.window_at(500) == 500 and grow.window_at(1000) == 1000
    # c (1 + beta ((n / c)^alpha - 1) / alpha) with n = 16 c: (16)^0.75 = 8.
    assert grow.window_at(16_000) == int(1000 * (1 + 0.4 * 7 / 0.75)) == 4733
    assert grow.window_at(10**7) == 5000
    sizes = [grow.window_at(n) for n in range(0, 100_000, 997)]
    assert sizes == sorted(sizes)
    with pytest.raises(ValueError, match="replay_window_start must be >= 1"):
        cfg(replay_window_start=0)


# --------------------------------------------------------------------------
# Losses and training steps
# --------------------------------------------------------------------------


def test_losses_match_hand_computed(data: Arrays) -> None:
    torch.manual_seed(1)
    net = net_on_device().eval()
    batch = Arrays(data.boards[:6], data.masks[:6], data.probs[:6], data.results[:6])
    batch.results[:] = [1, -1, 0, 1, -1, 1]
    with torch.no_grad():
        p_loss, v_loss, _ = losses(net, batch, DEVICE)
        logits, value = net(*tensors(batch))
    logits = logits.double().cpu().numpy()
    value = value.double().cpu().numpy()[:, 0]
    target = batch.probs.reshape(6, -1).astype(np.float64)
    legal = batch.masks.reshape(6, -1)
    want_p = 0.0
    for i in range(6):
        z = logits[i][legal[i]]
        logp = z - (z.max() + np.log(np.exp(z - z.max()).sum()))
        want_p += -(target[i][legal[i]] * logp).sum()
    want_p /= 6
    want_v = np.mean((value - batch.results.astype(np.float64)) ** 2)
    assert np.isfinite(p_loss.item()) and np.isfinite(v_loss.item())
    assert p_loss.item() == pytest.approx(want_p, rel=1e-5)
    assert v_loss.item() == pytest.approx(want_v, rel=1e-5)


def test_policy_loss_of_one_hot_target_is_minus_log_prob(data: Arrays) -> None:
    torch.manual_seed(2)
    net = net_on_device().eval()
    b = Arrays(data.boards[:1].copy(), data.masks[:1].copy(), np.zeros_like(data.probs[:1]),
               data.results[:1].copy())
    idx = np.flatnonzero(b.masks[0].reshape(-1))[0]
    b.probs.reshape(1, -1)[0, idx] = 1.0
    with torch.no_grad():
        p_loss = losses(net, b, DEVICE).policy
        logits, _ = net(*tensors(b))
    assert p_loss.item() == pytest.approx(-torch.log_softmax(logits, 1)[0, idx].item(), rel=1e-5)


def test_score_loss_is_huber_over_the_known_scores(data: Arrays) -> None:
    torch.manual_seed(3)
    net = net_on_device().eval()
    batch = data[np.arange(4)]
    batch.scores[:] = [10.0, np.nan, -25.0, np.nan]
    with torch.no_grad():
        _, _, s_loss = losses(net, batch, DEVICE, score=True)
        predicted = net.forward_with_score(*tensors(batch))[2][:, 0].double()
    err = predicted.cpu().numpy()[[0, 2]] - np.array([10.0, -25.0]) / SCORE_SCALE
    huber = np.where(np.abs(err) <= 1, 0.5 * err**2, np.abs(err) - 0.5)
    assert s_loss.item() == pytest.approx(huber.mean(), rel=1e-5)
    # No score known (examples from before scores were recorded): no score loss.
    batch.scores[:] = np.nan
    with torch.no_grad():
        assert losses(net, batch, DEVICE, score=True).score.item() == 0.0
    # Not asked for: zero, and the score head is not run.
    assert losses(net, batch, DEVICE).score.item() == 0.0


def test_score_weight_trains_the_score_head_and_only_then(data: Arrays) -> None:
    assert not np.isnan(data.scores).any()   # self-play records every example's score
    w = ReplayWindow(len(data))
    w.add(data)

    def run(score_weight: float):
        torch.manual_seed(0)
        net = net_on_device()
        head = {k: v.clone() for k, v in net.score_head.state_dict().items()}
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
        before = losses(net.eval(), data, DEVICE, score=True).score.item()
        stats = [train_steps(net, opt, w, 256, 64, np.random.default_rng(i), DEVICE,
                             score_weight=score_weight) for i in range(6)]
        after = losses(net.eval(), data, DEVICE, score=True).score.item()
        moved = not state_equal(head, net.score_head.state_dict())
        return before, after, moved, stats
    before, after, moved, stats = run(1.0)
    assert moved and after < before and all("score_loss" in st for st in stats)
    _, _, moved, stats = run(0.0)
    assert not moved and not any("score_loss" in st for st in stats)


def eval_loss(net, a: Arrays) -> float:
    net.eval()
    with torch.no_grad():
        p, v, _ = losses(net, a, DEVICE)
    return p.item() + v.item()


@pytest.mark.parametrize("augment", [False, True])
def test_train_steps_lowers_loss(data: Arrays, augment: bool) -> None:
    """With augmentation the net learns all four mirror images of the data."""
    images = [data] if not augment else [
        Arrays(transform(data.boards, s), transform(data.masks, s), transform(data.probs, s),
               data.results) for s in range(4)]

    def mean_loss() -> float:
        return float(np.mean([eval_loss(net, d) for d in images]))

    torch.manual_seed(3)
    net = net_on_device()
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
    w = ReplayWindow(1000)
    w.add(data)
    before = mean_loss()
    rng = np.random.default_rng(0)
    for _ in range(5 if not augment else 12):
        stats = train_steps(net, opt, w, 128, 64, rng, DEVICE, augment=augment)
        assert stats["steps"] == 2 and stats["samples"] == 128
        assert np.isfinite(stats["policy_loss"]) and np.isfinite(stats["value_loss"])
    assert not net.training  # left in eval mode
    after = mean_loss()
    assert after < before - 0.2, (before, after)


class _PoisonWindow(ReplayWindow):
    """A window whose k-th sample is poisoned by `poison(batch, net)`."""

    def __init__(self, data: Arrays, k: int, poison) -> None:
        super().__init__(len(data))
        self.add(data)
        self.calls, self.k, self.poison = 0, k, poison

    def sample(self, n, rng, newest=None):
        batch = super().sample(n, rng, newest)
        self.calls += 1
        if self.calls == self.k:
            self.poison(batch)
        return batch


def _trained(data: Arrays, seed: int = 4):
    """A net + AdamW that have taken some steps (so the optimizer has state)."""
    torch.manual_seed(seed)
    net = net_on_device()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    w = ReplayWindow(1000)
    w.add(data)
    train_steps(net, opt, w, 64, 32, np.random.default_rng(seed), DEVICE)
    return net, opt


def _step_count(opt) -> float:
    return float(next(iter(opt.state_dict()["state"].values()))["step"])


def test_nan_result_raises_and_restores(data: Arrays) -> None:
    net, opt = _trained(data)
    before = snapshot(net, opt)
    steps_before = _step_count(opt)

    def poison(batch):
        batch.results[0] = np.nan

    w = _PoisonWindow(data, k=3, poison=poison)  # two good steps first, then NaN
    with pytest.raises(NonFiniteError, match="loss is nan"):
        train_steps(net, opt, w, 32 * 5, 32, np.random.default_rng(0), DEVICE)
    assert w.calls == 3
    assert state_equal(net.state_dict(), before[0])
    assert state_equal(opt.state_dict(), before[1])
    assert _step_count(opt) == steps_before
    assert not net.training
    # And training goes on normally afterwards.
    good = ReplayWindow(1000)
    good.add(data)
    train_steps(net, opt, good, 32, 32, np.random.default_rng(1), DEVICE)
    assert _step_count(opt) == steps_before + 1


def test_inf_weight_mid_run_raises_and_restores(data: Arrays) -> None:
    net, opt = _trained(data, seed=5)
    before = snapshot(net, opt)
    param = next(net.parameters())

    def poison(batch):
        with torch.no_grad():
            param.view(-1)[0] = float("inf")

    w = _PoisonWindow(data, k=2, poison=poison)
    with pytest.raises(NonFiniteError, match="loss is nan"):
        train_steps(net, opt, w, 32 * 4, 32, np.random.default_rng(0), DEVICE)
    assert state_equal(net.state_dict(), before[0])
    assert state_equal(opt.state_dict(), before[1])
    assert torch.isfinite(param).all()


def test_huge_learning_rate_raises_and_restores(data: Arrays) -> None:
    """A learning rate that blows the weights up: the next forward pass is non-finite."""
    net, opt = _trained(data, seed=6)
    for g in opt.param_groups:
        g["lr"] = 1e30
    before = snapshot(net, opt)
    w = ReplayWindow(1000)
    w.add(data)
    with pytest.raises(NonFiniteError, match="loss is nan"):
        train_steps(net, opt, w, 32 * 3, 32, np.random.default_rng(0), DEVICE)
    assert state_equal(net.state_dict(), before[0])
    assert state_equal(opt.state_dict(), before[1])
    assert all(torch.isfinite(p).all() and p.abs().max() < 100 for p in net.parameters())


def test_non_finite_weights_after_last_step_restored(data: Arrays) -> None:
    """Weights that become inf in the very last optimizer step are caught by the final check."""
    net, opt = _trained(data, seed=8)
    before = snapshot(net, opt)
    real_step = opt.step
    param = dict(net.named_parameters())["value_head.6.bias"]

    def step(*args, **kwargs):
        out = real_step(*args, **kwargs)
        with torch.no_grad():
            param.fill_(float("inf"))
        return out

    opt.step = step
    w = ReplayWindow(1000)
    w.add(data)
    try:
        with pytest.raises(NonFiniteError, match=r"non-finite weights in value_head\.6\.bias"):
            train_steps(net, opt, w, 32, 32, np.random.default_rng(0), DEVICE)
    finally:
        del opt.step
    assert state_equal(net.state_dict(), before[0])
    assert state_equal(opt.state_dict(), before[1])


def test_overflowing_learning_rate_restores(data: Arrays) -> None:
    net, opt = _trained(data, seed=9)
    before = snapshot(net, opt)
    w = _PoisonWindow(data, k=2, poison=lambda b: [g.__setitem__("lr", 1e39)
                                                   for g in opt.param_groups])
    overflow = "loss is (nan|inf)|cannot be converted to type float without overflow"
    with pytest.raises((NonFiniteError, RuntimeError), match=overflow):
        train_steps(net, opt, w, 32 * 3, 32, np.random.default_rng(0), DEVICE)
    for g, g0 in zip(opt.param_groups, before[1]["param_groups"], strict=True):
        g["lr"] = g0["lr"]
    assert state_equal(net.state_dict(), before[0])
    assert state_equal(opt.state_dict(), before[1])


def test_non_finite_on_fresh_optimizer_restores_empty_state(data: Arrays) -> None:
    torch.manual_seed(7)
    net = net_on_device()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    before = snapshot(net, opt)
    w = _PoisonWindow(data, k=2, poison=lambda b: b.results.__setitem__(0, np.inf))
    with pytest.raises(NonFiniteError, match="loss is inf"):
        train_steps(net, opt, w, 96, 32, np.random.default_rng(0), DEVICE)
    assert state_equal(net.state_dict(), before[0])
    assert opt.state_dict()["state"] == {}


# --------------------------------------------------------------------------
# Trainer and checkpoints
# --------------------------------------------------------------------------


def cfg(**kw) -> TrainConfig:
    base = dict(blocks=2, filters=16, batch_size=32, trigger_examples=100, replay_window=2000,
                samples_per_example=0.5, learning_rate=1e-3, seed=0)
    base.update(kw)
    return TrainConfig(**base)


def repo_at(path: Path, name: str = "unit") -> CheckpointRepo:
    return CheckpointRepo(LocalStorage(path), name)


def check_meta_hashes(repo: CheckpointRepo, n: int) -> dict:
    meta = repo.meta(n)
    d = repo.storage.root / repo.prefix / str(n)
    files = sorted(str(p.relative_to(d)) for p in d.rglob("*")
                   if p.is_file() and p.name not in (META_FILE, ".claim"))
    assert sorted(meta["sha256"]) == files
    for f, h in meta["sha256"].items():
        assert sha256((d / f).read_bytes()) == h, f
    assert meta["checkpoint"] == n and meta["model"] == repo.name
    return meta


def feed(trainer: Trainer, games, prefix: str) -> list[str]:
    names = []
    for i, g in enumerate(games):
        name = f"{prefix}-{i}.pb.gz"
        trainer.add(name, g)
        names.append(name)
    return names


def test_trainer_lifecycle_publish_and_resume(tmp_path: Path, games, data: Arrays) -> None:
    repo = repo_at(tmp_path)
    t = Trainer(repo, cfg(), DEVICE)
    # An empty repository gets checkpoint 0.
    assert repo.checkpoints() == [0] and t.checkpoint == 0
    meta0 = check_meta_hashes(repo, 0)
    assert set(meta0["sha256"]) == {MODEL_FILE, SCRIPT_FILE, ONNX_FILE}
    assert meta0["examples_trained"] == 0 and meta0["game_names"] == []
    assert t.model_key() == pb.ModelKey(name="unit", checkpoint=0)

    names1 = feed(t, games[:3], "a")
    n1 = sum(len(g.examples) for g in games[:3])
    assert t.pending_examples == n1 and t.ready()
    stats = t.train_and_publish()
    assert np.isfinite(stats["policy_loss"]) and np.isfinite(stats["value_loss"])
    assert repo.checkpoints() == [0, 1] and repo.latest() == 1 and t.checkpoint == 1
    assert t.pending == [] and t.pending_examples == 0 and not t.ready()
    meta1 = check_meta_hashes(repo, 1)
    assert set(meta1["sha256"]) == {MODEL_FILE, SCRIPT_FILE, ONNX_FILE, "examples/000001.zip"}
    assert meta1["game_names"] == names1
    assert meta1["games"] == 3 and meta1["new_examples"] == n1 and meta1["examples_trained"] == n1
    assert trained_game_names(repo, 1) == set(names1) and trained_game_names(repo, None) == set()
    assert repo.example_archives(1) == ["000001.zip"]
    archive = read_examples_archive(repo.read_verified(1, "examples/000001.zip"))
    assert [n for n, _ in archive] == names1 and [r for _, r in archive] == list(games[:3])

    # model.pt and scriptmodule.pt hold the trainer's weights.
    ckpt = load_checkpoint(tmp_path / repo.key(1, MODEL_FILE), DEVICE)
    assert ckpt.params == {"blocks": 2, "filters": 16}
    assert state_equal(ckpt.model.state_dict(), t.net.state_dict())
    steps1 = stats["steps"]
    assert float(ckpt.optimizer_state["state"][0]["step"]) == steps1
    script = load_model(tmp_path / repo.key(1, SCRIPT_FILE), DEVICE)
    assert isinstance(script, torch.jit.ScriptModule)
    b, m = tensors(data, 4)
    with torch.no_grad():
        for x, y in zip(script(b, m), t.net.eval()(b, m), strict=True):
            torch.testing.assert_close(x, y)

    # Resume: weights, optimizer state, examples trained and the window come back.
    t2 = Trainer(repo, cfg(), DEVICE)
    assert t2.checkpoint == 1 and t2.examples_trained == n1
    assert state_equal(t2.net.state_dict(), t.net.state_dict())
    assert state_equal(t2.optimizer.state_dict(), t.optimizer.state_dict())
    assert len(t2.window) == n1
    want = Arrays.concat([decode(list(g.examples)) for g in games[:3]])
    for f in ("boards", "masks", "probs", "results", "scores"):
        np.testing.assert_array_equal(getattr(t2.window.data, f)[:n1], getattr(want, f))
    assert repo.checkpoints() == [0, 1]  # resuming publishes nothing

    names2 = feed(t2, games[3:], "b")
    stats2 = t2.train_and_publish()
    meta2 = check_meta_hashes(repo, 2)
    n2 = sum(len(g.examples) for g in games[3:])
    assert meta2["game_names"] == names2 and meta2["examples_trained"] == n1 + n2
    # Adam's step count continues across the restart.
    ckpt2 = load_checkpoint(tmp_path / repo.key(2, MODEL_FILE))
    assert float(ckpt2.optimizer_state["state"][0]["step"]) == steps1 + stats2["steps"]
    assert float(t2.optimizer.state_dict()["state"][0]["step"]) == steps1 + stats2["steps"]


def _old_checkpoint(repo: CheckpointRepo, games) -> dict:
    """Checkpoint 0 as pyhexz wrote it before the score head: no score_head weights, and Adam
    state over the other parameters only (one step taken). Returns that optimizer state."""
    torch.manual_seed(1)
    net = net_on_device()
    old_params = [p for k, p in net.named_parameters() if not k.startswith("score_head.")]
    opt = torch.optim.AdamW(old_params, lr=1e-3)
    a = decode(list(games[0].examples))
    p_loss, v_loss, _ = losses(net, a, DEVICE)
    (p_loss + v_loss).backward()
    opt.step()
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / MODEL_FILE
        save_checkpoint(path, net, opt)
        raw = torch.load(path, weights_only=True)
        raw["model_state"] = {k: v for k, v in raw["model_state"].items()
                              if not k.startswith("score_head.")}
        torch.save(raw, path)
        repo.publish(0, {MODEL_FILE: path.read_bytes()}, {"examples_trained": 0})
    return opt.state_dict()


def test_trainer_resumes_a_checkpoint_from_before_the_score_head(tmp_path: Path, games) -> None:
    """The score head starts fresh; the other parameters keep their weights and their Adam
    moments; training with the score on publishes a checkpoint that has the head."""
    repo = repo_at(tmp_path)
    old_state = _old_checkpoint(repo, games)
    t = Trainer(repo, cfg(score_weight=1.0), DEVICE)
    assert t.checkpoint == 0
    state = t.optimizer.state_dict()
    assert state_equal(state["state"], old_state["state"])   # moments of the old parameters
    assert len(state["param_groups"][0]["params"]) == len(list(t.net.parameters()))
    feed(t, games[:2], "a")
    stats = t.train_and_publish()
    assert np.isfinite(stats["score_loss"])
    ckpt = load_checkpoint(tmp_path / repo.key(1, MODEL_FILE), DEVICE)
    assert ckpt.fresh == [] and state_equal(ckpt.model.state_dict(), t.net.state_dict())
    # Every parameter, the score head's too, now has Adam state, and it resumes as it is.
    assert len(ckpt.optimizer_state["state"]) == len(list(t.net.parameters()))
    resumed = Trainer(repo, cfg(), DEVICE)
    assert state_equal(resumed.optimizer.state_dict(), t.optimizer.state_dict())


def test_trainer_window_growth_and_global_pooling(tmp_path: Path, games) -> None:
    repo = repo_at(tmp_path)
    c = cfg(replay_window_start=50, global_pooling=True)
    t = Trainer(repo, c, DEVICE)
    assert repo.meta(0)["params"] == {"blocks": 2, "filters": 16, "global_pooling": True}
    names = feed(t, games[:3], "a")
    stats = t.train_and_publish()
    total = sum(len(g.examples) for g in games[:3])
    assert stats["window"] == c.window_at(total) < total == len(t.window)
    assert repo.meta(1)["game_names"] == names
    # The architecture is the checkpoint's: a resumed run keeps global pooling whatever the
    # configuration says now, as it keeps blocks and filters.
    t2 = Trainer(repo, cfg(), DEVICE)
    assert t2.net.global_pooling and state_equal(t2.net.state_dict(), t.net.state_dict())


def test_trainer_non_finite_publishes_nothing(tmp_path: Path, games, data: Arrays) -> None:
    repo = repo_at(tmp_path)
    t = Trainer(repo, cfg(replay_window=len(data)), DEVICE)
    names = feed(t, games[:2], "a")
    # Every row of the window gets a NaN result (decode never lets one in; this is the guard
    # behind it).
    bad = Arrays(data.boards, data.masks, data.probs, np.full(len(data), np.nan, np.float32))
    t.window.add(bad)
    before = snapshot(t.net, t.optimizer)
    pending = t.pending_examples
    with pytest.raises(NonFiniteError, match="loss is nan"):
        t.train_and_publish()
    assert repo.checkpoints() == [0] and t.checkpoint == 0
    assert [n for n, _ in t.pending] == names and t.pending_examples == pending
    assert t.examples_trained == 0
    assert state_equal(t.net.state_dict(), before[0])
    # (The learning rate was already set for checkpoint 1; the rest is as before.)
    assert state_equal(t.optimizer.state_dict()["state"], before[1]["state"])


def test_resume_window_keeps_newest(tmp_path: Path, games) -> None:
    repo = repo_at(tmp_path)
    t = Trainer(repo, cfg(), DEVICE)
    feed(t, games[:3], "a")
    t.train_and_publish()
    feed(t, games[3:], "b")
    t.train_and_publish()
    all_arrays = Arrays.concat([decode(list(g.examples)) for g in games])
    cap = len(all_arrays) - len(games[0].examples) - 5  # spans both checkpoints' archives
    t2 = Trainer(repo, cfg(replay_window=cap), DEVICE)
    assert len(t2.window) == cap
    for f in ("boards", "masks", "probs", "results", "scores"):
        np.testing.assert_array_equal(getattr(t2.window.data, f), getattr(all_arrays, f)[-cap:])


def test_trainer_add_rejects_invalid_game(tmp_path: Path, games) -> None:
    t = Trainer(repo_at(tmp_path), cfg(), DEVICE)
    bad = pb.AddTrainingExamplesRequest()
    bad.CopyFrom(games[0])
    bad.examples[3].result = 2.0
    with pytest.raises(InvalidExampleError, match="example 3"):
        t.add("bad", bad)
    assert t.pending == [] and t.pending_examples == 0 and len(t.window) == 0


def test_trainer_learning_rate_schedule(tmp_path: Path, games) -> None:
    c = cfg(learning_rate=3e-4, final_learning_rate=1e-4, lr_decay_checkpoints=200)
    assert c.lr_at(0) == pytest.approx(3e-4)
    assert c.lr_at(100) == pytest.approx(2e-4)
    assert c.lr_at(200) == pytest.approx(1e-4) and c.lr_at(5000) == pytest.approx(1e-4)
    t = Trainer(repo_at(tmp_path), c, DEVICE)
    feed(t, games[:2], "a")
    t.train_and_publish()
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(c.lr_at(1))


@pytest.mark.parametrize("kw", [dict(blocks=0), dict(batch_size=0), dict(replay_window=0),
                                dict(trigger_examples=0), dict(learning_rate=0.0),
                                dict(samples_per_example=0.0)])
def test_train_config_rejects(kw) -> None:
    with pytest.raises(ValueError, match=rf"^{next(iter(kw))} must be "):
        cfg(**kw)


def test_trainers_reproducible_from_seed(tmp_path: Path, games) -> None:
    def run(sub: str, seed: int) -> Trainer:
        t = Trainer(repo_at(tmp_path / sub), cfg(seed=seed), DEVICE)
        feed(t, games[:3], "a")
        t.train_and_publish()
        return t

    a, b, c = run("a", 0), run("b", 0), run("c", 1)
    assert state_equal(a.net.state_dict(), b.net.state_dict())
    assert state_equal(a.optimizer.state_dict(), b.optimizer.state_dict())
    assert a.last_losses["policy_loss"] == b.last_losses["policy_loss"]
    assert not state_equal(a.net.state_dict(), c.net.state_dict())


def test_read_verified_detects_corruption(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    Trainer(repo, cfg(), DEVICE)
    path = tmp_path / repo.key(0, MODEL_FILE)
    data = bytearray(path.read_bytes())
    assert repo.read_verified(0, MODEL_FILE) == bytes(data)
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="SHA-256 mismatch"):
        repo.read_verified(0, MODEL_FILE)
    # A trainer refuses to resume from it.
    with pytest.raises(StorageError, match="SHA-256 mismatch"):
        Trainer(repo, cfg(), DEVICE)


def test_checkpoint_without_meta_does_not_exist(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    repo.storage.write(repo.key(0, MODEL_FILE), b"half-written")
    assert repo.checkpoints() == [] and repo.latest() is None
    repo.publish(0, {"x.bin": b"x"}, {})
    repo.storage.write(repo.key(1, MODEL_FILE), b"half-written")
    assert repo.checkpoints() == [0]


def test_publish_refuses_existing_checkpoint(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    meta = repo.publish(3, {"a.bin": b"first", "sub/b.bin": b"bee"}, {"note": "one"})
    assert meta["sha256"] == {"a.bin": sha256(b"first"), "sub/b.bin": sha256(b"bee")}
    assert repo.meta(3)["note"] == "one" and repo.checkpoints() == [3]
    with pytest.raises(CheckpointExistsError, match="checkpoint 3 of unit exists"):
        repo.publish(3, {"a.bin": b"second"}, {"note": "two"})
    # The first checkpoint is untouched.
    assert repo.read_verified(3, "a.bin") == b"first"
    assert repo.meta(3)["note"] == "one"
    assert issubclass(CheckpointExistsError, StorageError)


def test_publish_race_loser_does_not_clobber_winner(tmp_path: Path, monkeypatch) -> None:
    repo = repo_at(tmp_path)
    real_exists = LocalStorage.exists
    # The loser checked for meta.json before the winner wrote it.
    monkeypatch.setattr(LocalStorage, "exists", lambda self, key: False)
    repo.publish(1, {"model.pt": b"winner"}, {})
    with pytest.raises(CheckpointExistsError,
                       match="checkpoint 1 of unit is being written by another writer"):
        repo.publish(1, {"model.pt": b"loser"}, {})
    monkeypatch.setattr(LocalStorage, "exists", real_exists)
    assert repo.read_verified(1, "model.pt") == b"winner"


def test_a_dead_writers_claim_is_cleared_by_the_next_trainer(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    repo.publish(0, {"model.pt": b"zero"}, {})
    repo.storage.write(repo.key(1, ".claim"), b"dead writer", if_absent=True)
    with pytest.raises(CheckpointExistsError, match="another writer"):
        repo.publish(1, {"model.pt": b"one"}, {})
    repo.clear_stale_claim(1)
    repo.publish(1, {"model.pt": b"one"}, {})
    assert repo.latest() == 1
    repo.clear_stale_claim(1)  # a published checkpoint keeps its claim
    assert repo.storage.exists(repo.key(1, ".claim"))


def test_storage_conditional_write_and_listing(tmp_path: Path) -> None:
    s = LocalStorage(tmp_path)
    s.write("a/b/c.txt", b"1")
    s.write("a/b/c.txt", b"2")
    assert s.read("a/b/c.txt") == b"2" and s.exists("a/b/c.txt")
    s.write("a/b/d.txt", b"x", if_absent=True)
    with pytest.raises(CheckpointExistsError, match=r"a/b/d\.txt exists already"):
        s.write("a/b/d.txt", b"y", if_absent=True)
    assert s.read("a/b/d.txt") == b"x"
    assert s.list("a/b") == ["c.txt", "d.txt"] == s.list("a/b/")  # no temp files
    assert s.list("nothing/here") == []
    with pytest.raises(FileNotFoundError, match="missing"):
        s.read("missing")
    assert isinstance(open_storage(tmp_path), LocalStorage)  # gs://: tests/test_storage.py


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../x", "a/..", "..", "a/./../..",
                                 "x/../../../etc/passwd"])
def test_local_storage_rejects_escaping_keys(tmp_path: Path, key: str) -> None:
    s = LocalStorage(tmp_path / "root")
    for op in (lambda: s.read(key), lambda: s.exists(key), lambda: s.write(key, b"x"),
               lambda: s.list(key)):
        with pytest.raises(ValueError, match="invalid storage key"):
            op()
    assert not (tmp_path / "x").exists() and not (tmp_path / "root").exists()


@pytest.mark.parametrize("name", [
    "../x", "a/b", "", "..", ".", ".hidden", "-dash", "a b", "a\\b", "x" * 65, "a..b", "name/",
    "ünï", "abc\n"])
def test_validate_model_name_rejects(name: str) -> None:
    with pytest.raises(ValueError, match="invalid model name"):
        validate_model_name(name)
    with pytest.raises(ValueError, match="invalid model name"):
        CheckpointRepo(LocalStorage("/nonexistent"), name)


@pytest.mark.parametrize("name", ["local", "a", "learn1", "flagz_v2.1-big", "X" * 64])
def test_validate_model_name_accepts(name: str) -> None:
    assert validate_model_name(name) == name


def test_meta_json_is_plain_json(tmp_path: Path) -> None:
    repo = repo_at(tmp_path)
    Trainer(repo, cfg(), DEVICE)
    meta = json.loads((tmp_path / repo.key(0, META_FILE)).read_text())
    assert meta["params"] == {"blocks": 2, "filters": 16}
    assert meta["config"]["seed"] == 0


def test_encode_array_is_np_save() -> None:
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    import io
    np.testing.assert_array_equal(np.load(io.BytesIO(encode_array(a))), a)
