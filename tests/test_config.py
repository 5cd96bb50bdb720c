"""pyhexz.infra.config: flags and HEXZ_* variables made from config dataclasses, and the
`pyhexz` command line built on it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import child_env
from pyhexz import cli
from pyhexz.infra.config import (
    ConfigParser,
    above,
    at_least,
    check_settings,
    environ_for,
    from_env,
    options,
    setting,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_hexz_env(monkeypatch):
    """Only what a test sets: a HEXZ_* variable of the caller's shell must not change a flag."""
    for k in [k for k in os.environ if k.startswith("HEXZ_")]:
        monkeypatch.delenv(k)


# --------------------------------------------------------------------------
# The mechanism, on dataclasses of its own
# --------------------------------------------------------------------------


@dataclass
class Inner:
    depth: int = setting(3, "how deep", check=at_least(1))
    rate: float = setting(0.5, "how fast", check=above(0))
    hidden: int = 7          # not a setting: no flag, no variable


@dataclass
class Outer:
    name: str = setting("x", "a name", flag="--outer-name")
    limit: int | None = setting(None, "an optional limit", check=at_least(0))
    verbose: bool = setting(False, "talk more")
    shuffle: bool = setting(True, "keep the order")
    inner: Inner = field(default_factory=lambda: Inner(depth=5))
    path: Path = setting(Path("out"), "where")
    low: int = setting(1, "lower bound", check=at_least(0), command_default=2)
    high: int = setting(10, "upper bound")

    def __post_init__(self) -> None:
        check_settings(self)
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")


def parser_for(cls: type) -> ConfigParser:
    p = ConfigParser(prog="t")
    p.add_config(cls)
    return p


def test_flags_and_variables_are_made_from_the_fields() -> None:
    got = {o.flag: o.env for o in options(Outer)}
    assert got == {"--outer-name": "HEXZ_OUTER_NAME", "--limit": "HEXZ_LIMIT",
                   "--verbose": "HEXZ_VERBOSE", "--no-shuffle": "HEXZ_NO_SHUFFLE",
                   "--depth": "HEXZ_DEPTH", "--rate": "HEXZ_RATE", "--path": "HEXZ_PATH",
                   "--low": "HEXZ_LOW", "--high": "HEXZ_HIGH"}
    c = parser_for(Outer).parse_args([]).config
    # Nested defaults come from the parent's default; command_default from the setting.
    assert c == Outer(inner=Inner(depth=5), low=2)
    assert c.inner.hidden == 7


def test_values_from_flags_including_nested_and_switches() -> None:
    c = parser_for(Outer).parse_args(
        ["--outer-name", "y", "--limit", "0", "--verbose", "--no-shuffle", "--depth", "9",
         "--rate", "2", "--path", "a/b"]).config
    assert c == Outer(name="y", limit=0, verbose=True, shuffle=False,
                      inner=Inner(depth=9, rate=2.0), path=Path("a/b"), low=2)


def test_a_variable_sets_the_default_and_the_command_line_wins(monkeypatch) -> None:
    monkeypatch.setenv("HEXZ_DEPTH", "4")
    monkeypatch.setenv("HEXZ_NO_SHUFFLE", "yes")
    monkeypatch.setenv("HEXZ_LIMIT", "")      # empty: as if unset
    p = parser_for(Outer)
    c = p.parse_args([]).config
    assert (c.inner.depth, c.shuffle, c.limit) == (4, False, None)
    assert p.parse_args(["--depth", "6"]).config.inner.depth == 6


def test_from_env_matches_the_flags_defaults() -> None:
    env = {"HEXZ_DEPTH": "8", "HEXZ_VERBOSE": "1", "HEXZ_OUTER_NAME": "z", "HEXZ_LOW": "3"}
    c = from_env(Outer, env)
    assert c == Outer(name="z", verbose=True, inner=Inner(depth=8), low=3)
    assert from_env(Outer, environ_for(c)) == c   # environ_for gives it back
    assert from_env(Outer, {}) == parser_for(Outer).parse_args([]).config


@pytest.mark.parametrize("env, message", [
    ({"HEXZ_DEPTH": "deep"}, "HEXZ_DEPTH='deep' is not a valid int"),
    ({"HEXZ_DEPTH": "0"}, "HEXZ_DEPTH='0': depth must be >= 1, got 0"),
    ({"HEXZ_VERBOSE": "maybe"}, "HEXZ_VERBOSE='maybe' is not a valid switch"),
    ({"HEXZ_LOW": "11"}, r"low \(11\) must not exceed high \(10\)"),
])
def test_from_env_bad_values_name_the_variable(env, message) -> None:
    with pytest.raises(ValueError, match=message):
        from_env(Outer, env)


