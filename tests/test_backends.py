"""Inference backends (nn/backends.py) against the torch reference, their fallbacks, `auto`'s
choice, and the --backend setting of the commands that play."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from conftest import network_positions
from pyhexz import cli
from pyhexz.nn import HexzNet, Predictor
from pyhexz.nn import backends as be
from pyhexz.nn.backends import TOLERANCE, TorchBackend, choose_backend

pytest.importorskip("onnxruntime")

BACKEND_LOG = "pyhexz.nn.backends"


def trained_like(seed: int = 0, blocks: int = 2, filters: int = 16) -> HexzNet:
    """A HexzNet whose BatchNorm statistics and scales are not the identity, as a trained
    network's are not: exactness on a fresh net would hide a folded BatchNorm gone wrong."""
    torch.manual_seed(seed)
    net = HexzNet(blocks, filters)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    return net.eval()


@pytest.fixture(scope="module")
def positions(fixture_states) -> tuple[np.ndarray, np.ndarray]:
    """The hexz fixture positions and real positions further into games."""
    return network_positions(fixture_states, 64)


def warnings_from_backends(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == BACKEND_LOG and r.levelno >= logging.WARNING]


def test_onnx_agrees_with_torch_on_fixture_positions(positions) -> None:
    net = trained_like()
    ref, onnx = Predictor(net), Predictor(net, backend="onnx")
    assert (ref.backend.name, onnx.backend.name) == ("torch", "onnx")
    boards, masks = positions
    for n in (1, 7, len(boards)):   # the batch axis is dynamic
        (p, v), (rp, rv) = onnx(boards[:n], masks[:n]), ref(boards[:n], masks[:n])
        assert p.dtype == np.float32 and v.dtype == np.float32 and v.shape == (n,)
        np.testing.assert_allclose(p, rp, atol=1e-5, rtol=0)
        np.testing.assert_allclose(v, rv, atol=1e-5, rtol=0)
        assert (p[~masks[:n].reshape(n, -1)] == 0).all()   # illegal moves exactly 0


def test_onnx_keeps_predictor_contract_at_the_edges(positions) -> None:
    onnx = Predictor(trained_like(), backend="onnx")
    boards, masks = positions
    p, v = onnx(boards[:0], masks[:0])
    assert p.shape == (0, 220) and v.shape == (0,)
    none_legal = np.zeros_like(masks[:3])
    p, _ = onnx(boards[:3], none_legal)
    assert (p == 0).all()   # a row without a legal move: all 0, as the torch backend
    with pytest.raises(ValueError, match="boards must be a float32"):
        onnx(boards.astype(np.float64), masks)
    # Not contiguous: a view over every other position.
    p, _ = onnx(boards[::2], masks[::2])
    np.testing.assert_allclose(p, Predictor(onnx.module)(boards[::2], masks[::2])[0], atol=1e-5)


def test_int8_is_close_and_keeps_illegal_moves_at_zero(positions) -> None:
    net = trained_like()
    int8 = Predictor(net, backend="int8")
    assert int8.backend.name == "int8"
    boards, masks = positions
    (p, v), (rp, rv) = int8(boards, masks), Predictor(net)(boards, masks)
    assert np.abs(v - rv).max() <= TOLERANCE["int8"]
    assert np.abs(p - rp).max() <= TOLERANCE["int8"]
    assert (p[~masks.reshape(len(masks), -1)] == 0).all()
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)


def test_int8_leaves_the_heads_in_fp32() -> None:
    """The heads, which the search reads directly, are not quantized (FP32_PREFIXES); the
    tower, nearly all of the work, is."""
    import onnx

    from pyhexz.nn.onnxfile import POLICY_HEAD, VALUE_HEAD, export_onnx, quantize_int8
    graph = onnx.load_from_string(quantize_int8(
        export_onnx(trained_like()), *be.calibration_positions(64))).graph
    quantized = {i for n in graph.node if n.op_type == "DequantizeLinear" for i in n.output}

    def reads_quantized(prefix: str) -> list[str]:   # its weights (input 1) are int8
        return [n.name for n in graph.node if n.name.startswith(prefix)
                and n.op_type in ("Conv", "Gemm") and n.input[1] in quantized]

    assert reads_quantized(VALUE_HEAD) == reads_quantized(POLICY_HEAD) == []
    assert reads_quantized("/tower/") and reads_quantized("/stem/")


