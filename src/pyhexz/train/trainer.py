"""Training: learn from a replay window of the newest self-play examples.

The trainer is one loop used two ways (ARCHITECTURE.md): inside the local `train` job and
behind the training server. It owns a model, its Adam optimizer and a replay window; new games
are added with `add`, and once `trigger_examples` new examples have arrived,
`train_and_publish` trains and writes the next checkpoint to the repository.

Loss = cross-entropy of the policy against the search's visit distribution + MSE of the value
against the game result (both from the mover's view), + `score_weight` times the Huber loss of
the score head against the final score difference (in SCORE_SCALE units; examples without a
score, recorded before scores were, add nothing). About `samples_per_example` samples are
trained per new example (4, as KataGo and hexz), each under a random mirror symmetry of the
board (`pyhexz.game.symmetry`), which gives the small replay windows of one machine four times the
positions. Samples come from the newest `TrainConfig.window_at` examples of the window, which
can grow with the run. A loss, gradient or weight that is not finite aborts the run: the model
and optimizer go back to their state before it and nothing is published.
"""

from __future__ import annotations

import copy
import io
import logging
import math
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from pyhexz import hexz_pb2 as pb
from pyhexz import nn as modellib
from pyhexz.game import symmetry
from pyhexz.game.examples import Arrays, decode
from pyhexz.infra.storage import MODEL_FILE, ONNX_FILE, SCRIPT_FILE, CheckpointRepo
from pyhexz.nn.network import SCORE_SCALE
from pyhexz.train.config import TrainConfig

log = logging.getLogger(__name__)


class NonFiniteError(RuntimeError):
    """A training run produced a non-finite loss, gradient or weight."""


class ReplayWindow:
    """The newest `capacity` examples, as preallocated arrays used as a ring."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.data = Arrays.empty(capacity)
        self.size = 0
        self.next = 0

    def __len__(self) -> int:
        return self.size

    def add(self, a: Arrays) -> None:
        n = len(a)
        if n > self.capacity:
            a = a[-self.capacity:]
            n = self.capacity
        idx = (self.next + np.arange(n)) % self.capacity
        for f in fields(Arrays):
            getattr(self.data, f.name)[idx] = getattr(a, f.name)
        self.next = (self.next + n) % self.capacity
        self.size = min(self.capacity, self.size + n)

    def sample(self, n: int, rng: np.random.Generator, newest: int | None = None) -> Arrays:
        """n examples drawn uniformly, with replacement, from the newest `newest` (None: all)."""
        k = self.size if newest is None else max(1, min(newest, self.size))
        age = rng.integers(0, k, size=n)   # 0: the newest example
        return self.data[(self.next - 1 - age) % self.capacity]


class Losses(NamedTuple):
    policy: torch.Tensor   # cross-entropy against the visit distribution
    value: torch.Tensor    # MSE against the result
    score: torch.Tensor    # Huber against the score difference; 0 when not asked for


def losses(net: modellib.HexzNet, batch: Arrays, device: torch.device,
           score: bool = False) -> Losses:
    """The losses of a batch; `score`: the score head's too."""
    boards = torch.from_numpy(batch.boards).to(device)
    masks = torch.from_numpy(batch.masks).to(device)
    target_p = torch.from_numpy(batch.probs.reshape(len(batch), -1)).to(device)
    target_v = torch.from_numpy(batch.results).to(device)
    if score:
        logits, value, predicted = net.forward_with_score(boards, masks)
        score_loss = _score_loss(predicted.squeeze(1), torch.from_numpy(batch.scores).to(device))
    else:
        logits, value = net(boards, masks)
        score_loss = torch.zeros((), device=device)
    # Illegal moves carry -1e32 logits and zero targets; their product must be exactly 0.
    logp = F.log_softmax(logits, dim=1)
    masked_logp = torch.where(target_p > 0, logp, torch.zeros_like(logp))
    policy_loss = -(target_p * masked_logp).sum(1).mean()
    value_loss = F.mse_loss(value.squeeze(1), target_v)
    return Losses(policy_loss, value_loss, score_loss)