@pytest.mark.parametrize("argv, message", [
    (["--depth", "x"], "argument --depth: 'x' is not a valid int"),
    (["--depth", "0"], "argument --depth: depth must be >= 1, got 0"),
    (["--rate", "-1"], "argument --rate: rate must be > 0, got -1.0"),
    (["--low", "20"], r"low \(20\) must not exceed high \(10\)"),   # from __post_init__
])
def test_bad_flags_are_one_usage_error(argv, message, capsys) -> None:
    with pytest.raises(SystemExit, match="^2$") as e:
        parser_for(Outer).parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err
    assert "Traceback" not in err


def test_required_settings(capsys) -> None:
    @dataclass
    class Job:
        target: str = setting(help="where to")
        source: str = setting(help="from where", positional=True)

    p = parser_for(Job)
    assert p.parse_args(["a", "--target", "b"]).config == Job(target="b", source="a")
    with pytest.raises(SystemExit, match="^2$"):
        p.parse_args(["a"])
    assert "--target (or HEXZ_TARGET) is required" in capsys.readouterr().err


# --------------------------------------------------------------------------
# The pyhexz command line
# --------------------------------------------------------------------------


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


def test_commands_get_their_configs() -> None:
    from pyhexz.search.driver import SearchConfig
    from pyhexz.train.config import LocalConfig, TrainConfig
    from pyhexz.training_server.config import ServerConfig
    from pyhexz.worker.config import WorkerConfig

    t = parse("train", "--minibatch-size", "7", "--no-augment", "--model-name", "m")
    assert isinstance(t.config, LocalConfig)
    assert (t.config.train.trigger_examples, t.config.train.augment, t.config.name) == \
        (7, False, "m")
    s = parse("server", "--wal-segment-bytes", "4096", "--port", "9")
    assert isinstance(s.config, ServerConfig) and s.config.segment_bytes == 4096
    assert (s.serving.host, s.serving.port, s.serving.request_timeout) == ("127.0.0.1", 9, 30.0)
    w = parse("worker", "--server-url", "http://x", "--runs-per-move", "3")
    # --backend's command default is auto; the dataclass's (library callers) is torch.
    assert w.config == WorkerConfig(server_url="http://x", search=SearchConfig(runs_per_move=3),
                                    backend="auto")
    assert parse("--threads", "2", "arena", "a", "b").process.threads == 2
    assert parse("export", "a", "b").config == cli.ExportJob("a", Path("b"))
    assert isinstance(t.config.train, TrainConfig)


def test_per_command_defaults() -> None:
    """The defaults each command had before the flags were made from the dataclasses."""
    t = parse("train").config
    assert (t.search.runs_per_move, t.search.sample_plies, t.dir, t.name) == \
        (100, 20, Path("runs/local"), "local")
    assert (t.train.trigger_examples, t.train.replay_window, t.train.samples_per_example,
            t.train.learning_rate, t.train.seed) == (4096, 100_000, 2.0, 1e-3, 0)
    # Issue 17: the best two-core run's network (3 x 32) and one self-play process per core;
    # 8 games at once at first.
    assert (t.train.blocks, t.train.filters) == (3, 32)
    assert t.num_workers == len(os.sched_getaffinity(0)) and t.parallel_games == 32
    assert t.start_games == 8
    # Issue 15: the KataGo changes won at equal time and are train's defaults (self-play's
    # search and training only: the match and CPU players keep theirs, below).
    tree = t.search.tree
    assert (t.search.full_search_fraction, t.search.forced_playouts, t.search.gumbel) == \
        (0.25, 2.0, 0)
    assert (tree.fpu_reduction, tree.fpu_reduction_root, tree.eval_cache, tree.solver_moves) == \
        (0.2, 0.0, 8192, 12)
    assert (t.train.score_weight, t.train.replay_window_start, t.train.global_pooling) == \
        (0.5, 20_000, True)
    assert parse("train", "--no-global-pooling").config.train.global_pooling is False
    sp = parse("selfplay", "--output-dir", "x").config
    assert (sp.search.full_search_fraction, sp.search.forced_playouts,
            sp.search.tree.eval_cache) == (1.0, 0.0, 0)
    assert (sp.search.runs_per_move, sp.search.sample_plies, sp.num_workers, sp.seed) == \
        (800, None, 1, None)
    w = parse("worker", "--server-url", "u").config
    assert (w.search.runs_per_move, w.grace_seconds, w.model_poll_seconds, w.upload_buffer,
            w.progress_seconds) == (800, 8.0, 30.0, 64, 60.0)
    s = parse("server").config
    assert (s.train.samples_per_example, s.train.learning_rate, s.eval_openings, s.eval_runs,
            s.max_request_bytes, s.segment_bytes, s.storage, s.model_name) == \
        (4.0, 3e-4, 8, 64, 32 << 20, 64 << 20, "runs/server", "flagz")
    a = parse("arena", "p", "q")
    assert (a.config.seed, a.config.json, a.process.log_level, a.process.threads) == \
        (0, False, "INFO", 1)
    c = parse("cpu-server")
    assert (c.gunicorn.http_threads, c.gunicorn.workers, c.gunicorn.listen.host) == \
        (8, 1, "127.0.0.1")
    # The CPU player keeps an evaluation cache across its searches, and match players search
    # as it serves (search/timed.py, served_tree_config).
    from pyhexz.search.timed import SERVED_EVAL_CACHE
    assert c.config.tree.eval_cache == a.config.tree.eval_cache == SERVED_EVAL_CACHE
    assert c.config.tree.fpu_reduction == c.config.tree.solver_moves == 0


