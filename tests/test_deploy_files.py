"""The deployment files: Dockerfiles, .dockerignore, docker-compose.yml, deploy/*.sh.

No Docker engine runs here, so what the images would do is checked piece by piece: every path
the Dockerfiles COPY exists and survives .dockerignore; the build steps (pip install of the
build context, compiling the Cython code) work in a fresh virtual environment from exactly the
copied files; the commands the images and the compose file run start and answer; every HEXZ_*
variable the compose file and the scripts set is a flag of the command that reads it; the
deploy scripts parse and, in a dry run, issue the gcloud commands the deployment needs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest
import requests

from conftest import child_env, free_port, stop_processes

REPO = Path(__file__).resolve().parents[1]
DOCKERFILES = ["Dockerfile.server", "Dockerfile.worker"]
SCRIPTS = sorted((REPO / "deploy").glob("*.sh"))


# --------------------------------------------------------------------------
# Reading Dockerfiles and .dockerignore
# --------------------------------------------------------------------------


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not buf:
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        buf += line
        if buf.strip():
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def stages(path: Path) -> list[dict]:
    result = []
    for word, args in instructions(path):
        if word == "FROM":
            parts = args.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            result.append({"image": parts[0], "name": name, "steps": []})
        elif result:
            result[-1]["steps"].append((word, args))
    return result


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(x, str) for x in value), args
    return value


def env_of(stage: dict) -> dict[str, str]:
    env = {}
    for word, args in stage["steps"]:
        if word == "ENV":
            for item in shlex.split(args):
                k, _, v = item.partition("=")
                env[k] = v
    return env


class DockerIgnore:
    """.dockerignore semantics: patterns match context-relative paths (or a parent directory
    of them), `**` spans directories, `!` re-includes, the last matching pattern wins."""

    def __init__(self, path: Path) -> None:
        self.rules = []
        for line in path.read_text().splitlines():
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            keep = line.startswith("!")
            pattern = line.lstrip("!").strip("/")
            rx = re.escape(pattern).replace(r"\*\*", "\0").replace(r"\*", "[^/]*")
            rx = rx.replace(r"\?", "[^/]").replace("\0/", "(.*/)?").replace("\0", ".*")
            self.rules.append((re.compile(rx + "$"), keep))

    def excluded(self, rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
        result = False
        for rx, keep in self.rules:
            if any(rx.match(c) for c in candidates):
                result = not keep
        return result


def copied_files(dockerfile: Path, ignore: DockerIgnore) -> dict[str, list[str]]:
    """For each COPY source from the build context: the files it brings in."""
    out = {}
    for stage in stages(dockerfile):
        for word, args in stage["steps"]:
            if word != "COPY" or args.startswith("--from"):
                continue
            *sources, _dest = shlex.split(args)
            for src in sources:
                path = REPO / src
                assert path.exists(), f"{dockerfile.name}: COPY {src}: no such path"
                files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
                rels = [p.relative_to(REPO).as_posix() for p in files]
                out[src] = [r for r in rels if not ignore.excluded(r)]
    return out


@pytest.fixture(scope="module")
def ignore() -> DockerIgnore:
    return DockerIgnore(REPO / ".dockerignore")


def tracked(prefix: str) -> list[str]:
    r = subprocess.run(["git", "ls-files", prefix], cwd=REPO, capture_output=True, text=True)
    return r.stdout.split() if r.returncode == 0 else []


# --------------------------------------------------------------------------
# Dockerfiles
# --------------------------------------------------------------------------


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_copies_existing_paths_and_builds_in_stages(name: str, ignore) -> None:
    path = REPO / name
    st = stages(path)
    assert len(st) >= 2, "a build stage and a runtime stage"
    build, final = st[0], st[-1]
    assert final["image"].endswith("-slim"), final["image"]
    names = {s["name"] for s in st if s["name"]}
    for s in st:
        for word, args in s["steps"]:
            if word == "COPY" and args.startswith("--from="):
                assert args.split()[0].split("=", 1)[1] in names, args
    # The build stage compiles pyhexz (Cython) from the copied sources and imports the result;
    # the runtime stage has no compiler and does not run as root.
    runs = " ".join(a for w, a in build["steps"] if w == "RUN")
    assert "gcc" in runs and re.search(r'--no-build-isolation (\.|"\.\[[a-z,]+\]")', runs)
    # Versions exactly as CI tests them: torch's CPU build at the lock's version, then
    # everything else constrained by the lock.
    assert "requirements.lock" in {p for w, a in build["steps"] if w == "COPY"
                                   for p in shlex.split(a)[:-1]}
    assert "download.pytorch.org/whl/cpu" in runs and "'^torch==' requirements.lock" in runs
    pips = [a for w, a in build["steps"] if w == "RUN" and "pip install" in a
            and "--index-url" not in a]
    assert pips and all("-c requirements.lock" in a for a in pips), pips
    assert re.search(r"import pyhexz\.game\.board, pyhexz\.search\.mcts", runs)
    final_runs = " ".join(a for w, a in final["steps"] if w == "RUN")
    assert "gcc" not in final_runs and "apt-get install" not in final_runs
    users = [a for w, a in final["steps"] if w == "USER"]
    assert users and users[-1] not in ("root", "0"), users
    copies = copied_files(path, ignore)
    assert all(copies.values()), {k: v for k, v in copies.items() if not v}
    # Everything `pip install .` reads is in the context; no build output from a checkout is.
    files = {f for fs in copies.values() for f in fs}
    for needed in ["pyproject.toml", "setup.py", "README.md", "src/pyhexz/game/board.pyx",
                   "src/pyhexz/game/board.pxd", "src/pyhexz/search/mcts.pyx",
                   "src/pyhexz/data/flagz_initial_v1.jsonl"]:
        assert needed in files, needed
    missing = [f for f in tracked("src") if f not in files]
    assert not missing, f"tracked sources not copied into the image: {missing}"
    assert not [f for f in files if f.endswith((".so", ".c")) or "__pycache__" in f]
    for word, args in final["steps"]:
        if word in ("CMD", "ENTRYPOINT"):
            exec_form(args)   # exec form: the process gets the signals (SIGTERM on Cloud Run)


def test_dockerignore_keeps_the_context_small(ignore) -> None:
    for rel in [".venv/bin/python", "runs/learn2/x", ".git/HEAD", "tests/test_proto.py",
                "src/pyhexz/game/board.c", "src/pyhexz/search/mcts.cpython-311-x86_64-linux-gnu.so",
                "src/pyhexz/nn/__pycache__/network.cpython-311.pyc", "benchmarks/bench_board.py"]:
        assert ignore.excluded(rel), rel
    for rel in ["src/pyhexz/game/board.pyx", "src/pyhexz/cli.py", "pyproject.toml", "setup.py"]:
        assert not ignore.excluded(rel), rel


# --------------------------------------------------------------------------
# The images' build and commands, in a fresh virtual environment
# --------------------------------------------------------------------------


def _wait_healthy(proc: subprocess.Popen, url: str, seconds: float = 90) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        try:
            if requests.get(url + "/healthz", timeout=5).status_code == 200:
                return
        except requests.RequestException:   # not listening yet, or still loading the app
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} not healthy after {seconds} s")


def _dependency_scripts(venv: Path) -> None:
    """The console scripts of the dependencies (gunicorn, ...), as pip would have installed
    them into the new venv: this venv's scripts with the new interpreter in their #! line."""
    here = Path(sys.executable).parent
    for script in here.iterdir():
        target = venv / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        head = script.read_bytes()[:200]
        if head.startswith(b"#!") and b"python" in head.split(b"\n", 1)[0]:
            text = script.read_text().split("\n", 1)
            target.write_text(f"#!{venv / 'bin' / 'python'}\n" + text[1])
            target.chmod(0o755)


