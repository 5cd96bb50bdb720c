"""Players: things that choose moves, for matches (arena) and the CPU player service.

A player chooses moves for many games at once (`choose`), so that a neural player can put
the leaves of all its games into one network batch. Players are named by a spec string:

    random              uniformly random legal moves
    rollout:RUNS        UCT search with random playouts (no network), RUNS simulations a move
    PATH[:RUNS]         neural MCTS with a pyhexz checkpoint, a hexz TorchScript file or a
                        checkpoint directory (the newest checkpoint), RUNS simulations (200)
    default[:RUNS]      the same with the model that ships with pyhexz (nn/shipped.py)
    rollout@SECONDS     a think time instead of a number of simulations: the player searches
    MODEL@SECONDS       each move for SECONDS on one core, as the CPU player service does
                        (search/timed.py; MODEL is a PATH or default; "rollout@0.5s": the
                        `s` is optional): matches at equal think time
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from pyhexz.game.board import Board, policy_index, policy_move_tuple
from pyhexz.search.driver import TreeConfig, new_buffers, search
from pyhexz.search.mcts import MCTS

if TYPE_CHECKING:
    from pyhexz.infra.storage import CheckpointRepo

log = logging.getLogger(__name__)

Move = tuple[int, int, int]


class Player(Protocol):
    name: str

    def choose(self, boards: list[Board]) -> list[Move]:
        """One move for each of the given (running) games."""


class RandomPlayer:
    def __init__(self, seed: int | None = None) -> None:
        self.name = "random"
        self.rng = random.Random(seed)

    def choose(self, boards: list[Board]) -> list[Move]:
        return [self.rng.choice(b.legal_moves()) for b in boards]


class RolloutPlayer:
    """Rollout MCTS: the baseline opponent and the fallback CPU player."""

    def __init__(self, runs: int = 800, uct_c: float = 1.0, seed: int | None = None) -> None:
        self.name = f"rollout:{runs}"
        self.runs = runs
        self.mcts = MCTS(1, c_puct=uct_c, seed=seed)

    def choose(self, boards: list[Board]) -> list[Move]:
        out = []
        for b in boards:
            self.mcts.set_root(0, b)
            self.mcts.run_rollouts(0, self.runs)
            out.append(policy_move_tuple(self.mcts.best_move(0)))
        return out


# A budget player's cache holds about this many searches' worth of positions (at most
# runs + 1 each): enough that what the search of a game's last move evaluated below the
# position now on the board is still there, bounded for the up to 64 games it plays at once.
KEPT_SEARCHES = 4


class NeuralPlayer:
    """Neural MCTS playing the most visited move, all games searched in one forest, with the
    tree options of `tree` (FPU reduction, evaluation cache, endgame solver).

    With an evaluation cache, each tree keeps its cache from one call of `choose` to the next
    (`keep_cache`): the i-th board of a call is searched in tree i, and a caller that hands a
    player its games in a stable order (the arena does) gets the positions that the last
    move's search evaluated below the new one without a network call. The moves stay those of
    a search without the cache (a hit is the same position, evaluated by the same network);
    a board that lands in another game's tree only finds no hits there."""

    def __init__(self, predictor, runs: int = 200, name: str = "neural", c_puct: float = 1.5,
                 max_games: int = 64, tree: TreeConfig | None = None,
                 keep_cache: bool = True) -> None:
        self.name = name
        self.runs = runs
        self.predictor = predictor
        self.keep_cache = keep_cache
        options = (tree or TreeConfig()).mcts_options()
        # A search evaluates at most runs + 1 positions: a cache emptied every move needs no
        # more room than that, a kept one a few searches' worth (memory, for every game).
        per_move = runs + 1
        options["eval_cache"] = min(options["eval_cache"],
                                    KEPT_SEARCHES * per_move if keep_cache else per_move)
        self.mcts = MCTS(max_games, c_puct=c_puct, **options)
        self.planes, self.masks = new_buffers(self.mcts)

    def choose(self, boards: list[Board]) -> list[Move]:
        out: list[Move] = []
        step = self.mcts.num_trees
        for i in range(0, len(boards), step):
            chunk = boards[i:i + step]
            for t, b in enumerate(chunk):
                self.mcts.set_root(t, b, keep_cache=self.keep_cache)
                self.mcts.start(t, self.runs)
            search(self.mcts, self.predictor, self.planes, self.masks)
            out += [policy_move_tuple(self.mcts.best_move(t)) for t in range(len(chunk))]
        return out


