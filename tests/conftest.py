"""Shared pytest fixtures.

The repository is cloned with the project's shared/ folder beside it, so the fixtures written by
the hexz Go server (FLAGZ.md section 10) live in `../shared/fixtures` relative to the repo root.
"""

import json
from pathlib import Path

import pytest

FIXTURES_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
INITIAL_STATES = "flagz_initial_v1.jsonl"


@pytest.fixture(autouse=True, scope="session")
def one_torch_thread():
    """One torch thread, as every pyhexz process runs (process.setup_torch): on busy cores
    torch's default thread pool makes each tiny forward pass hundreds of times slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The shared fixtures folder; tests that need it are skipped if it is missing."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"shared fixtures not found at {FIXTURES_DIR} (clone shared/ beside the repo)")
    return FIXTURES_DIR


@pytest.fixture(scope="session")
def fixture_records(fixtures_dir: Path) -> list:
    """(id, GameEngineState) for each initial position the Go server wrote."""
    from google.protobuf import json_format

    from pyhexz import hexz_pb2

    path = fixtures_dir / INITIAL_STATES
    if not path.is_file():
        pytest.skip(f"fixture file not found: {path}")
    records = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            obj = json.loads(line)
            state = json_format.ParseDict(obj["state"], hexz_pb2.GameEngineState())
            records.append((obj["id"], state))
    return records


@pytest.fixture(scope="session")
def fixture_states(fixture_records: list) -> list:
    """The 128 initial positions of flagz_initial_v1.jsonl as hexz_pb2.GameEngineState.

    Session-scoped and shared: tests must not mutate these messages (copy them first).
    """
    return [state for _, state in fixture_records]