@pytest.mark.slow
def test_image_build_and_commands_work_from_a_fresh_venv(tmp_path: Path, ignore,
                                                          fixture_states) -> None:
    """The build steps on exactly the files the Dockerfile copies, in a new virtualenv, then
    the commands the images and docker-compose.yml run. Dependencies come from this venv's
    site-packages (the image downloads them; nothing can be downloaded here)."""
    import yaml

    ctx = tmp_path / "context"
    for files in copied_files(REPO / "Dockerfile.server", ignore).values():
        for rel in files:
            (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, ctx / rel)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    Path(site, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # The image installs the lock's setuptools over the venv's bundled one (which is too old
    # for pyproject's SPDX license): here the dependencies' copy takes its place.
    subprocess.run([py, "-m", "pip", "uninstall", "-y", "-q", "--disable-pip-version-check",
                    "setuptools"], check=True, capture_output=True)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("HEXZ_", "PYTHON", "VIRTUAL_ENV")) and k != "PORT"}
    # Unoptimised extensions (setup.py's HEXZ_BUILD_CFLAGS): this checks that they build and
    # import from the copied files, not their speed, and gcc -O0 takes a fraction of the time.
    env.update(PATH=f"{venv / 'bin'}:{env.get('PATH', '')}", HOME=str(home),
               PYTHONNOUSERSITE="1", HEXZ_LOG_LEVEL="WARNING", HEXZ_BUILD_CFLAGS="-O0")
    r = subprocess.run([py, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--ignore-installed", "--disable-pip-version-check", str(ctx)],
                       cwd=home, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    _dependency_scripts(venv)
    r = subprocess.run([py, "-c", "import pyhexz, pyhexz.game.board, pyhexz.search.mcts, "
                        "pyhexz.cpu_server, pyhexz.worker.job; "
                        "print(pyhexz.__file__, pyhexz.game.board.__file__)"],
                       cwd=home, env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert all(p.startswith(str(venv)) for p in r.stdout.split()), r.stdout

    worker = stages(REPO / "Dockerfile.worker")[-1]
    entry = next(exec_form(a) for w, a in worker["steps"] if w == "ENTRYPOINT")
    r = subprocess.run(entry + ["--help"], cwd=home, env=env, capture_output=True, text=True)
    assert r.returncode == 0 and "--server-url" in r.stdout, r.stderr[-3000:]

    server = stages(REPO / "Dockerfile.server")[-1]
    # The image's ENV, its virtualenv here; listening on localhost only, on free ports.
    image_env = {k: os.path.expandvars(v.replace("/opt/venv", str(venv))).replace(
        "$PATH", env["PATH"]) for k, v in env_of(server).items()}
    assert image_env["PATH"].startswith(str(venv / "bin"))
    server_env = {**env, **image_env, "HEXZ_HOST": "127.0.0.1"}
    cmd = next(exec_form(a) for w, a in server["steps"] if w == "CMD")
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    cpu_cmd = compose["services"]["cpu"]["command"]
    ports = [free_port(), free_port()]
    procs = []
    try:
        if (REPO / "src/pyhexz/training_server/app.py").exists():
            procs.append(subprocess.Popen(
                cmd, cwd=home, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                start_new_session=True,
                env={**server_env, "PORT": str(ports[0]), "HEXZ_STORAGE": str(tmp_path / "st")}))
        cpu = subprocess.Popen(cpu_cmd, cwd=home, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               env={**server_env, "PORT": str(ports[1])})
        procs.append(cpu)
        if len(procs) == 2:
            _wait_healthy(procs[0], f"http://127.0.0.1:{ports[0]}")
        url = f"http://127.0.0.1:{ports[1]}"
        _wait_healthy(cpu, url)
        from pyhexz import hexz_pb2 as pb
        req = pb.SuggestMoveRequest(max_think_time_ms=50, game_engine_state=fixture_states[0])
        r = requests.post(url + "/hexz/cpu/suggest", data=req.SerializeToString(), timeout=30,
                          headers={"Content-Type": "application/x-protobuf"})
        assert r.status_code == 200, r.text
        assert pb.SuggestMoveResponse.FromString(r.content).move.cell_type == pb.Field.FLAG
    finally:
        stop_processes(procs)


# --------------------------------------------------------------------------
# Dependencies: pyproject.toml's ranges, requirements.lock's pins, and who installs them
# --------------------------------------------------------------------------

# The platform requirements.lock is compiled for: CPython 3.11 on Linux x86-64.
LOCK_ENV = {"python_version": "3.11", "python_full_version": "3.11.0", "os_name": "posix",
            "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
            "implementation_name": "cpython", "platform_python_implementation": "CPython",
            "extra": ""}
CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def _pyproject() -> dict:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _lock() -> dict[str, str]:
    """requirements.lock as {canonical name: version}; every line an exact pin."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep and version and ";" not in line, f"not an exact pin: {line!r}"
            pins[canonicalize_name(name)] = version
    return pins


def test_lock_pins_every_requirement_of_pyproject_within_its_range() -> None:
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pyproject = _pyproject()
    project, pins = pyproject["project"], _lock()
    extras = project["optional-dependencies"]
    assert {"server", "worker", "gcs", "all", "dev"} <= set(extras)
    # The core is what train/selfplay/arena/export need; the services' packages are extras.
    core = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    assert core == {"numpy", "protobuf", "torch"}, core
    for extra, reqs in [("", project["dependencies"]), *extras.items()]:
        for req in map(Requirement, reqs):
            name = canonicalize_name(req.name)
            if name == "pyhexz":   # [all] and [dev] name other extras of pyhexz itself
                assert req.extras <= set(extras), req
                continue
            if req.marker and not req.marker.evaluate(LOCK_ENV):
                continue
            assert name in pins, f"[{extra}] {req}: not in requirements.lock"
            assert req.specifier.contains(pins[name], prereleases=True), \
                f"[{extra}] {req}: the lock has {pins[name]}"
    # torch: one pin, the one [tool.uv] constrains the lock to; none of its CUDA packages.
    torch_pin = [c for c in pyproject["tool"]["uv"]["constraint-dependencies"]
                 if c.startswith("torch==")]
    assert torch_pin == [f"torch=={pins['torch']}"], torch_pin
    assert not [n for n in pins if n.startswith(CUDA_PREFIXES)]
    assert "uv pip compile pyproject.toml -o requirements.lock" in \
        (REPO / "requirements.lock").read_text().split("\n", 3)[1]


def test_lock_holds_the_dependencies_of_what_it_pins() -> None:
    """Transitive packages are pinned too: every requirement of every locked package that is
    installed here (the lock's versions, in CI) is itself in the lock."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = _lock()
    missing = set()
    for name in pins:
        try:
            requires = metadata.distribution(name).requires or []
        except metadata.PackageNotFoundError:
            continue
        for req in map(Requirement, requires):
            dep = canonicalize_name(req.name)
            if req.marker and not req.marker.evaluate(LOCK_ENV):
                continue
            if dep not in pins and not dep.startswith(CUDA_PREFIXES):
                missing.add(f"{dep} (of {name})")
    assert not missing, f"not in requirements.lock: {sorted(missing)}"


def test_setup_script_and_conda_environment_install_from_the_lock() -> None:
    setup = (REPO / "scripts/setup.sh").read_text()
    assert "pip install -r requirements.lock" in setup
    assert "grep -E '^torch==' requirements.lock" in setup   # torch first, at the lock's pin
    assert "requirements-dev.txt" not in setup
    import yaml

    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-r requirements.lock" in pip
    assert not [x for x in pip if "==" in x or ">=" in x], "versions belong in the lock"
    # The tests import yaml without a skip: the lock (so the conda environment) has PyYAML.
    assert re.search(r"(?m)^pyyaml==", (REPO / "requirements.lock").read_text(), re.I)
    assert (REPO / "requirements-dev.txt").read_text().split()[:2] == ["-r", "requirements.lock"]
    ci = (REPO / ".ci/run").read_text()
    assert "bash scripts/setup.sh && .venv/bin/pytest" in ci
    assert ".venv/bin/ruff check" in ci and ".venv/bin/mypy" in ci


def test_setup_script_does_nothing_when_nothing_changed(tmp_path: Path) -> None:
    """With the stamp matching and the extensions newer than their sources, setup.sh runs no
    pip, no build and no torch import (it used to take two minutes doing nothing). Run against
    this interpreter's venv only when setup.sh made it."""
    venv = Path(sys.prefix)
    stamp = venv / ".pyhexz-setup"
    want = subprocess.run("cat requirements.lock pyproject.toml setup.py | sha256sum",
                          shell=True, cwd=REPO, capture_output=True, text=True).stdout.split()[0]
    if not stamp.is_file() or stamp.read_text().strip() != want:
        pytest.skip("this interpreter's environment was not made by scripts/setup.sh")
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    env = child_env(HEXZ_VENV=str(venv))

    def setup() -> str:
        r = subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0, r.stderr
        return r.stdout

    setup()   # builds whatever this checkout has not built yet
    out = setup()
    assert "dependencies up to date" in out and "extensions up to date" in out, out
    assert "installing" not in out and "building" not in out
    assert "torch" in out.splitlines()[-1]   # the versions, read without importing torch


# `python -m pyhexz ARGV` as if the packages `blocked` (dotted prefixes) were not installed,
# after importing `modules`.
_BLOCK = """
import importlib, importlib.abc, runpy, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if any(name == b or name.startswith(b + ".") for b in {blocked!r}):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
for m in {modules!r}:
    importlib.import_module(m)
sys.argv = ["pyhexz", *{argv!r}]
runpy.run_module("pyhexz", run_name="__main__", alter_sys=True)
"""


def _run_without(blocked: list[str], argv: list[str], cwd: Path,
                 modules: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = child_env()
    code = _BLOCK.format(blocked=blocked, argv=argv, modules=modules)
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("module", ["pyhexz.game.board", "pyhexz.search.mcts"])
def test_stubs_of_the_compiled_modules_name_their_public_api(module: str) -> None:
    """board.pyi and mcts.pyi (what mypy and editors see) keep up with the .pyx: every public
    module name, and every public method and attribute of its classes, is in the stub."""
    import ast
    import importlib

    mod = importlib.import_module(module)
    compiled = Path(mod.__file__)   # board.cpython-311-x86_64-linux-gnu.so: the stub is board.pyi
    tree = ast.parse(compiled.with_name(compiled.name.split(".", 1)[0] + ".pyi").read_text())

    def names(body) -> set[str]:
        out = set()
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                out.add(node.name)
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                out.add(node.target.id)
            elif isinstance(node, ast.Assign):
                out.update(t.id for t in node.targets if isinstance(t, ast.Name))
        return out

    stub = names(tree.body)
    classes = {n.name: names(n.body) for n in tree.body if isinstance(n, ast.ClassDef)}
    public = {n for n, v in vars(mod).items() if not n.startswith("_")
              and getattr(v, "__module__", module) == module and not isinstance(v, type(ast))}
    assert public - stub == set(), f"{module}: not in the stub"
    for name, members in classes.items():
        cls = getattr(mod, name)
        if cls.__module__ != module or issubclass(cls, Exception):
            continue
        api = {n for n in dir(cls) if not n.startswith("_")}
        assert api - members == set(), f"{module}.{name}: not in the stub"


# The services' packages: everything the extras install (google.protobuf is core).
SERVICE_MODULES = ["flask", "werkzeug", "gunicorn", "prometheus_client", "redis", "requests",
                   "google.cloud", "google.api_core", "google.auth"]


def test_the_core_commands_need_no_extra(tmp_path: Path) -> None:
    """`pip install pyhexz` is enough for train, selfplay, arena and export: their modules and
    the command line import none of the services' packages."""
    modules = ("pyhexz.train.local", "pyhexz.train.selfplay", "pyhexz.train.arena",
               "pyhexz.search.players", "pyhexz.nn")
    for command in ("train", "selfplay", "arena", "export"):
        r = _run_without(SERVICE_MODULES, [command, "--help"], tmp_path, modules)
        assert r.returncode == 0 and "usage:" in r.stdout, (command, r.stderr[-3000:])


@pytest.mark.parametrize("argv, blocked, extra", [
    (["worker", "--server-url", "http://127.0.0.1:9"], ["redis", "requests"], "worker"),
    (["server"], ["flask", "werkzeug", "redis"], "server"),
    (["cpu-server"], ["flask", "werkzeug", "gunicorn"], "server"),
])
def test_a_command_without_its_extra_says_which_to_install(argv, blocked, extra,
                                                           tmp_path: Path) -> None:
    r = _run_without(blocked, argv, tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and f"pip install 'pyhexz[{extra}]'" in lines[0], r.stderr[-3000:]
    assert lines[0].startswith(f"pyhexz {argv[0]}: error: needs "), lines


# --------------------------------------------------------------------------
# HEXZ_* names against the command line
# --------------------------------------------------------------------------


def env_names(command: str) -> set[str]:
    """The HEXZ_* variables `pyhexz COMMAND` reads: one per flag (cli._EnvDefaults)."""
    from pyhexz import cli
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    names = set()
    for p in (parser, sub.choices[command]):
        for action in p._actions:
            for opt in action.option_strings:
                if opt.startswith("--"):
                    names.add("HEXZ_" + opt[2:].upper().replace("-", "_"))
    return names


def test_compose_file_runs_the_whole_stack() -> None:
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "server", "worker", "cpu", "gcs"} <= set(services)
    assert services["server"]["build"]["dockerfile"] == "Dockerfile.server"
    assert services["worker"]["build"]["dockerfile"] == "Dockerfile.worker"
    for s in ("server", "worker"):
        build = services[s]["build"]
        assert (REPO / build["context"] / build["dockerfile"]).exists()
    assert services["cpu"]["image"] == services["server"]["image"]
    assert services["cpu"]["command"][:2] == ["pyhexz", "cpu-server"]
    # The CPU player stays open to the hexz Go server, which sends no token.
    assert services["cpu"]["environment"]["HEXZ_AUTH_TOKEN"] == ""
    assert "replicas" in services["worker"]["deploy"]
    assert services["gcs"]["profiles"] == ["gcs"]
    assert "server" in services["worker"]["depends_on"]
    assert services["worker"]["environment"]["HEXZ_SERVER_URL"] == "http://server:8080"
    for service, command in [("server", "server"), ("worker", "worker"), ("cpu", "cpu-server")]:
        names = {k for k in services[service]["environment"] if k.startswith("HEXZ_")}
        unknown = names - env_names(command)
        assert not unknown, f"{service}: {unknown} are not flags of `pyhexz {command}`"


# --------------------------------------------------------------------------
# deploy/*.sh
# --------------------------------------------------------------------------


def test_deploy_scripts_parse() -> None:
    assert {p.name for p in SCRIPTS} >= {"config.sh", "infra.sh", "build.sh", "server-vm.sh",
                                         "workers.sh", "cpu-player.sh"}
    for p in SCRIPTS:
        r = subprocess.run(["bash", "-n", str(p)], capture_output=True, text=True)
        assert r.returncode == 0, (p.name, r.stderr)


def dry_run(script: str, **env) -> str:
    r = subprocess.run(["bash", str(REPO / "deploy" / script)], capture_output=True, text=True,
                       env={**os.environ, "DRY_RUN": "1", "PROJECT": "test-project", **env})
    assert r.returncode == 0, r.stderr
    return r.stdout


def flag(out: str, name: str) -> str:
    m = re.search(rf"{name} (\S+)", out)
    assert m, f"{name} missing in {out}"
    return m.group(1).replace("\\,", ",")


def set_env_names(out: str, option: str = "--set-env-vars") -> set[str]:
    return {kv.split("=", 1)[0] for kv in flag(out, option).split(",")}


def test_workers_are_a_cloud_run_job_with_tasks_parallelism_and_timeout() -> None:
    out = dry_run("workers.sh", WORKER_TASKS="20", WORKER_PARALLELISM="5",
                  WORKER_TASK_TIMEOUT="1800")
    assert "gcloud run jobs create hexz-worker" in out
    assert "gcloud run jobs execute hexz-worker" in out
    assert (flag(out, "--tasks"), flag(out, "--parallelism"), flag(out, "--task-timeout")) == \
        ("20", "5", "1800s")
    env = dict(kv.split("=", 1) for kv in flag(out, "--set-env-vars").split(","))
    assert int(env["HEXZ_MAX_SECONDS"]) < 1800          # stops before Cloud Run kills it
    assert set(env) | {"HEXZ_AUTH_TOKEN"} <= env_names("worker")
    assert flag(out, "--set-secrets").startswith("HEXZ_AUTH_TOKEN=")
    assert "worker:latest" in flag(out, "--image")


def test_cpu_player_is_a_cloud_run_service_of_the_server_image() -> None:
    out = dry_run("cpu-player.sh")
    assert "gcloud run deploy hexz-cpu" in out
    assert "server:latest" in flag(out, "--image")
    assert (flag(out, "--command"), flag(out, "--args")) == ("pyhexz", "cpu-server")
    assert set_env_names(out) <= env_names("cpu-server")
    assert "HEXZ_MODEL_PATH" in set_env_names(out) and "HEXZ_REDIS_URL" in set_env_names(out)


def test_server_vm_infra_and_build_scripts() -> None:
    out = dry_run("server-vm.sh")
    assert "gcloud compute instances create hexz-server" in out
    assert "cos-stable" in out
    script_env = set(re.findall(r"-e (HEXZ_[A-Z_]+)=", out))
    assert {"HEXZ_STORAGE", "HEXZ_STATE_DIR", "HEXZ_REDIS_URL", "HEXZ_AUTH_TOKEN"} <= script_env
    assert script_env <= env_names("server")
    out = dry_run("infra.sh")
    for needed in ["gcloud redis instances create hexz-redis",
                   "gcloud storage buckets create gs://test-project-hexz",
                   "gcloud artifacts repositories create hexz",
                   "gcloud secrets create hexz-auth-token"]:
        assert needed in out, needed
    out = dry_run("build.sh")
    for name in DOCKERFILES:
        assert f"docker build . -f {name}" in out and (REPO / name).exists()
    assert out.count("docker push") == 2