def test_int8_of_a_global_pooling_network_logs_no_quantizer_warnings(caplog) -> None:
    """onnxruntime's quantizer warns on the root logger about the rank-1 batch norm weights
    beside global pooling (it quantizes them per tensor): 8 warning lines per model in every
    self-play process of `train`, about nothing wrong. They are dropped; nothing else is."""
    from pyhexz.nn.onnxfile import export_onnx, quantize_int8

    torch.manual_seed(0)
    net = HexzNet(2, 16, global_pooling=True).eval()
    with caplog.at_level(logging.WARNING):
        quantize_int8(export_onnx(net), *be.calibration_positions(32))
        logging.getLogger().warning("another warning")
    assert not [r for r in caplog.records if "out-of-range for weight" in r.getMessage()]
    assert "another warning" in caplog.text


def test_hexz_torchscript_model_runs_on_onnx(fixtures_dir, positions) -> None:
    from pyhexz.nn import load_model
    path = fixtures_dir / "hexz_conv2d_scriptmodule.pt"
    ref, onnx = Predictor.from_path(path), Predictor.from_path(path, backend="onnx")
    assert onnx.backend.name == "onnx"
    boards, masks = positions
    np.testing.assert_allclose(onnx(boards, masks)[1], ref(boards, masks)[1], atol=1e-5)
    assert isinstance(load_model(path), torch.jit.ScriptModule)


class Unconvertible(torch.nn.Module):
    """Runs in torch, refuses the ONNX exporter (as a model with an unexportable op does)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = trained_like()

    def forward(self, board: torch.Tensor, mask: torch.Tensor):
        if torch.onnx.is_in_onnx_export():
            raise RuntimeError("aten::mystery has no ONNX symbolic")
        return self.net(board, mask)


@pytest.mark.parametrize("backend", ["onnx", "int8"])
def test_unconvertible_model_falls_back_to_torch_with_one_log_line(caplog, positions,
                                                                  backend) -> None:
    caplog.set_level(logging.INFO, logger=BACKEND_LOG)
    p = Predictor(Unconvertible(), backend=backend)
    assert p.backend.name == "torch"
    [line] = warnings_from_backends(caplog)
    assert f"backend {backend} cannot be built, using torch" in line and "mystery" in line
    boards, masks = positions
    np.testing.assert_array_equal(p(boards, masks)[0], Predictor(p.module)(boards, masks)[0])


def test_corrupt_onnx_bytes_fall_back_to_torch_with_one_log_line(caplog) -> None:
    caplog.set_level(logging.INFO, logger=BACKEND_LOG)
    p = Predictor(trained_like(), backend="onnx", onnx=b"\x08\x07 not a model")
    assert p.backend.name == "torch"
    assert len(warnings_from_backends(caplog)) == 1


def test_onnx_of_another_network_is_refused(caplog) -> None:
    """ONNX bytes that run but compute something else (a stale model.onnx) fail the agreement
    check: torch, one log line."""
    from pyhexz.nn.onnxfile import export_onnx
    caplog.set_level(logging.INFO, logger=BACKEND_LOG)
    other = export_onnx(trained_like(seed=1))
    p = Predictor(trained_like(seed=0), backend="onnx", onnx=other)
    assert p.backend.name == "torch"
    [line] = warnings_from_backends(caplog)
    assert "differs from torch" in line


def test_missing_onnxruntime_falls_back_to_torch(caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger=BACKEND_LOG)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)   # import raises ImportError
    assert Predictor(trained_like(), backend="onnx").backend.name == "torch"
    [line] = warnings_from_backends(caplog)
    assert "onnxruntime" in line


class Fake:
    """A backend with a fixed answer offset from the reference's."""

    def __init__(self, name: str, reference: TorchBackend, offset: float) -> None:
        self.name, self.reference, self.offset = name, reference, offset

    def __call__(self, boards, masks):
        p, v = self.reference(boards, masks)
        return p, v + self.offset


