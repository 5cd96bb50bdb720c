"""The strength table runner (train/strength.py, benchmarks/strength.py): matches over the
fixture openings from both seats, in worker processes, resumable from its results file.

Real players and real processes; the matches are the issue's in form but tiny in budget.
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import child_env
from pyhexz.infra.storage import sha256
from pyhexz.nn import HexzNet, save_checkpoint
from pyhexz.search.timed import SERVED_EVAL_CACHE
from pyhexz.train import strength
from pyhexz.train.strength import (
    RESULTS_FILE,
    Match,
    make_plan,
    markdown,
    play,
    read_results,
    table,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
QUICK = (
    Match("budget", "{model}:4", "rollout:8", 0.9, "tiny budgets"),
    Match("time", "{model}@0.005", "rollout@0.005", 0.9, "a tiny think time"),
    Match("previous", "{model}:4", "{previous}:4", 0.55, "the model it replaces"),
)


def tiny_model(path: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    save_checkpoint(path, HexzNet(1, 8))
    return path


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[str, str]:
    d = tmp_path_factory.mktemp("strength")
    return str(tiny_model(d / "new.pt", 1)), str(tiny_model(d / "old.pt", 2))


def test_plays_every_chunk_once_and_resumes_after_a_torn_line(models, tmp_path) -> None:
    new, old = models
    # torch: `auto` picks a backend by its speed in each process, and int8's arithmetic is
    # not torch's, so a chunk played again could differ (not in a budget's strength, but here
    # the test asks for the same games).
    plan = make_plan(new, old, None, openings=3, chunk=2, matches=QUICK, backend="torch")
    assert [m["player2"] for m in plan.matches] == ["rollout:8", "rollout@0.005", f"{old}:4"]
    assert plan.model_sha256 == sha256(Path(new).read_bytes())
    out = tmp_path / "out"
    assert play(out, plan, workers=2) == 6    # 3 matches x 2 chunks (openings 0-1 and 2)
    lines = (out / RESULTS_FILE).read_text().splitlines()
    assert sorted((r["match"], tuple(r["openings"])) for r in map(json.loads, lines)) == [
        (m, o) for m in ("budget", "previous", "time") for o in ((0, 1), (2,))]
    t = table(out)
    for row in t["matches"]:
        assert row["complete"] and row["openings"] == 3 and row["games"] == 6
        assert row["wins"] + row["draws"] + row["losses"] == 6
        assert row["score_paired_low"] <= row["score"] <= row["score_paired_high"]
        assert row["met"] == (row["score"] >= row["target"])
    timed = next(r for r in t["matches"] if r["match"] == "time")
    assert len(timed["simulations_per_move"]) == 2
    # Nothing left to play; a torn last line (a kill while appending) loses just that chunk,
    # which is played again: the same games, as the players are seeded per chunk.
    assert play(out, plan, workers=2) == 0
    torn = next(line for line in lines if json.loads(line)["match"] == "budget")
    rest = [line for line in lines if line != torn]
    (out / RESULTS_FILE).write_text("\n".join(rest + [torn[:20]]) + "\n")
    assert play(out, plan, workers=1) == 1
    again = read_results(out)[("budget", tuple(json.loads(torn)["openings"]))]
    assert again["outcomes"] == json.loads(torn)["outcomes"]
    assert [r["games"] for r in table(out)["matches"]] == [6, 6, 6]
    assert "| budget |" in markdown(t) and "| previous |" in markdown(t)


def test_results_of_another_model_are_refused(models, tmp_path) -> None:
    new, old = models
    out = tmp_path / "out"
    play(out, make_plan(new, None, ["budget"], openings=1, chunk=1, matches=QUICK))
    with pytest.raises(ValueError, match="another plan"):
        play(out, make_plan(old, None, ["budget"], openings=1, chunk=1, matches=QUICK))
    with pytest.raises(ValueError, match="needs the previous model"):
        make_plan(new, None, ["previous"], openings=1, chunk=1, matches=QUICK)
    with pytest.raises(ValueError, match="unknown matches"):
        make_plan(new, None, ["nope"], openings=1, chunk=1, matches=QUICK)
    # Without a previous model its match is left out; the matches are the default.
    plan = make_plan(new, None, None, 128, 4)
    assert [m["id"] for m in plan.matches] == ["budget-200", "budget-800", "time-1s"]
    # Each match records its neural players' tree options: the CPU player's, with its cache.
    assert {m["tree"]["eval_cache"] for m in plan.matches} == {SERVED_EVAL_CACHE}


def test_each_match_runs_on_the_backend_its_plan_records(models, tmp_path) -> None:
    """The neural players run on the plan's backend (`auto` by default, as the CPU player
    serves; at equal think time the backend is much of the strength), each result says which
    ran, and a plan written before backends were recorded keeps torch, which it ran on."""
    pytest.importorskip("onnxruntime")
    new, _ = models
    assert {m["backend"] for m in make_plan(new, None, None, 1, 1, QUICK).matches} == {"auto"}
    plan = make_plan(new, None, ["budget", "time"], openings=1, chunk=1, matches=QUICK,
                     backend="onnx")
    assert [m["backend"] for m in plan.matches] == ["onnx", "onnx"]
    old = make_plan(new, None, ["budget"], openings=1, chunk=1, matches=QUICK)
    del old.matches[0]["backend"]
    for out, p, want in ((tmp_path / "a", plan, ["onnx"]), (tmp_path / "b", old, ["torch"])):
        play(out, p, workers=1)
        assert [r["backends"] for r in read_results(out).values()] == [want] * len(p.matches)
        assert [r["backends"] for r in table(out)["matches"]] == [want] * len(p.matches)


def test_a_failing_match_stops_the_run_with_one_line(tmp_path, models) -> None:
    new, _ = models
    plan = make_plan(new, None, ["budget"], openings=1, chunk=1, matches=QUICK)
    plan.matches[0]["player2"] = "rollout:x"   # a spec no worker can build
    with pytest.raises(RuntimeError, match="budget openings 0..0: ValueError"):
        play(tmp_path / "out", plan)


def test_the_benchmark_script_prints_the_table_and_writes_it(models, tmp_path) -> None:
    new, _ = models
    out = tmp_path / "out"
    play(out, make_plan(new, None, ["budget"], openings=1, chunk=1, matches=QUICK))
    r = subprocess.run([sys.executable, "benchmarks/strength.py", "--model", new, "--out",
                        str(out), "--report"], cwd=REPO_ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "| budget | " in r.stdout and f"{new}:4 vs rollout:8" in r.stdout
    written = json.loads((out / strength.TABLE_FILE).read_text())
    assert written["model_sha256"] == sha256(Path(new).read_bytes())
    assert written["matches"][0]["games"] == 2
    r = subprocess.run([sys.executable, "benchmarks/strength.py", "--model", new, "--out",
                        str(tmp_path / "none"), "--report"], cwd=REPO_ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("strength: error:")


def test_a_grown_plan_counts_only_its_own_chunks(models, tmp_path, caplog) -> None:
    """`--matches time-1s` added to a folder that holds the budget matches: the progress
    line counts the new match's chunks, not the folder's."""
    new, _ = models
    out = tmp_path / "out"
    play(out, make_plan(new, None, ["budget"], openings=2, chunk=1, matches=QUICK))
    with caplog.at_level(logging.INFO, logger="pyhexz.train.strength"):
        assert play(out, make_plan(new, None, ["time"], openings=2, chunk=1, matches=QUICK),
                    workers=1) == 2
    said = [r.getMessage() for r in caplog.records if r.name == "pyhexz.train.strength"]
    assert "chunks_done=0 chunks_todo=2" in said[0]
    assert [re.search(r"chunks=(\d+/\d+)", m)[1] for m in said if "match=time" in m] == [
        "1/2", "2/2"]
