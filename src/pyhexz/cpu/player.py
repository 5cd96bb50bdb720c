"""The CPU player behind the HTTP service: which model plays, and one search thread for all.

Model: a pyhexz checkpoint, a hexz TorchScript file, a checkpoints directory (its newest
checkpoint) or a storage URL / storage directory (the newest published checkpoint of the model,
checked against its SHA-256). With a Redis URL it follows a training run: `LiveModel`
(nn/follow.py, shared with the worker) watches the model bus (announcements, plus the pointer
on every (re)connect and periodically) and swaps in each new checkpoint; bytes that fail their
checksum or do not load are never run and the old model keeps playing. Without a model path it
plays the model that ships with pyhexz (nn/shipped.py), checked against its SHA-256; rollout
MCTS when asked for, when none ships or when the shipped one fails its check.

Search: requests are searched in one thread by `TimedSearch`, interleaved in rounds. Why one
interleaving thread rather than a thread per request behind a semaphore: the compiled rollout
search holds the GIL for a whole call, so request threads would not run in parallel anyway but
take turns in slices the GIL decides; interleaving makes the turns equal by construction, and
in neural mode it puts all requests' leaves into one network batch per round, which costs less
per leaf than a batch per request. A request waits for a free search slot when all are busy;
waiting counts against its think time. More cores are used by more processes (gunicorn
--workers, Cloud Run instances), each with its own model and search thread.
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

from pyhexz import hexz_pb2 as pb
from pyhexz.game.board import Board
from pyhexz.infra.storage import MODEL_FILE, ONNX_FILE, CheckpointRepo, open_storage, sha256
from pyhexz.nn import ModelLoadError, Predictor, load_model
from pyhexz.nn.follow import LiveModel, LoadedModel, TokenRefused
from pyhexz.nn.shipped import DEFAULT_SPEC, NoShippedModel, ShippedModelError, default_model
from pyhexz.search.driver import TreeConfig
from pyhexz.search.players import (
    load_predictor,
    model_key_for_path,
    published_checkpoint,
    resolve_model_path,
)
from pyhexz.search.timed import SearchResult, TimedSearch, served_tree_config

log = logging.getLogger(__name__)

_MODELS_DIR = "models/flagz"


class NoModelYet(FileNotFoundError):
    """The model source exists but holds no published checkpoint yet."""


def _split_storage_url(url: str, name: str | None) -> tuple[str, str]:
    """(storage root, model name) from `gs://bucket[/prefix]` plus a name, or from a URL that
    names the model itself: `gs://bucket[/prefix]/models/flagz/{name}`."""
    root, sep, rest = url.rstrip("/").partition("/" + _MODELS_DIR + "/")
    if sep:
        return root, rest.split("/")[0]
    if not name:
        raise ValueError(f"model path {url!r} is a storage root: set the model name "
                         f"(HEXZ_MODEL_NAME) or give .../{_MODELS_DIR}/NAME")
    return root, name


def _load_from_repo(repo: CheckpointRepo, device: str, n: int | None = None,
                    backend: str = "torch") -> LoadedModel:
    n = repo.latest() if n is None else n
    if n is None:
        raise NoModelYet(f"{repo.storage}: model {repo.name} has no published checkpoint yet")
    predictor = load_predictor(repo, n, device, backend)
    digest = repo.meta(n)["sha256"].get(MODEL_FILE, "")
    return LoadedModel(predictor, pb.ModelKey(name=repo.name, checkpoint=n), digest,
                       f"{repo.storage} {repo.key(n, MODEL_FILE)}")


def load_served_model(path: str, name: str | None = None, device: str = "cpu",
                      shipped_root: Path | None = None, backend: str = "torch") -> LoadedModel:
    """The model HEXZ_MODEL_PATH names (see the module docstring); the newest where there are
    several. Raises NoModelYet for a source without checkpoints, FileNotFoundError,
    ValueError (ModelLoadError) or StorageError for one that cannot be used. "default" is
    the shipped model (load_shipped_model; `shipped_root`: its models folder)."""
    if path == DEFAULT_SPEC:
        return load_shipped_model(device, shipped_root, backend)
    if "://" in path:
        root, model = _split_storage_url(path, name)
        return _load_from_repo(CheckpointRepo(open_storage(root), model), device,
                               backend=backend)
    p = Path(path)
    if (p / _MODELS_DIR).is_dir():
        # A storage directory (a `train --dir`): the named model, or its only one.
        models = sorted(d.name for d in (p / _MODELS_DIR).iterdir() if d.is_dir())
        if not name and len(models) != 1:
            raise ValueError(f"{p} holds models {models}: set the model name (HEXZ_MODEL_NAME)")
        return _load_from_repo(CheckpointRepo(open_storage(p), name or models[0]), device,
                               backend=backend)
    try:
        file = resolve_model_path(p)
    except FileNotFoundError as e:
        raise (NoModelYet(str(e)) if p.is_dir() else e) from None
    file = file.resolve()
    published = published_checkpoint(file)
    if published is not None:
        # A published checkpoint: load it through the repository, checked against meta.json.
        repo, n = published
        return _load_from_repo(repo, device, n, backend)
    key_name, n = model_key_for_path(file)
    return LoadedModel(Predictor.from_path(file, device, backend),
                       pb.ModelKey(name=key_name, checkpoint=n), sha256(file.read_bytes()),
                       str(file))


def load_shipped_model(device: str = "cpu", root: Path | None = None,
                       backend: str = "torch") -> LoadedModel:
    """The default shipped model (nn/shipped.py), its file checked against its SHA-256.
    NoShippedModel when none ships; ShippedModelError or ModelLoadError when it cannot be
    trusted or loaded."""
    m = default_model(root)
    path = m.path(MODEL_FILE)
    # Its model.onnx, where it ships one, checked against its SHA-256 as model.pt is.
    onnx = m.path(ONNX_FILE).read_bytes() if backend != "torch" and ONNX_FILE in m.files \
        else None
    return LoadedModel(Predictor(load_model(path, device), device, backend, onnx),
                       pb.ModelKey(name=m.name, checkpoint=m.checkpoint),
                       m.files[MODEL_FILE]["sha256"], f"{m.label}: {path}")


def shipped_or_rollout(device: str = "cpu", root: Path | None = None,
                       backend: str = "torch") -> tuple[LoadedModel | None, str]:
    """The shipped model and why it plays, or None (rollout MCTS) and why not, said loudly
    in the log: a CPU player that is weaker than it should be must not go unnoticed."""
    try:
        m = load_shipped_model(device, root, backend)
    except NoShippedModel as e:
        log.warning("cpu player plays rollout MCTS: no model path is given and %s", e)
        return None, f"rollout MCTS: no model path is given and {e}"
    except (ShippedModelError, ModelLoadError) as e:
        log.error("cpu player plays rollout MCTS: the shipped model cannot be used error=%r",
                  str(e))
        return None, f"rollout MCTS: the shipped model cannot be used: {e}"
    return m, f"the shipped model {m.key.name} (no model path is given)"


class ModelFollower:
    """Keeps a LiveModel current in the background, also while it waits for a first model
    (the service plays rollouts meanwhile)."""

    def __init__(self, live: LiveModel, model: LoadedModel | None = None) -> None:
        self.live = live
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._watching = False
        if model is not None:
            live.model = model
            self._watch()
        else:
            threading.Thread(target=self._first, name="model-first", daemon=True).start()

    @property
    def model(self) -> LoadedModel | None:
        return self.live.model

    def _first(self) -> None:
        try:
            if self.live.wait_first(self._stop):
                self._watch()
        except TokenRefused as e:
            log.error("cpu player not following the training run: token refused error=%r", str(e))

    def _watch(self) -> None:
        with self._lock:
            if not self._stop.is_set():
                self.live.start()
                self._watching = True

    def status(self) -> dict:
        bus = self.live.fetcher.bus
        return {"model_name": bus.name if bus else None, "swaps": self.live.swaps,
                "refused": self.live.refused}

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            if self._watching:
                self.live.close()


class SearchUnavailable(RuntimeError):
    """The search could not be run (shutting down, or the search thread failed)."""


@dataclass
class _Job:
    board: Board
    deadline: float
    max_iterations: int
    tree_stats: bool = False
    done: threading.Event = field(default_factory=threading.Event)
    result: SearchResult | None = None
    error: str | None = None
    model: str = ""


@dataclass
class SearchOptions:
    slots: int = 8
    leaves_per_round: int = 8
    round_seconds: float | None = None    # TimedSearch's default
    max_tree_nodes: int = 4_000_000
    c_puct: float = 1.5
    uct_c: float = 1.0
    tree: TreeConfig = field(default_factory=served_tree_config)


class CpuPlayer:
    """Searches positions for requests, all in one thread (see the module docstring).

    `model` is a fixed model or None; `follower` a ModelFollower whose current model is used
    instead (it may have none yet: rollouts until it has).
    """

    def __init__(self, model: LoadedModel | None = None,
                 follower: ModelFollower | None = None,
                 options: SearchOptions | None = None, why: str = "") -> None:
        self._model = model
        self.why = why   # which model plays and why, for /status
        self.follower = follower
        self.options = options if options is not None else SearchOptions()
        self._pending: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._stop = False
        self._searches: dict[bool, TimedSearch] = {}   # rollout? -> its search
        self._jobs: dict[tuple[bool, int], _Job] = {}
        self.searches_done = 0
        self.failures = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="cpu-search", daemon=True)
        self._thread.start()

    @property
    def model(self) -> LoadedModel | None:
        f = self.follower
        return f.model if f is not None and f.model is not None else self._model

    def suggest(self, board: Board, deadline: float, max_iterations: int = 0,
                timeout: float = 60.0, tree_stats: bool = False) -> tuple[SearchResult, str]:
        """Searches `board` until `deadline` (time.monotonic()) or `max_iterations`; returns
        the result (with the tree's statistics if `tree_stats`) and the label of the model
        that searched. Blocks the calling thread."""
        if board.is_over:
            raise ValueError("the game is over: there is no move to suggest")
        job = _Job(board, deadline, max_iterations, tree_stats)
        with self._cond:
            if self._stop or not self._thread.is_alive():
                raise SearchUnavailable("the CPU player is shutting down")
            self._pending.append(job)
            self._cond.notify()
        if not job.done.wait(timeout):
            raise SearchUnavailable(f"no search result after {timeout:.0f} s")
        if job.error is not None:
            raise SearchUnavailable(job.error)
        # The search thread sets either error or result before it sets done.
        assert job.result is not None, "search finished without a result or an error"
        return job.result, job.model

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)
        if self.follower is not None:
            self.follower.close()

    def status(self) -> dict:
        m = self.model
        with self._cond:
            waiting = len(self._pending)
        running = sum(s.running for s in list(self._searches.values()))
        out = {
            "player": ("neural MCTS" if m else "rollout MCTS (no model)"),
            "why": self.why,
            "model": None if m is None else {
                "name": m.key.name, "checkpoint": m.key.checkpoint, "sha256": m.sha256,
                "source": m.source},
            "searches": self.searches_done, "running": running, "waiting": waiting,
            "search_failures": self.failures, "last_search_error": self.last_error,
            "slots": self.options.slots,
        }
        if self.follower is not None:
            out["following"] = self.follower.status()
        return out

    # --- the search thread ---

    def _search_for(self, model: LoadedModel | None) -> TimedSearch:
        rollout = model is None
        s = self._searches.get(rollout)
        if s is None:
            o = self.options
            s = self._searches[rollout] = TimedSearch(
                o.slots, None if model is None else model.predictor, c_puct=o.c_puct,
                uct_c=o.uct_c, leaves_per_round=o.leaves_per_round,
                round_seconds=o.round_seconds, max_tree_nodes=o.max_tree_nodes, tree=o.tree)
        elif model is not None:
            # A new checkpoint takes over between rounds, also in searches already running.
            s.evaluate = model.predictor
        return s

    def _admit(self) -> None:
        with self._cond:
            while not self._stop and not self._pending and not self._jobs:
                self._cond.wait()
            if self._stop:
                return
            model = self.model
            search = self._search_for(model)
            label = "rollout" if model is None else f"{model.key.name}:{model.key.checkpoint}"
            while self._pending and search.free_slots:
                job = self._pending.popleft()
                slot = search.add(job.board, job.deadline, job.max_iterations, job.tree_stats)
                job.model = label
                self._jobs[(search.rollout, slot)] = job

    def _run(self) -> None:
        try:
            while not self._stop:
                self._admit()
                for rollout, search in list(self._searches.items()):
                    if search.running:
                        self._step(rollout, search)
        except BaseException as e:   # the thread must not die silently: fail what is queued
            log.exception("cpu player search thread died")
            self.last_error = f"{type(e).__name__}: {e}"
        finally:
            with self._cond:
                self._stop = True
                jobs = list(self._pending) + list(self._jobs.values())
                self._pending.clear()
                self._jobs.clear()
            for job in jobs:
                job.error = "the CPU player is shutting down"
                job.done.set()

    def _step(self, rollout: bool, search: TimedSearch) -> None:
        try:
            results = search.step()
        except Exception as e:
            # A failing network call fails the requests of this round, not the service.
            log.exception("search round failed")
            self.failures += 1
            self.last_error = f"{type(e).__name__}: {e}"
            search.cancel_all()
            for key in [k for k in self._jobs if k[0] == rollout]:
                job = self._jobs.pop(key)
                job.error = f"the search failed: {self.last_error}"
                job.done.set()
            return
        for slot, result in results.items():
            job = self._jobs.pop((rollout, slot))
            job.result = result
            self.searches_done += 1
            job.done.set()


__all__ = ["CpuPlayer", "ModelFollower", "SearchOptions", "SearchUnavailable", "NoModelYet",
           "load_served_model", "load_shipped_model", "shipped_or_rollout"]
