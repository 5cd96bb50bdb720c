"""benchmarks/gpu_check.sh: its dry run (the CPU, tiny sizes) goes through every step and prints
every figure line, so the GPU run that only a GPU machine can make is not its first run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import child_env, stop_processes

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "benchmarks" / "gpu_check.sh"
BENCH = REPO_ROOT / "benchmarks" / "gpu_bench.py"
NUMBER = r"[0-9.e+-]+"


def run(args: list[str], **env: str) -> tuple[int, str]:
    """Runs a command in its own session (its children stopped with it); (status, output)."""
    proc = subprocess.Popen(args, cwd=REPO_ROOT, env=child_env(PYTHON=sys.executable, **env),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=900)
    except subprocess.TimeoutExpired:
        stop_processes([proc])
        pytest.fail(f"{args} did not finish in 900 s")
    return proc.returncode, out


@pytest.mark.slow
def test_dry_run_prints_every_figure(tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    status, out = run(["bash", str(SCRIPT), "--dry-run"], OUT=str(out_dir))
    assert status == 0, out[-6000:]
    lines = [line for line in out.splitlines() if line.startswith(("FIGURE ", "SKIP ", "FAIL "))]
    assert not [line for line in lines if line.startswith("FAIL")], out[-6000:]

    def having(pattern: str) -> list[str]:
        return [line for line in lines if re.fullmatch(pattern, line)]

    # Three of the network tests, on the CPU.
    assert len(having(r"FIGURE tests device=cpu rc=0 3 passed, \d+ deselected.* in .*")) == 1
    # The command itself: four games written.
    assert len(having(r"FIGURE selfplay-cli device=cpu rc=0 files=4 selfplay: 4 games, \d+ "
                      r"examples in .*")) == 1
    for net in ("2x16", "1x8"):
        for batch in (4, 8):
            assert len(having(
                rf"FIGURE selfplay net={net} batch={batch} runs_per_move=4 "
                rf"examples_per_s={NUMBER} simulations_per_s={NUMBER} nn_share={NUMBER} "
                rf"moves=[1-9]\d* seconds={NUMBER}")) == 1, (net, batch)
        assert len(having(rf"FIGURE train net={net} batch=16 samples_per_s={NUMBER} "
                          rf"steps=[1-9]\d* seconds={NUMBER} augment=True")) == 1, net
    # torch vs onnxruntime: measured where onnxruntime is installed, else one line says why.
    onnx = having(rf"FIGURE onnx net=\S+ batch=4 provider=CPUExecutionProvider "
                  rf"torch_ms={NUMBER} onnxruntime_ms={NUMBER} speedup={NUMBER} "
                  rf"max_abs_diff=({NUMBER}) exporter=\S+")
    skipped = having(r"SKIP onnx: .+")
    assert (len(onnx), len(skipped)) in ((2, 0), (0, 1)), lines
    for line in onnx:
        assert float(line.split("max_abs_diff=")[1].split()[0]) < 1e-4, line
    assert len(lines) == 2 + 4 + 2 + max(len(onnx), len(skipped))

    # $OUT gets the whole output and the figure lines.
    kept = (out_dir / "gpu_figures.txt").read_text().splitlines()
    assert [line for line in kept if not line.startswith("#")] == lines
    assert (out_dir / "gpu_check.log").read_text() == out
    assert sorted(p.name for p in out_dir.iterdir()) == ["gpu_check.log", "gpu_figures.txt"]


def test_bad_arguments_get_one_line() -> None:
    status, out = run(["bash", str(SCRIPT), "--fast"])
    assert status == 2
    assert out == "gpu_check.sh: unknown argument '--fast' (usage: gpu_check.sh [--dry-run])\n"
    status, out = run([sys.executable, str(BENCH), "--dry-run", "--sections", "selfplay,gpu"])
    assert status == 2 and "Traceback" not in out
    assert out.splitlines()[-1].endswith("unknown section(s) gpu; choose from selfplay, train, "
                                         "onnx")


def test_the_real_run_needs_a_gpu() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the real run would run")
    status, out = run([sys.executable, str(BENCH), "--sections", "train"])
    assert status == 2
    assert re.fullmatch(r"gpu_bench: error: device cuda, but torch \S+ sees no CUDA device "
                        r"\(--dry-run runs on the CPU\)\n", out), out
