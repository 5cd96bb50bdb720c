"""benchmarks/ablation.py's variants: every change it names is a real setting of `pyhexz train`
that the parser takes, and each variant differs from its base in exactly the change it names.
(A misspelt HEXZ_* variable would be silently ignored, and an ablation would compare a run
with itself.)"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from pathlib import Path

import pytest

from pyhexz import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import ablation  # noqa: E402


def train_config(env: dict[str, str], monkeypatch: pytest.MonkeyPatch):
    for k in [k for k in os.environ if k.startswith("HEXZ_")]:
        monkeypatch.delenv(k)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return cli.build_parser().parse_args(["train"]).config


def flat(config) -> dict[str, object]:
    """The config's leaves by dotted path."""
    out: dict[str, object] = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        if dataclasses.is_dataclass(v):
            out.update({f"{f.name}.{k}": x for k, x in flat(v).items()})
        else:
            out[f.name] = v
    return out


@pytest.mark.parametrize("name", [*ablation.FEATURES, *ablation.LEARN3])
def test_every_change_is_wired_and_switches_something(name, monkeypatch):
    feature = ablation.FEATURES.get(name) or ablation.LEARN3[name]
    assert feature.on is not None and feature.off is not None, f"{name} is not wired"
    on = flat(train_config(feature.on, monkeypatch))
    off = flat(train_config(feature.off, monkeypatch))
    assert on != off, f"{name}: its on and off settings give the same train config"


@pytest.mark.parametrize("base", ablation.BASES)
def test_each_variant_of_an_ablation_parses_and_differs_from_its_base(base, monkeypatch):
    variants = ablation.ablation(base)
    assert variants[0] == base and len(variants) == 1 + len(ablation.wired())
    configs = {v: flat(train_config(ablation.settings(v), monkeypatch)) for v in variants}
    for v in variants[1:]:
        assert configs[v] != configs[base], f"{v} trains exactly as {base}"


def test_all_leaves_out_the_alternatives_and_swaps_them_in(monkeypatch):
    every = ablation.settings("all")
    assert every["HEXZ_FORCED_PLAYOUTS"] == "2" and "HEXZ_GUMBEL" not in every
    swapped = train_config(ablation.settings("all+gumbel"), monkeypatch)
    assert swapped.search.gumbel == 16 and swapped.search.forced_playouts == 0
    assert "all+gumbel" in ablation.ablation("all")


def test_a_bad_variant_says_what_is_wrong():
    with pytest.raises(ValueError, match="no change 'nope'"):
        ablation.settings("all-nope")
    with pytest.raises(ValueError, match="a variant is BASE"):
        ablation.settings("some")


# An ablation takes several sessions (nine runs of 30 minutes), so what one session leaves is
# the committed results folder: the variants' summaries and match results, not the runs.

def run_args(out: Path, *variants: str) -> list[str]:
    return ["ablation.py", "run", "--out", str(out), "--minutes", "30", "--variants", *variants,
            "--games", "2", "--curve-minutes", "10", "--curve-games", "1"]


def finished_variant(out: Path, variant: str, machine: str, head_to_head: int = 0) -> None:
    """The summary a finished, measured variant leaves in the results folder (with its match
    against its base when `head_to_head` openings were asked for)."""
    from pyhexz.train.arena import result_json, summarize
    last = json.loads(result_json(summarize("m:200", "rollout:800", [1, 1, 0.5, 0], 60, 2)))
    early = json.loads(result_json(summarize("m:200", "rollout:800", [0, 0], 20, 2)))
    summary = {"variant": variant, "name": ablation.dir_name(variant),
               "settings": ablation.settings(variant), "minutes": 30.0, "checkpoint": 70,
               "games": 15000, "examples": 300000, "examples_per_s": 165.0,
               "machine": machine, "forward": "int8 0.90 ms",
               "measured_with": {"opponents": list(ablation.OPPONENTS), "games": 2,
                                 "runs": 200, "curve_minutes": 10.0, "curve_games": 1},
               "last": {"rollout:800": last, "rollout:8000": early},
               "curve": [{"minutes": 9.9, "checkpoint": 24, "result": early},
                         {"minutes": 29.9, "checkpoint": 70, "result": last}]}
    if head_to_head:
        summary["measured_with"]["head_to_head"] = head_to_head
        if variant != ablation.parse_variant(variant)[0]:
            summary["head_to_head"] = json.loads(result_json(summarize(
                "base:200", "it:200", [1, 0.5, 1, 1], 60, 2)))
    (out / f"{ablation.dir_name(variant)}.json").write_text(json.dumps(summary))


