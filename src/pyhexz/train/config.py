"""The settings of training: the trainer's (TrainConfig) and the one-machine job's (LocalConfig).

Apart from the trainer and the job, which import torch, so that the command line can build its
flags from them (pyhexz.infra.config) without loading torch.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from pyhexz.infra.config import above, at_least, backend_setting, check_settings, setting
from pyhexz.search.driver import SearchConfig, TreeConfig


def count_or_none(text: str) -> int | None:
    """A count, or 'none' (None): a setting that may be switched off by flag or variable."""
    return None if text == "none" else int(text)


count_or_none.__name__ = "count or 'none'"   # what a bad value's message calls it


def usable_cores() -> int:
    """The cores this process may run on (its affinity: `taskset`, a container's cpuset), not
    the machine's: one self-play process per usable core."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


@dataclass
class TrainConfig:
    blocks: int = setting(5, "residual blocks (new model)", check=at_least(1))
    filters: int = setting(64, "filters per conv (new model)", check=at_least(1))
    batch_size: int = setting(256, "training batch size", check=at_least(1))
    learning_rate: float = setting(3e-4, "initial Adam rate (falls linearly to 1e-4 over 200 "
                                   "checkpoints)", check=above(0))
    final_learning_rate: float = 1e-4
    lr_decay_checkpoints: int = 200   # checkpoints over which the rate falls linearly
    weight_decay: float = 1e-4
    samples_per_example: float = setting(4.0, "samples trained per new example", check=above(0))
    replay_window: int = setting(100_000, "newest examples trained on", check=at_least(1))
    trigger_examples: int = setting(4096, "new examples that trigger a training run",
                                    flag="--minibatch-size", check=at_least(1))
    augment: bool = setting(True, "train on examples as played, without random board mirror "
                            "images")   # the flag is --no-augment
    seed: int = setting(0, "training seed")
    # Issue 15's training changes, each off by default until the ablation has measured it.
    score_weight: float = setting(
        0.0, "weight of the score head's loss: the game's final score difference, learned "
        "beside the value (0: the score head is not trained)", check=at_least(0))
    replay_window_start: int | None = setting(
        None, "grow the replay window with the run (KataGo): all examples up to this many, "
        "then about examples^0.75, at most --replay-window ('none': always --replay-window)",
        parse=count_or_none, check=at_least(1))
    global_pooling: bool = setting(False, "global pooling bias in some residual blocks "
                                   "(KataGo) (new model)")

    def __post_init__(self) -> None:
        check_settings(self)

    def lr_at(self, checkpoint: int) -> float:
        f = min(1.0, checkpoint / max(1, self.lr_decay_checkpoints))
        return self.learning_rate + f * (self.final_learning_rate - self.learning_rate)

    def window_at(self, examples: int) -> int:
        """The replay window's size once `examples` examples have arrived in all.

        Fixed at replay_window, or, with replay_window_start (c), KataGo's growing window:
        every example while there are at most c, then c * (1 + beta * ((n / c)^alpha - 1) /
        alpha) with alpha 0.75 and beta 0.4, which grows ever slower, capped at replay_window.
        Early examples come from a weak network and are soon worth little; a window that is
        small at first and grows with the run drops them sooner.
        """
        c = self.replay_window_start
        if c is None:
            return self.replay_window
        if examples <= c:
            return min(examples, self.replay_window)
        alpha, beta = 0.75, 0.4
        grown = c * (1 + beta * ((examples / c) ** alpha - 1) / alpha)
        return min(int(grown), self.replay_window)


@dataclass
class LocalConfig:
    """The settings of `pyhexz train` (its flags and HEXZ_* variables, infra/config.py)."""

    dir: Path = setting(Path("runs/local"), "where checkpoints and games live")
    # The settings of the best runs on two cores (BENCHMARKS.md, learn3 and flagz-v1): a 3 x 32
    # network, 100 simulations a move, greedy after ply 20, (num_workers) one self-play process
    # a core, and 2 samples trained per new example (the 25-minute ablation: 1 scored 0.73
    # against 8's 0.49; flagz-v1, at 2, kept climbing to 0.92 against rollout:2000). And issue
    # 15's changes, all on (KataGo's settings): at equal time on two cores they scored 0.68
    # against rollout:800 after 30 minutes where the same run without them scored 0.38
    # (BENCHMARKS.md, "Issue 15: the KataGo changes at equal time"). Self-play only: the
    # players of arena and the CPU server keep their own defaults.
    search: SearchConfig = field(default_factory=lambda: SearchConfig(
        runs_per_move=100, sample_plies=20, full_search_fraction=0.25, forced_playouts=2.0,
        tree=TreeConfig(fpu_reduction=0.2, fpu_reduction_root=0.0, eval_cache=8192,
                        solver_moves=12)))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        blocks=3, filters=32, trigger_examples=4096, replay_window=100_000,
        samples_per_example=2.0, learning_rate=1e-3, score_weight=0.5,
        replay_window_start=20_000, global_pooling=True))
    name: str = setting("local", "model name (a plain name)", flag="--model-name")
    init: str | None = setting(
        None, "start a new run from this model instead of random weights: 'default' (the "
        "model that ships with pyhexz) or a pyhexz checkpoint (its optimizer state too, where "
        "it has one); a DIR with checkpoints resumes and ignores it")
    num_workers: int = setting(usable_cores(), "self-play processes (one per core, as "
                               "in the best two-core run, BENCHMARKS.md learn3)",
                               check=at_least(1))
    parallel_games: int = setting(32, "games each process plays at once (the network's batch "
                                  "size)", check=at_least(1))
    start_games: int = setting(8, "games each process plays at once at first; one more each "
                               "time a game ends, up to --parallel-games (so that the first "
                               "games end within a minute or two)", check=at_least(1))
    device: str = setting("cpu", "torch device: cpu, cuda, cuda:1, mps")
    backend: str = backend_setting()
    minutes: float | None = setting(None, "stop after this many minutes", check=above(0))
    checkpoints: int | None = setting(None, "stop after this many new checkpoints",
                                         check=at_least(1))
    progress_seconds: float = 15.0

    def __post_init__(self) -> None:
        check_settings(self)