def test_learning_switches_are_flags_and_variables(monkeypatch) -> None:
    """The switches of the training changes (playout caps, score head, growing window, global
    pooling): on in `train` by default (issue 15's ablation), off by flag or by HEXZ_*
    variable (benchmarks/ablation.py sets them by variable). A switch whose default is on is
    named for switching it off: --no-global-pooling, HEXZ_NO_GLOBAL_POOLING."""
    on = parse("train").config
    assert (on.search.full_search_fraction, on.search.cheap_runs, on.train.score_weight,
            on.train.replay_window_start, on.train.global_pooling) == (0.25, 25, 0.5, 20000, True)
    off = parse("train", "--full-search-fraction", "1", "--score-weight", "0",
                "--replay-window-start", "none", "--no-global-pooling").config
    assert (off.search.full_search_fraction, off.search.cheap_runs_per_move,
            off.train.score_weight, off.train.replay_window_start,
            off.train.global_pooling) == (1.0, None, 0.0, None, False)
    for name, value in (("HEXZ_FULL_SEARCH_FRACTION", "0.5"), ("HEXZ_SCORE_WEIGHT", "1"),
                        ("HEXZ_REPLAY_WINDOW_START", "5000"), ("HEXZ_NO_GLOBAL_POOLING", "1")):
        monkeypatch.setenv(name, value)
    env = parse("train").config
    assert (env.search.full_search_fraction, env.train.score_weight,
            env.train.replay_window_start, env.train.global_pooling) == (0.5, 1.0, 5000, False)
    # The server's network is plain unless asked: there the switch is --global-pooling.
    assert parse("server").config.train.global_pooling is False
    # The worker's self-play searches with the same settings.
    assert parse("worker", "--server-url", "u").config.search.full_search_fraction == 0.5


def test_search_options_are_flags_of_the_commands_that_search(monkeypatch) -> None:
    """The tree options (issue 15) for every searcher; forced playouts and the Gumbel root,
    which change what self-play learns, for the self-play commands only."""
    from pyhexz.search.driver import TreeConfig
    tree = ["--fpu-reduction", "0.2", "--fpu-reduction-root", "0.1", "--eval-cache", "512",
            "--solver-moves", "12", "--solver-budget", "999"]
    want = TreeConfig(fpu_reduction=0.2, fpu_reduction_root=0.1, eval_cache=512,
                      solver_moves=12, solver_budget=999)
    t = parse("train", *tree, "--gumbel", "16", "--forced-playouts", "0").config
    assert t.search.tree == want and t.search.gumbel == 16 and t.search.forced_playouts == 0
    assert parse("selfplay", "--output-dir", "x", *tree).config.search.tree == want
    assert parse("worker", "--server-url", "u", "--forced-playouts", "2").config.search \
        .forced_playouts == 2.0
    assert parse("arena", "a", "b", *tree).config.tree == want
    assert parse("cpu-server", *tree).config.tree == want
    with pytest.raises(SystemExit):
        parse("arena", "a", "b", "--gumbel", "16")
    monkeypatch.setenv("HEXZ_EVAL_CACHE", "64")
    monkeypatch.setenv("HEXZ_GUMBEL", "8")
    monkeypatch.setenv("HEXZ_FORCED_PLAYOUTS", "0")
    t = parse("train").config
    assert (t.search.tree.eval_cache, t.search.gumbel) == (64, 8)
    assert parse("selfplay", "--output-dir", "x").config.search.tree.solver_moves == 0, \
        "off unless asked for, but in train (the ablation's winners)"