def test_a_committed_ablation_prints_its_table_without_its_runs(tmp_path, monkeypatch, capsys):
    for v in ("defaults", "defaults-score"):
        finished_variant(tmp_path, v, ablation.machine())
    monkeypatch.setattr(sys, "argv", run_args(tmp_path, "defaults", "defaults-score"))
    ablation.main()
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("| defaults")]
    assert len(rows) == 2 and "| int8 0.90 ms |" in rows[1]
    assert "| 2/1/1, 0.625 [" in rows[1] and "| 0/0/2, 0.000 [" in rows[1]   # both opponents
    # minutes to 0.5 from the curve: not at 9.9 (0.0), at 29.9 (0.625); 0.9 never
    assert rows[1].endswith("| 29.9 | - |")
    assert "- defaults-score: 9.9: 0.00, 29.9: 0.62" in out
    assert (tmp_path / ".gitignore").read_text().splitlines()[1:] == ["/*/", "!/matches/"]


def test_the_head_to_head_column_gives_the_bases_score_against_each_variant(
        tmp_path, monkeypatch, capsys):
    for v in ("defaults", "defaults-score"):
        finished_variant(tmp_path, v, ablation.machine(), head_to_head=2)
    monkeypatch.setattr(sys, "argv", [*run_args(tmp_path, "defaults", "defaults-score"),
                                      "--head-to-head", "2"])
    ablation.main()
    out = capsys.readouterr().out
    assert "| base vs it (above 0.5: the change pays) |" in out
    base, variant = [ln for ln in out.splitlines() if ln.startswith("| defaults")]
    assert "| 3/1/0, 0.875 [" in variant and "| - | 29.9 | - |" in base


def test_a_head_to_head_needs_its_base_run_first(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [*run_args(tmp_path, "defaults-score"), "--head-to-head", "2"])
    args = ablation.build_parser().parse_args(sys.argv[1:])
    with pytest.raises(SystemExit, match="plays it against defaults, which has not run"):
        ablation.base_model(args, "defaults-score")
    assert ablation.base_model(args, "defaults") is None


def test_a_run_keeps_the_forward_pass_its_slowest_self_play_process_measured():
    log = ("... INFO pyhexz.nn.backends pid=1 backend auto chose int8 (torch=4.32ms onnx=2.16ms "
           "int8=0.90ms)\n... INFO pyhexz.nn.backends pid=2 backend auto chose onnx "
           "(torch=2.99ms onnx=1.14ms int8=1.89ms)\n")
    assert ablation.forward(log) == "onnx 1.14 ms"
    assert ablation.forward("a run with --backend torch says nothing\n") == "?"


def test_a_variant_will_not_train_on_another_kind_of_machine(tmp_path, monkeypatch):
    finished_variant(tmp_path, "defaults", "AMD EPYC 7B13, 2 cores")
    monkeypatch.setattr(sys, "argv", run_args(tmp_path, "defaults", "defaults-score"))
    with pytest.raises(SystemExit, match=r"defaults-score: this machine \(.*\) is not the one "
                                         r"that trained defaults \(AMD EPYC 7B13, 2 cores\)"):
        ablation.main()
    assert not (tmp_path / "defaults-without-score").exists()   # nothing trained
