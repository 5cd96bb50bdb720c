"""End to end: `python -m pyhexz train` as a real process, and its crash-safety contract.

The contract (src/pyhexz/train/local.py): the job may be killed at any point and restarted with the
same directory; no finished game is lost and none is counted twice.
"""

from __future__ import annotations

import collections
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import child_env, model_device
from pyhexz.game.examples import GAME_FILE_SUFFIX, read_game_file
from pyhexz.infra.storage import CheckpointRepo, LocalStorage
from pyhexz.train.config import TrainConfig
from pyhexz.train.trainer import read_examples_archive

REPO_ROOT = Path(__file__).resolve().parents[1]
TINY = ["--blocks", "2", "--filters", "8", "--runs-per-move", "4", "--num-workers", "1",
        "--device", model_device()]   # HEXZ_TEST_DEVICE, default cpu

pytestmark = pytest.mark.slow


def env() -> dict:
    return child_env()


def train_cmd(d: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "pyhexz", "train", "--dir", str(d), *TINY, *extra]


def run_train(d: Path, log: Path, *extra: str, timeout: float = 120) -> subprocess.CompletedProcess:
    with log.open("ab") as err:
        proc = subprocess.Popen(train_cmd(d, *extra), cwd=REPO_ROOT, env=env(),
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc)
            pytest.fail(f"train did not finish in {timeout} s; log:\n{tail(log)}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out.decode(), "")


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the job and its self-play workers (started in their own session)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def tail(log: Path, n: int = 4000) -> str:
    return log.read_text(errors="replace")[-n:] if log.exists() else "(no log)"


class Job:
    def __init__(self, d: Path, name: str = "local") -> None:
        self.repo = CheckpointRepo(LocalStorage(d), name)
        self.incoming = d / "models" / "flagz" / name / "incoming"
        self.unfinished = d / "models" / "flagz" / name / "unfinished"

    def games_in_incoming(self) -> set[str]:
        try:
            return {p.name for p in self.incoming.iterdir() if p.name.endswith(GAME_FILE_SUFFIX)
                    and not p.name.startswith(".")}
        except FileNotFoundError:
            return set()

    def names_by_checkpoint(self) -> dict[int, list[str]]:
        return {n: self.repo.meta(n).get("game_names", []) for n in self.repo.checkpoints()}

    def all_trained(self) -> set[str]:
        return {g for names in self.names_by_checkpoint().values() for g in names}


def check_consistency(job: Job) -> None:
    """No game in two checkpoints; archives match the metadata; counters add up."""
    by_ckpt = job.names_by_checkpoint()
    counts = collections.Counter(g for names in by_ckpt.values() for g in names)
    twice = [g for g, c in counts.items() if c > 1]
    assert not twice, f"games counted twice: {twice}"
    game_ids = collections.Counter()
    prev_trained = 0
    for n in sorted(by_ckpt):
        meta = job.repo.meta(n)
        entries = []
        for arch in job.repo.example_archives(n):
            entries += read_examples_archive(job.repo.read_verified(n, f"examples/{arch}"))
        assert [name for name, _ in entries] == by_ckpt[n]
        new_examples = sum(len(r.examples) for _, r in entries)
        assert meta["new_examples"] == new_examples and meta["games"] == len(entries)
        assert meta["examples_trained"] == prev_trained + new_examples
        prev_trained = meta["examples_trained"]
        game_ids.update(r.game_id for _, r in entries)
    dup_ids = [g for g, c in game_ids.items() if c > 1]
    assert not dup_ids, f"game ids trained twice: {dup_ids}"
    leftover = job.games_in_incoming() & set(counts)
    assert not leftover, f"trained games still in incoming/: {leftover}"


def test_train_then_kill_and_resume(tmp_path: Path) -> None:
    d = tmp_path / "run"
    log = tmp_path / "train.log"
    job = Job(d)

    # 1. A short run to two new checkpoints.
    r = run_train(d, log, "--parallel-games", "8", "--minibatch-size", "256", "--checkpoints", "2")
    assert r.returncode == 0, tail(log)
    assert job.repo.checkpoints() == [0, 1, 2], tail(log)
    assert "checkpoint 2" in r.stdout
    for n in (0, 1, 2):
        ckpt_dir = d / job.repo.prefix / str(n)
        assert (ckpt_dir / "model.pt").is_file() and (ckpt_dir / "scriptmodule.pt").is_file()
        assert (ckpt_dir / "meta.json").is_file()
        if n:
            assert job.repo.example_archives(n) == [f"{n:06d}.zip"]
    check_consistency(job)

    # 2. Run again without a limit and kill -9 it (workers too) while games wait in incoming/.
    seen: set[str] = set()
    with log.open("ab") as err:
        proc = subprocess.Popen(train_cmd(d, "--parallel-games", "8", "--minibatch-size", "256"),
                                cwd=REPO_ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while True:
                assert proc.poll() is None, f"train exited early:\n{tail(log)}"
                assert time.monotonic() < deadline, f"no pending games seen:\n{tail(log)}"
                now = job.games_in_incoming()
                seen |= now
                # Wait until the restarted job trained once and has fresh, untrained games.
                if job.repo.latest() >= 3 and now - job.all_trained():
                    break
                time.sleep(0.02)
        finally:
            kill_group(proc)
    at_kill = job.games_in_incoming()
    seen |= at_kill
    n_kill = job.repo.latest()
    trained_at_kill = set(job.repo.meta(n_kill).get("game_names", []))
    waiting = at_kill - trained_at_kill
    assert waiting, "expected untrained games in incoming/ at the kill"
    assert not (seen - at_kill - job.all_trained()), "games vanished before the restart"

    # 3. Restart with the same directory for one more checkpoint.
    log.write_text(log.read_text(errors="replace") + "\n--- restart ---\n")
    r = run_train(d, log, "--parallel-games", "8", "--minibatch-size", "256", "--checkpoints", "1")
    restart_log = log.read_text(errors="replace").split("--- restart ---")[-1]
    assert r.returncode == 0, restart_log
    assert f"resumed model=local checkpoint={n_kill} " in restart_log
    assert job.repo.checkpoints() == list(range(n_kill + 2)), restart_log
    new_names = set(job.repo.meta(n_kill + 1)["game_names"])
    # None lost: every untrained game at the kill is in the new checkpoint ...
    assert waiting <= new_names, f"lost: {waiting - new_names}"
    # ... and every game ever seen in incoming/ was trained or is still waiting.
    lost = seen - job.all_trained() - job.games_in_incoming()
    assert not lost, f"games lost: {lost}"
    # None counted twice.
    check_consistency(job)
    assert not list(job.incoming.glob(".*.tmp"))
    assert f"checkpoint {n_kill + 1}" in r.stdout

    # Each of the three sessions recorded itself in the checkpoints it wrote: how the model
    # was trained can be read back from the run (what `pyhexz ship-model` records).
    from pyhexz.train.ship import training_record
    rec = training_record(job.repo, n_kill + 1)
    sessions = rec["sessions"]
    assert [(s["first_checkpoint"], s["last_checkpoint"]) for s in sessions] == [
        (0, 2), (3, n_kill), (n_kill + 1, n_kill + 1)]
    assert sessions[0]["command"].startswith(f"pyhexz train --dir {d} ")
    assert sessions[0]["command"].endswith("--checkpoints 2")
    assert sessions[2]["command"].endswith("--checkpoints 1")
    assert "--checkpoints" not in sessions[1]["command"]
    assert all(s["settings"]["train"]["blocks"] == 2 and s["wall_seconds"] > 0
               for s in sessions)
    assert rec["wall_time_complete"] and rec["wall_seconds"] == pytest.approx(
        sum(s["wall_seconds"] for s in sessions), abs=0.2)
    assert rec["examples_trained"] == job.repo.meta(n_kill + 1)["examples_trained"]


def test_train_with_the_learning_switches_on(tmp_path: Path) -> None:
    """Playout caps, the score head, the growing window and global pooling, end to end: the
    checkpoints have the pooling network and a score loss, and the games trained hold only
    full searches, each with the game's score."""
    d = tmp_path / "run"
    log = tmp_path / "train.log"
    job = Job(d)
    r = run_train(d, log, "--parallel-games", "8", "--minibatch-size", "256", "--checkpoints",
                  "2", "--full-search-fraction", "0.5", "--cheap-runs-per-move", "2",
                  "--score-weight", "1", "--replay-window-start", "300")
    assert r.returncode == 0, tail(log)
    assert job.repo.checkpoints() == [0, 1, 2], tail(log)
    check_consistency(job)
    for n in (1, 2):
        meta = job.repo.meta(n)
        assert meta["params"] == {"blocks": 2, "filters": 8, "global_pooling": True}
        assert meta["stats"]["score_loss"] > 0
        grown = TrainConfig(replay_window_start=300).window_at(meta["examples_trained"])
        assert meta["stats"]["window"] == grown
        for _, req in read_examples_archive(job.repo.read_verified(n, f"examples/{n:06d}.zip")):
            moves = [ex.move.move for ex in req.examples]
            assert all(ex.visit_count == 4 and ex.HasField("score") for ex in req.examples)
            assert moves == sorted(set(moves))
    # Past 300 examples, the window no longer holds them all.
    assert job.repo.meta(2)["stats"]["window"] < job.repo.meta(2)["examples_trained"]
    # Half the moves were cheap, so the recorded ones skip move numbers.
    games = [req for n in (1, 2) for _, req in
             read_examples_archive(job.repo.read_verified(n, f"examples/{n:06d}.zip"))]
    assert any(ex.move.move != i for req in games for i, ex in enumerate(req.examples))


def _move_sequences(job: Job) -> list[tuple]:
    out = []
    for name in sorted(job.games_in_incoming()):
        req = read_game_file(job.incoming / name)
        out.append(tuple((e.move.row, e.move.col, e.move.cell_type) for e in req.examples))
    return out


def run_until_games(d: Path, log: Path, job: Job, n: int, *extra: str) -> None:
    """Runs train until incoming/ holds at least n games, then kill -9s it."""
    with log.open("ab") as err:
        proc = subprocess.Popen(train_cmd(d, *extra), cwd=REPO_ROOT, env=env(),
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            deadline = time.monotonic() + 60
            while len(job.games_in_incoming()) < n:
                assert proc.poll() is None, f"train exited early:\n{tail(log)}"
                assert time.monotonic() < deadline, f"too few games:\n{tail(log)}"
                time.sleep(0.05)
        finally:
            kill_group(proc)


class GamesPlayedTwice(AssertionError):
    pass


def test_restart_from_same_checkpoint_plays_new_games(tmp_path: Path) -> None:
    d = tmp_path / "run"
    log = tmp_path / "train.log"
    job = Job(d)
    args = ("--parallel-games", "2", "--minibatch-size", "1000000")
    run_until_games(d, log, job, 2, *args)
    first = _move_sequences(job)
    run_until_games(d, log, job, 2 * len(first), *args)
    assert job.repo.checkpoints() == [0]
    games = _move_sequences(job)
    dups = [g for g, c in collections.Counter(games).items() if c > 1]
    if dups:
        raise GamesPlayedTwice(f"{len(dups)} of {len(games)} games were played twice")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_stops_gracefully_and_keeps_finished_games(tmp_path: Path, sig: int) -> None:
    """Ctrl-C or SIGTERM: the job exits 0 and every finished game is in incoming/ or trained."""
    d = tmp_path / "run"
    log = tmp_path / "train.log"
    job = Job(d)
    with log.open("ab") as err:
        # The signal handling must not depend on an inherited SIGINT disposition: start the
        # job the way a background shell does, with SIGINT ignored.
        proc = subprocess.Popen(train_cmd(d, "--parallel-games", "2",
                                          "--minibatch-size", "1000000"),
                                cwd=REPO_ROOT, env=env(), stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            deadline = time.monotonic() + 90
            while not job.games_in_incoming() and time.monotonic() < deadline:
                time.sleep(0.1)
            before = job.games_in_incoming()
            assert before, f"no game finished in time; log:\n{tail(log)}"
            proc.send_signal(sig)
            assert proc.wait(timeout=60) == 0, tail(log)
        finally:
            kill_group(proc)
    assert "reason=signal" in tail(log)
    assert before <= job.games_in_incoming() | job.all_trained()
    # The games under way were kept, not thrown away: the two slots' (one, if a game ended
    # in the round that heard the stop, whose slot then stayed empty).
    saved = [int(n) for n in re.findall(r"saved_unfinished=(\d+)", tail(log, 100_000))]
    kept = len(list(job.unfinished.glob("*.unfinished.gz")))
    assert saved == [kept] and kept in (1, 2), tail(log)
    assert re.search(rf"train stopped .* unfinished_kept={kept}\b", tail(log)), tail(log)


def start_train(d: Path, log: Path, *extra: str) -> subprocess.Popen:
    with log.open("ab") as err:
        return subprocess.Popen(train_cmd(d, *extra), cwd=REPO_ROOT, env=env(),
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def wait_for(what: str, log: Path, proc: subprocess.Popen, done, limit: float = 120) -> None:
    """Polls `done()` until true; fails (with the log) if the job exits or `limit` s pass.
    The limit is only a guard against a hung job, far above what the step takes."""
    deadline = time.monotonic() + limit
    while not done():
        assert proc.poll() is None, f"train exited before {what}:\n{tail(log)}"
        assert time.monotonic() < deadline, f"no {what} in {limit} s:\n{tail(log)}"
        time.sleep(0.1)


def test_ctrl_c_keeps_the_games_under_way_and_the_next_start_plays_them_on(
        tmp_path: Path) -> None:
    d = tmp_path / "run"
    log = tmp_path / "train.log"
    job = Job(d)
    # Every move recorded (no playout caps), so that a resumed game's file can be checked
    # move by move from the first.
    args = ("--parallel-games", "4", "--start-games", "2", "--minibatch-size", "1000000",
            "--full-search-fraction", "1")
    proc = start_train(d, log, *args)
    try:
        wait_for("finished game", log, proc, job.games_in_incoming)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0, tail(log)
    finally:
        kill_group(proc)
    kept = {p.name.split(".")[0] for p in job.unfinished.glob("*.unfinished.gz")}
    # Every game under way was kept (how many depends on when the stop came: the ramp opens
    # a slot per game ended, and a slot whose game ended in the last round stays empty).
    saved = [int(n) for n in re.findall(r"saved_unfinished=(\d+)", tail(log, 100_000))]
    assert saved == [len(kept)] and kept, tail(log)
    assert re.search(rf"train stopped .* unfinished_kept={len(kept)}\b", tail(log))

    log.write_text(log.read_text(errors="replace") + "\n--- restart ---\n")
    proc = start_train(d, log, *args)

    def resumed_game_finished() -> bool:
        return any(name.split(".")[0].split("-", 1)[1] in kept
                   for name in job.games_in_incoming())
    try:
        wait_for("resumed game finished", log, proc, resumed_game_finished)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, tail(log)
    finally:
        kill_group(proc)
    restart_log = log.read_text(errors="replace").split("--- restart ---")[-1]
    assert f"resuming unfinished games={len(kept)} " in restart_log
    resumed = sum(int(n) for n in re.findall(r"selfplay done .* resumed=(\d+) ", restart_log))
    assert resumed == len(kept), restart_log
    # A resumed game is one game: its file holds its moves from the start, numbered 0, 1, ...
    for name in job.games_in_incoming():
        req = read_game_file(job.incoming / name)
        assert [ex.move.move for ex in req.examples] == list(range(len(req.examples)))


def test_minutes_winds_down_so_no_game_under_way_is_dropped(tmp_path: Path) -> None:
    """With --minutes the workers stop starting games shortly before the end and finish those
    under way, so the job ends with every game it started kept, and not after its time."""
    d = tmp_path / "run"
    log = tmp_path / "train.log"
    job = Job(d)
    res = run_train(d, log, "--minutes", "0.4", "--parallel-games", "4",
                    "--minibatch-size", "1000000")
    text = tail(log, 100_000)
    assert res.returncode == 0, text[-4000:]
    assert "selfplay winding down" in text and "reason=minutes" in text
    done = re.findall(r"selfplay done games=(\d+) examples=\d+ resumed=0 cut_off=(\d+)", text)
    assert len(done) == 1 and done[0][1] == "0", text[-4000:]
    assert len(job.games_in_incoming()) == int(done[0][0]) > 0
    # (How far past its 24 s the command ends depends on the machine: BENCHMARKS.md.)