def resolve_model_path(path: str | os.PathLike) -> Path:
    """A model file from a file path, a checkpoint folder (its model.pt) or a model directory
    (its newest checkpoint); "default" is the shipped model's checkpoint, checked against its
    SHA-256 (nn/shipped.py)."""
    if os.fspath(path) == "default":
        from pyhexz.nn.shipped import default_model_file
        return default_model_file()
    p = Path(path)
    if p.is_file():
        return p
    if (p / "model.pt").is_file():
        return p / "model.pt"
    ckpts = p / "checkpoints" if (p / "checkpoints").is_dir() else p
    dirs = [d for d in ckpts.iterdir() if d.name.isdigit() and (d / "model.pt").exists()] \
        if ckpts.is_dir() else []
    # pyhexz publishes a checkpoint by writing meta.json last: ignore ones still being written.
    # Directories from the hexz project have no meta.json at all; take those as they are.
    published = [d for d in dirs if (d / "meta.json").exists()]
    nums = sorted((int(d.name) for d in (published or dirs)), reverse=True)
    if not nums:
        raise FileNotFoundError(f"{path}: no model file and no checkpoints/N/model.pt below it")
    return ckpts / str(nums[0]) / "model.pt"


def published_checkpoint(file: Path) -> tuple[CheckpointRepo, int] | None:
    """The repository and number of a model file inside a published checkpoint
    (`ROOT/models/flagz/{name}/checkpoints/{N}/FILE` with meta.json beside it), else None."""
    from pyhexz.infra.storage import META_FILE, CheckpointRepo, open_storage
    file = Path(file).resolve()
    up = file.parents
    if (len(up) < 6 or not (file.parent / META_FILE).exists() or not file.parent.name.isdigit()
            or up[1].name != "checkpoints" or up[3].name != "flagz" or up[4].name != "models"):
        return None
    return CheckpointRepo(open_storage(up[5]), up[2].name), int(file.parent.name)


def model_key_for_path(path: str | os.PathLike) -> tuple[str, int]:
    """(model name, checkpoint) of a model file: `.../{name}/checkpoints/{N}/model.pt` names
    itself; any other file goes by its stem, as checkpoint 0."""
    p = Path(path)
    if p.parent.name.isdigit() and p.parent.parent.name == "checkpoints":
        return p.parents[2].name, int(p.parent.name)
    return p.stem, 0


def load_predictor(repo: CheckpointRepo, n: int, device: str = "cpu", backend: str = "torch"):
    """A Predictor for checkpoint n of a repository, its file checked against its SHA-256;
    for a backend other than torch, with the checkpoint's model.onnx when it has one."""
    from pyhexz.infra.storage import MODEL_FILE, ONNX_FILE, StorageError
    from pyhexz.nn import Predictor, load_model
    with repo.verified_copy(n, MODEL_FILE) as path:
        module = load_model(path, device)
    onnx = None
    if backend != "torch" and ONNX_FILE in repo.meta(n).get("sha256", {}):
        try:
            onnx = repo.read_verified(n, ONNX_FILE)
        except (StorageError, OSError) as e:
            log.warning("onnx file ignored checkpoint=%s:%d reason=%r", repo.name, n, str(e))
    return Predictor(module, device, backend, onnx)


def _think_time(spec: str) -> tuple[str, float] | None:
    """(player, seconds) of a timed spec `PLAYER@SECONDS[s]`, None for an untimed one."""
    player, at, think = spec.rpartition("@")
    if not at:
        return None
    try:
        seconds = float(think.removesuffix("s"))
    except ValueError:
        if player != "rollout":
            return None   # an '@' in a path
        seconds = float("nan")
    if not seconds > 0:
        raise ValueError(f"player {spec!r}: the think time must be > 0 seconds")
    return player, seconds


def make_player(spec: str, *, device: str = "cpu", seed: int | None = None,
                max_games: int = 64, tree: TreeConfig | None = None,
                backend: str = "torch") -> Player:
    """A player from its spec string (see the module docstring); a neural one, timed or not,
    searches with the options of `tree` (when None: as the CPU player serves,
    `served_tree_config`)."""
    if spec == "random":
        return RandomPlayer(seed)
    from pyhexz.search.timed import served_tree_config
    tree = served_tree_config() if tree is None else tree
    timed = _think_time(spec)
    if timed is not None:
        from pyhexz.search.timed import TimedPlayer
        base, seconds = timed
        evaluate = None
        if base != "rollout":
            from pyhexz.nn import Predictor
            evaluate = Predictor.from_path(resolve_model_path(base), device, backend)
        # TimedSearch gives `tree` to neural MCTS only; rollout MCTS has none of its options.
        return TimedPlayer(seconds, evaluate, name=spec, seed=seed, tree=tree)
    if spec.startswith("rollout"):
        _, _, runs = spec.partition(":")
        return RolloutPlayer(int(runs or 800), seed=seed)
    path, sep, runs = spec.rpartition(":")
    if not sep or not runs.isdigit():
        path, runs = spec, "200"
    from pyhexz.nn import Predictor
    predictor = Predictor.from_path(resolve_model_path(path), device, backend)
    return NeuralPlayer(predictor, int(runs), name=spec, max_games=max_games, tree=tree)


__all__ = ["Player", "RandomPlayer", "RolloutPlayer", "NeuralPlayer", "make_player",
           "policy_index", "resolve_model_path", "load_predictor", "model_key_for_path",
           "published_checkpoint"]
