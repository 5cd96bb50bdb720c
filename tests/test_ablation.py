"""benchmarks/ablation.py's variants: every change it names is a real setting of `pyhexz train`
that the parser takes, and each variant differs from its base in exactly the change it names.
(A misspelt HEXZ_* variable would be silently ignored, and an ablation would compare a run
with itself.)"""

from __future__ import annotations

import dataclasses
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