def test_auto_picks_the_fastest_backend_that_is_exact_enough(caplog, positions) -> None:
    caplog.set_level(logging.INFO, logger=BACKEND_LOG)
    ref = TorchBackend(trained_like(), torch.device("cpu"))
    # Times by name (an injected clock): the fastest is inexact, the next one is exact.
    times = {"torch": 3.0, "onnx": 2.0, "int8": 1.0, "broken": 0.5}
    candidates = [lambda: Fake("int8", ref, 0.5),        # beyond int8's tolerance
                  lambda: Fake("onnx", ref, 1e-6),       # within onnx's
                  lambda: Fake("broken", ref, 0.0)]      # no tolerance of its own: exact only
    boards, masks = positions
    chosen = choose_backend(ref, candidates, boards, masks,
                            measure=lambda b, *_: times[b.name])
    assert chosen.name == "broken"
    # Exactly enough: a name without a tolerance must agree exactly, which "broken" did.
    candidates[2] = lambda: Fake("broken", ref, 1e-3)
    chosen = choose_backend(ref, candidates, boards, masks, measure=lambda b, *_: times[b.name])
    assert chosen.name == "onnx"
    said = [r.getMessage() for r in caplog.records if r.name == BACKEND_LOG]
    assert sum("int8 left out" in m for m in said) == 2
    assert said[-1].startswith("backend auto chose onnx")


def test_auto_keeps_torch_when_nothing_is_faster(positions) -> None:
    ref = TorchBackend(trained_like(), torch.device("cpu"))
    boards, masks = positions
    chosen = choose_backend(ref, [lambda: Fake("onnx", ref, 0.0)], boards, masks,
                            measure=lambda b, *_: 1.0)   # a tie goes to the reference
    assert chosen is ref


def test_auto_is_chosen_once_and_within_its_tolerance(monkeypatch, positions) -> None:
    monkeypatch.setattr(be, "_auto_choice", {})
    net = trained_like()
    calls = []
    real = be.choose_backend
    monkeypatch.setattr(be, "choose_backend", lambda *a, **k: calls.append(1) or real(*a, **k))
    first = Predictor(net, backend="auto")
    assert first.backend.name in ("torch", "onnx", "int8")   # INT8_IN_AUTO: the match allowed it
    boards, masks = positions
    np.testing.assert_allclose(first(boards, masks)[1], Predictor(net)(boards, masks)[1],
                               atol=TOLERANCE.get(first.backend.name, 1e-5))
    second = Predictor(trained_like(seed=3), backend="auto")   # a newer checkpoint, same kind
    assert second.backend.name == first.backend.name and len(calls) == 1


def test_onnx_on_cuda_without_the_cuda_provider_says_so_once(caplog) -> None:
    import onnxruntime as ort
    caplog.set_level(logging.INFO, logger=BACKEND_LOG)
    be._say_no_cuda.cache_clear()
    providers = [be._providers(torch.device("cuda")) for _ in range(2)]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert providers[0][0] == "CUDAExecutionProvider"
    else:
        assert providers == [["CPUExecutionProvider"]] * 2
        assert len(warnings_from_backends(caplog)) == 1


# --------------------------------------------------------------------------
# --backend and HEXZ_BACKEND
# --------------------------------------------------------------------------

PLAYING = {"train": [], "selfplay": ["--output-dir", "x"], "worker": ["--server-url", "http://x"],
           "arena": ["a", "b"], "cpu-server": [], "server": []}


def parse(*argv: str):
    return cli.build_parser().parse_args(list(argv))


@pytest.mark.parametrize("command", sorted(PLAYING))
def test_every_command_that_plays_has_backend_default_auto(command: str, monkeypatch) -> None:
    monkeypatch.delenv("HEXZ_BACKEND", raising=False)
    assert parse(command, *PLAYING[command]).config.backend == "auto"
    assert parse(command, *PLAYING[command], "--backend", "onnx").config.backend == "onnx"


def test_backend_from_the_environment_and_flag_wins(monkeypatch) -> None:
    monkeypatch.setenv("HEXZ_BACKEND", "int8")
    assert parse("selfplay", "--output-dir", "x").config.backend == "int8"
    assert parse("selfplay", "--output-dir", "x", "--backend", "torch").config.backend == "torch"
    from pyhexz.cpu.config import CpuServerConfig
    assert CpuServerConfig.from_env({"HEXZ_BACKEND": "onnx"}).backend == "onnx"
    assert CpuServerConfig.from_env({}).backend == "auto"
    assert CpuServerConfig().backend == "torch"   # library callers: the reference


def test_bad_backend_is_one_line_and_exit_2(capsys, monkeypatch) -> None:
    with pytest.raises(SystemExit) as e:
        parse("arena", "a", "b", "--backend", "tpu")
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].endswith("backend must be one of auto, torch, onnx, int8, got tpu")
    assert "Traceback" not in "\n".join(err)
    monkeypatch.setenv("HEXZ_BACKEND", "fast")
    with pytest.raises(SystemExit):
        parse("worker", "--server-url", "http://x")
    assert "HEXZ_BACKEND='fast'" in capsys.readouterr().err