def _score_loss(predicted: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """Huber loss of the score head over the examples that have a score (NaN: none), 0 if
    none has. Huber rather than MSE: a rare lopsided game must not dominate the gradient."""
    known = ~torch.isnan(scores)
    if not known.any():
        return predicted.new_zeros(())   # the mean of nothing would be NaN
    return F.huber_loss(predicted[known], scores[known] / SCORE_SCALE)


def train_steps(net: modellib.HexzNet, optimizer: torch.optim.Optimizer, window: ReplayWindow,
                num_samples: int, batch_size: int, rng: np.random.Generator,
                device: torch.device, augment: bool = False, score_weight: float = 0.0,
                newest: int | None = None) -> dict:
    """Trains on `num_samples` samples drawn from the newest `newest` examples of the window
    (None: all); returns the mean losses. `score_weight` > 0 trains the score head too.

    Raises NonFiniteError (and leaves net and optimizer as they were before) on a non-finite
    loss, gradient or weight.
    """
    saved = (copy.deepcopy(net.state_dict()), copy.deepcopy(optimizer.state_dict()))
    net.train()
    steps = max(1, math.ceil(num_samples / batch_size))
    sums = np.zeros(3)
    try:
        for _ in range(steps):
            batch = window.sample(batch_size, rng, newest)
            if augment:
                batch = symmetry.augment(batch, rng)
            p_loss, v_loss, s_loss = losses(net, batch, device, score=score_weight > 0)
            loss = p_loss + v_loss + score_weight * s_loss
            if not torch.isfinite(loss):
                raise NonFiniteError(f"loss is {loss.item()}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(net.parameters(), float("inf"))
            if not torch.isfinite(grad_norm):
                raise NonFiniteError(f"gradient norm is {grad_norm.item()}")
            optimizer.step()
            sums += (p_loss.item(), v_loss.item(), s_loss.item())
        bad = [n for n, p in net.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise NonFiniteError(f"non-finite weights in {', '.join(bad[:5])}")
    except BaseException:
        # Whatever went wrong (non-finite values, an overflow inside the optimizer, Ctrl-C),
        # a half-applied run must not survive.
        net.load_state_dict(saved[0])
        optimizer.load_state_dict(saved[1])
        raise
    finally:
        net.eval()
    out = {"policy_loss": sums[0] / steps, "value_loss": sums[1] / steps, "steps": steps,
           "samples": steps * batch_size}
    if score_weight > 0:
        out["score_loss"] = sums[2] / steps
    return out


def examples_archive(requests: list[tuple[str, pb.AddTrainingExamplesRequest]]) -> bytes:
    """A zip of (name, AddTrainingExamplesRequest) entries, the examples a checkpoint saw."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, req in requests:
            z.writestr(name, req.SerializeToString())
    return buf.getvalue()


def read_examples_archive(data: bytes) -> list[tuple[str, pb.AddTrainingExamplesRequest]]:
    out = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for name in z.namelist():
            req = pb.AddTrainingExamplesRequest()
            req.ParseFromString(z.read(name))
            out.append((name, req))
    return out


# Called after a checkpoint is in storage with (n, its files by name, its meta.json contents),
# e.g. to copy the model to Redis.
PublishHook = Callable[[int, dict, dict], None]


@dataclass
class InitModel:
    """What a new run starts from instead of random weights (`pyhexz train --init`): a
    checkpoint's network, and its optimizer state when it has one."""

    checkpoint: modellib.Checkpoint
    source: str     # where it came from, for checkpoint 0's meta.json
    sha256: str


class Trainer:
    """Model + optimizer + replay window of one model in a checkpoint repository.

    A repository without checkpoints gets checkpoint 0: a new network of the configured
    size, or `init`'s (whose size then wins); `created_meta` goes into its meta.json. A
    repository with checkpoints resumes the newest, and `init` plays no part.
    """

    def __init__(self, repo: CheckpointRepo, config: TrainConfig | None = None,
                 device: str = "cpu", on_published: PublishHook | None = None,
                 init: InitModel | None = None, created_meta: dict | None = None) -> None:
        if config is None:
            config = TrainConfig()
        self.repo = repo
        self.on_published = on_published
        self.config = config
        self.device = torch.device(device)
        self.rng = np.random.default_rng(config.seed)
        torch.manual_seed(config.seed)
        self.window = ReplayWindow(config.replay_window)
        self.pending: list[tuple[str, pb.AddTrainingExamplesRequest]] = []
        self.pending_examples = 0
        self.examples_trained = 0
        self.last_losses: dict = {}
        latest = repo.latest()
        repo.clear_stale_claim(0 if latest is None else latest + 1)
        if latest is None:
            meta = dict(created_meta or {})
            if init is not None:
                params = init.checkpoint.params
                self.config = config = replace(
                    config, blocks=params["blocks"], filters=params["filters"],
                    global_pooling=bool(params.get("global_pooling", False)))
                self.net = init.checkpoint.model.to(self.device)
                meta["init"] = {"source": init.source, "sha256": init.sha256,
                                "optimizer_state": init.checkpoint.optimizer_state is not None}
            else:
                self.net = modellib.HexzNet(config.blocks, config.filters,
                                            config.global_pooling).to(self.device)
            self.optimizer = self._new_optimizer()
            if init is not None and init.checkpoint.optimizer_state:
                self.optimizer.load_state_dict(init.checkpoint.optimizer_state)
            self.checkpoint = -1
            self._publish(0, [], {}, meta)
            log.info("created model=%s checkpoint=0 blocks=%d filters=%d global_pooling=%s "
                     "init=%s", repo.name, config.blocks, config.filters, config.global_pooling,
                     init.source if init else "random")
        else:
            if init is not None:
                log.info("init ignored model=%s: it has checkpoints, resuming checkpoint %d",
                         repo.name, latest)
            self._load(latest)

    def _new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=self.config.learning_rate,
                                 weight_decay=self.config.weight_decay)

    def _load(self, n: int) -> None:
        with self.repo.verified_copy(n, MODEL_FILE) as path:
            ckpt = modellib.load_checkpoint(path, map_location=self.device)
        self.net = ckpt.model.to(self.device)
        self.optimizer = self._new_optimizer()
        if ckpt.optimizer_state:
            self.optimizer.load_state_dict(
                _with_fresh_params(ckpt.optimizer_state, self.net, ckpt.fresh))
        if ckpt.fresh:
            log.info("model=%s checkpoint=%d has no %s: starting it fresh", self.repo.name, n,
                     ", ".join(sorted({k.split(".", 1)[0] for k in ckpt.fresh})))
        self.checkpoint = n
        self.examples_trained = int(self.repo.meta(n).get("examples_trained", 0))
        # Refill the replay window from the newest checkpoints' example archives.
        parts: list[Arrays] = []
        have = 0
        for m in reversed(self.repo.checkpoints()):
            for name in sorted(self.repo.example_archives(m), reverse=True):
                for _, req in reversed(read_examples_archive(
                        self.repo.storage.read(self.repo.key(m, f"examples/{name}")))):
                    parts.append(decode(list(req.examples)))
                    have += len(parts[-1])
                if have >= self.config.replay_window:
                    break
            if have >= self.config.replay_window:
                break
        self.window.add(Arrays.concat(parts[::-1]))
        log.info("resumed model=%s checkpoint=%d window=%d", self.repo.name, n, len(self.window))

    def model_key(self) -> pb.ModelKey:
        return pb.ModelKey(name=self.repo.name, checkpoint=self.checkpoint)

    def add(self, name: str, request: pb.AddTrainingExamplesRequest,
            arrays: Arrays | None = None) -> int:
        """Adds a game (validated); `name` identifies it in the checkpoint's archive.

        `arrays`: the request's examples already decoded (the server validated them).
        """
        if arrays is None:
            arrays = decode(list(request.examples))
        self.window.add(arrays)
        self.pending.append((name, request))
        self.pending_examples += len(arrays)
        return len(arrays)

    def ready(self) -> bool:
        return self.pending_examples >= self.config.trigger_examples

    def train_and_publish(self, meta: dict | None = None) -> dict:
        """Trains on the window and publishes the next checkpoint with the pending games.

        `meta`: more entries for the checkpoint's meta.json (the server records its WAL position).
        """
        cfg = self.config
        for g in self.optimizer.param_groups:
            g["lr"] = cfg.lr_at(self.checkpoint + 1)
        num_samples = int(cfg.samples_per_example * self.pending_examples)
        newest = cfg.window_at(self.examples_trained + self.pending_examples)
        t0 = time.perf_counter()
        stats = train_steps(self.net, self.optimizer, self.window, num_samples, cfg.batch_size,
                            self.rng, self.device, augment=cfg.augment,
                            score_weight=cfg.score_weight, newest=newest)
        stats["seconds"] = time.perf_counter() - t0
        stats["window"] = min(newest, len(self.window))
        before, n = self.examples_trained, self.checkpoint + 1
        self.examples_trained += self.pending_examples
        try:
            self._publish(n, self.pending, stats, meta)
        except BaseException:
            if self.checkpoint != n:  # not published: a retry must not count these twice
                self.examples_trained = before
            raise
        self.last_losses = stats
        self.pending, self.pending_examples = [], 0
        return stats

    def _publish(self, n: int, games: list, stats: dict, extra: dict | None = None) -> None:
        with tempfile.TemporaryDirectory() as d:
            mpath, spath = Path(d) / MODEL_FILE, Path(d) / SCRIPT_FILE
            modellib.save_checkpoint(mpath, self.net, self.optimizer, model_name=self.repo.name,
                                     checkpoint=n)
            modellib.export_torchscript(self.net, spath)
            files = {MODEL_FILE: mpath.read_bytes(), SCRIPT_FILE: spath.read_bytes()}
        onnx = _onnx_bytes(self.net)
        if onnx is not None:
            files[ONNX_FILE] = onnx
        if games:
            files[f"examples/{n:06d}.zip"] = examples_archive(games)
        meta = self.repo.publish(n, files, dict(extra or {}, **{
            "examples_trained": self.examples_trained, "games": len(games),
            "new_examples": sum(len(r.examples) for _, r in games),
            "params": self.net.params,
            "config": asdict(self.config), "stats": stats,
            "game_names": [name for name, _ in games],
        }))
        self.checkpoint = n
        if self.on_published is not None:
            self.on_published(n, files, meta)


def _onnx_bytes(net: torch.nn.Module) -> bytes | None:
    """model.onnx for a checkpoint (workers and the CPU player run it with onnxruntime),
    or None with one log line where it cannot be made (no `onnx` extra): the checkpoint is
    published without it and they convert the network themselves or run torch."""
    try:
        from pyhexz.nn.onnxfile import export_onnx
        return export_onnx(net)
    except Exception as e:   # noqa: BLE001 - model.onnx is an optimisation, never a failure
        log.warning("checkpoint without %s: %s", ONNX_FILE, f"{type(e).__name__}: {e}"[:200])
        return None


def _with_fresh_params(state: dict, net: torch.nn.Module, fresh: list[str]) -> dict:
    """The optimizer state of a checkpoint that lacked some of net's parameters (a head newer
    than the file, `Checkpoint.fresh`), made to fit net: those come last in net.parameters()
    (network.OPTIONAL_HEADS), so they are the last indices of the one parameter group, and
    they have no state yet, which Adam starts at their first step. The rest keeps its moments."""
    if not set(fresh) & {name for name, _ in net.named_parameters()}:
        return state
    group = dict(state["param_groups"][0], params=list(range(len(list(net.parameters())))))
    return dict(state, param_groups=[group])


def trained_game_names(repo: CheckpointRepo, n: int | None) -> set[str]:
    """Names of the games checkpoint n was trained from (to drop them from a spool)."""
    if n is None:
        return set()
    return set(repo.meta(n).get("game_names", []))