def test_cpu_server_port_defaults_to_cloud_runs(monkeypatch) -> None:
    monkeypatch.setenv("PORT", "9123")
    assert parse("cpu-server").gunicorn.listen.port == 9123
    monkeypatch.setenv("HEXZ_PORT", "9124")
    assert parse("cpu-server").gunicorn.listen.port == 9124
    assert parse("cpu-server", "--port", "9125").gunicorn.listen.port == 9125


def test_variables_of_nested_settings_and_the_renamed_ones(monkeypatch) -> None:
    monkeypatch.setenv("HEXZ_MINIBATCH_SIZE", "300")
    monkeypatch.setenv("HEXZ_WAL_SEGMENT_BYTES", "8192")
    monkeypatch.setenv("HEXZ_NO_AUGMENT", "1")
    monkeypatch.setenv("HEXZ_THREADS", "3")
    a = parse("server")
    assert (a.config.train.trigger_examples, a.config.segment_bytes, a.config.train.augment,
            a.process.threads) == (300, 8192, False, 3)
    assert parse("server", "--minibatch-size", "400").config.train.trigger_examples == 400


def test_help_shows_defaults_and_variables(capsys) -> None:
    with pytest.raises(SystemExit, match="^0$"):
        parse("train", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 100) [HEXZ_RUNS_PER_MOVE]" in out
    assert "(default: 4096) [HEXZ_MINIBATCH_SIZE]" in out
    assert "--no-augment" in out and "[HEXZ_NO_AUGMENT]" in out
    with pytest.raises(SystemExit, match="^0$"):
        parse("server", "--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 8) [HEXZ_EVAL_OPENINGS]" in out and "[HEXZ_WAL_SEGMENT_BYTES]" in out
    # The global flags too; --threads is named by the rule like every other (no exception).
    with pytest.raises(SystemExit, match="^0$"):
        parse("--help")
    out = " ".join(capsys.readouterr().out.split())
    assert "(default: 1) [HEXZ_THREADS]" in out and "(default: INFO) [HEXZ_LOG_LEVEL]" in out


def test_the_2023_form_prints_the_full_help(capsys) -> None:
    from pyhexz import hexz
    assert hexz.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(hexz.USAGE)
    assert "usage: pyhexz" in out and "self-play games written to files" in out
    with pytest.raises(SystemExit, match="^0$"):
        hexz.main(["--mode=selfplay", "--help"])
    assert "--runs-per-move" in capsys.readouterr().out
    assert hexz.main([]) == 2 and capsys.readouterr().err.strip() == hexz.USAGE


@pytest.mark.parametrize("argv, env, message", [
    (["selfplay", "--output-dir", "x", "--runs-per-move", "0"], {},
     "argument --runs-per-move: runs_per_move must be >= 1, got 0"),
    (["worker"], {}, "--server-url (or HEXZ_SERVER_URL) is required"),
    (["server", "--storage", "gs://b/p"], {}, "set --state-dir (HEXZ_STATE_DIR)"),
    (["server", "--minibatch-size", "100", "--max-pending", "50"], {},
     "max_pending (50) must be at least the minibatch size (100)"),
    (["train"], {"HEXZ_SAMPLES_PER_EXAMPLE": "lots"},
     "HEXZ_SAMPLES_PER_EXAMPLE='lots' is not a valid value for --samples-per-example"),
    (["cpu-server", "--redis-url", "redis://x"], {}, "needs a model name"),
    (["train", "--full-search-fraction", "0"], {},
     "argument --full-search-fraction: full_search_fraction must be in (0, 1], got 0.0"),
    (["train", "--runs-per-move", "10", "--cheap-runs-per-move", "20"], {},
     "cheap_runs_per_move (20) must not exceed runs_per_move (10)"),
    (["train", "--gumbel", "16", "--forced-playouts", "2"], {}, "exclude each other"),
    (["train", "--gumbel", "16"], {}, "with --gumbel, pass --forced-playouts 0"),
    (["arena", "a", "b"], {"HEXZ_SOLVER_BUDGET": "0"}, "solver_budget must be >= 1"),
])
def test_bad_values_are_one_line_and_exit_2(argv, env, message) -> None:
    r = subprocess.run([sys.executable, "-m", "pyhexz", *argv], cwd=REPO_ROOT,
                       env=child_env(**env), capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    errors = [line for line in r.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], r.stderr


def test_a_bad_variable_is_blamed_on_the_command_run_and_stops_only_it() -> None:
    """HEXZ_EVAL_RUNS is a `server` setting: `selfplay` does not read it and runs; `server`
    names itself in the error."""
    env = child_env(HEXZ_EVAL_RUNS="many")
    ok = subprocess.run([sys.executable, "-m", "pyhexz", "selfplay", "--help"], cwd=REPO_ROOT,
                        env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "pyhexz", "server"], cwd=REPO_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    errors = [line for line in bad.stderr.splitlines() if "error:" in line]
    assert bad.returncode == 2 and len(errors) == 1, bad.stderr
    assert errors[0].startswith("pyhexz server: error: HEXZ_EVAL_RUNS='many'"), errors


def test_server_config_from_env_without_the_cli() -> None:
    """Gunicorn's create_app() reads the same settings as `pyhexz server`, without the CLI."""
    code = (
        "import sys\n"
        "from pyhexz.training_server.app import config_from_env\n"
        "c = config_from_env()\n"
        "assert 'pyhexz.cli' not in sys.modules, 'the CLI was imported'\n"
        "print(c.train.trigger_examples, c.segment_bytes, c.eval_openings, c.train.augment)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True,
                       text=True, timeout=120,
                       env=child_env(HEXZ_MINIBATCH_SIZE="150", HEXZ_WAL_SEGMENT_BYTES="4096",
                                     HEXZ_NO_AUGMENT="true"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["150", "4096", "8", "False"]


def test_server_config_from_env_is_what_the_flags_give(monkeypatch, tmp_path: Path) -> None:
    from pyhexz.training_server.config import ServerConfig
    env = {"HEXZ_STORAGE": str(tmp_path), "HEXZ_MINIBATCH_SIZE": "150", "HEXZ_BLOCKS": "2",
           "HEXZ_EVAL_OPENINGS": "0", "HEXZ_AUTH_TOKEN": "t"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert ServerConfig.from_env(env) == parse("server").config


def test_nothing_under_training_server_imports_the_cli() -> None:
    for path in (REPO_ROOT / "src/pyhexz/training_server").rglob("*.py"):
        assert not re.search(r"pyhexz\.cli\b|from pyhexz import cli", path.read_text()), path


def all_variables() -> set[str]:
    """Every HEXZ_* variable a command reads: one per flag, the global flags included."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    names = set()
    for p in [parser, *sub.choices.values()]:
        for action in p._actions:
            names.update(re.findall(r"\[(HEXZ_[A-Z0-9_]+)\]", action.help or ""))
    return names


# Variables of scripts, not of pyhexz commands: each with the file that reads it.
SCRIPT_VARIABLES = {"HEXZ_VENV": "scripts/setup.sh", "HEXZ_TEST_DEVICE": "tests/conftest.py"}


def test_every_variable_in_the_docs_is_a_flag() -> None:
    known = all_variables()
    assert {"HEXZ_RUNS_PER_MOVE", "HEXZ_THREADS", "HEXZ_WAL_SEGMENT_BYTES"} <= known
    for name, script in SCRIPT_VARIABLES.items():
        assert name in (REPO_ROOT / script).read_text(), f"{script} no longer reads {name}"
    docs = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
    for doc in docs:
        named = set(re.findall(r"HEXZ_[A-Z0-9_]*[A-Z0-9]", doc.read_text()))
        unknown = named - known - set(SCRIPT_VARIABLES)
        assert not unknown, f"{doc.name} names {sorted(unknown)}, which no command reads"


def test_flags_need_no_optional_extra() -> None:
    """Settings live in modules that import neither redis nor requests (the `worker` extra), so
    every command keeps its flags without them; only running the worker needs them, and then
    it is the import of its job module that fails (pyhexz.cli.main names the extra)."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('redis', 'requests'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from pyhexz import cli\n"
        "p = cli.build_parser()\n"
        "assert p.parse_args(['train', '--runs-per-move', '3']).config.search.runs_per_move == 3\n"
        "assert p.parse_args(['worker', '--server-url', 'http://x']).config.server_url == 'http://x'\n"
        "try:\n"
        "    import pyhexz.worker.job\n"
        "except ModuleNotFoundError as e:\n"
        "    print('missing', e.name)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, env=child_env(),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "missing" and r.stdout.split()[1] in ("redis", "requests")
