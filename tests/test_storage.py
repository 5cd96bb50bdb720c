"""The storage contract, run against both backends: a local directory and GCS (through the
gcp-storage-emulator package and the official google-cloud-storage client)."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid

import pytest

from pyhexz.infra.storage import (
    CheckpointExistsError,
    CheckpointRepo,
    GCSStorage,
    LocalStorage,
    StorageError,
    open_storage,
)


@pytest.fixture(params=["local", "gcs"])
def storage(request, tmp_path):
    if request.param == "local":
        return open_storage(tmp_path / "store")
    emulator = request.getfixturevalue("gcs_emulator")
    return open_storage(emulator.url(f"t-{uuid.uuid4().hex[:8]}/runs"))


def test_open_storage_picks_the_backend(tmp_path, gcs_emulator) -> None:
    assert isinstance(open_storage(tmp_path), LocalStorage)
    s = open_storage(gcs_emulator.url("some/prefix/"))
    assert isinstance(s, GCSStorage) and s.prefix == "some/prefix"
    assert s.bucket.name == gcs_emulator.bucket
    for bad in ("gs://b/../x", "gs://b//x/../../y"):
        with pytest.raises(ValueError, match="invalid storage key"):
            open_storage(bad)
    with pytest.raises(ValueError, match="invalid bucket"):
        open_storage("gs:///x")


def test_write_read_overwrite(storage) -> None:
    storage.write("a/b/c.bin", b"1")
    storage.write("a/b/c.bin", b"22")
    assert storage.read("a/b/c.bin") == b"22"
    assert storage.exists("a/b/c.bin") and not storage.exists("a/b/nothing")
    with pytest.raises(FileNotFoundError, match="a/b/missing does not exist"):
        storage.read("a/b/missing")


def test_list_gives_immediate_children_without_hidden(storage) -> None:
    for key in ("m/1/meta.json", "m/1/x/deep.bin", "m/2/model.pt", "m/10/model.pt", "m/top.bin",
                "m/.claim"):
        storage.write(key, b"x")
    assert storage.list("m") == ["1", "10", "2", "top.bin"] == storage.list("m/")
    assert storage.list("m/1") == ["meta.json", "x"]
    assert storage.list("nothing/here") == []


def test_list_holding_gives_the_children_with_that_object(storage) -> None:
    for key in ("m/1/meta.json", "m/2/model.pt", "m/10/meta.json", "m/3/x/meta.json",
                "m/meta.json", "m/.4/meta.json", "m/5/meta.json.tmp"):
        storage.write(key, b"x")
    assert storage.list_holding("m", "meta.json") == ["1", "10"]
    assert storage.list_holding("m/", "meta.json") == ["1", "10"]
    assert storage.list_holding("nothing/here", "meta.json") == []


def test_checkpoints_are_one_listing(storage, monkeypatch) -> None:
    repo = CheckpointRepo(storage, "m1")
    repo.publish(0, {"model.pt": b"w0"}, {})
    repo.publish(1, {"model.pt": b"w1"}, {})
    storage.write(repo.key(2, "model.pt"), b"half-written, no meta")
    monkeypatch.setattr(storage, "exists", lambda key: pytest.fail(f"exists({key!r}) called"))
    assert repo.checkpoints() == [0, 1] and repo.latest() == 1


def test_delete_is_idempotent(storage) -> None:
    storage.write("d/x", b"1")
    storage.delete("d/x")
    storage.delete("d/x")
    assert not storage.exists("d/x") and storage.list("d") == []


def test_keys_cannot_escape_the_root(storage) -> None:
    for bad in ("../x", "a/../../x", "/etc/passwd", "", "a/..", "a\0b"):
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.write(bad, b"x")
        with pytest.raises(ValueError, match="invalid storage key"):
            storage.read(bad)


def test_conditional_write_refuses_an_existing_object(storage) -> None:
    storage.write("c/claim", b"first", if_absent=True)
    with pytest.raises(CheckpointExistsError, match="exists already"):
        storage.write("c/claim", b"second", if_absent=True)
    assert storage.read("c/claim") == b"first"
    storage.write("c/other", b"x")  # unconditional writes still overwrite
    storage.write("c/other", b"y")
    assert storage.read("c/other") == b"y"


def test_large_object_round_trip(storage) -> None:
    # Above the client's 8 MiB multipart limit: a resumable upload on GCS.
    data = os.urandom(9 << 20)
    storage.write("big/archive.zip", data)
    assert storage.read("big/archive.zip") == data


def test_checkpoint_repo_on_both_backends(storage) -> None:
    repo = CheckpointRepo(storage, "m1")
    assert repo.latest() is None and repo.checkpoints() == []
    repo.publish(0, {"model.pt": b"w0", "scriptmodule.pt": b"s0"}, {"examples_trained": 0})
    repo.publish(1, {"model.pt": b"w1", "scriptmodule.pt": b"s1", "examples/000001.zip": b"z"},
                 {"examples_trained": 7})
    storage.write(repo.key(2, "model.pt"), b"half-written, no meta")
    assert repo.checkpoints() == [0, 1] and repo.latest() == 1
    assert repo.read_verified(1, "scriptmodule.pt") == b"s1"
    assert repo.meta(1)["examples_trained"] == 7 and repo.example_archives(1) == ["000001.zip"]
    with pytest.raises(CheckpointExistsError, match="checkpoint 1 of m1 exists already"):
        repo.publish(1, {"model.pt": b"other"}, {})
    storage.write(repo.key(1, "scriptmodule.pt"), b"tampered")
    with pytest.raises(StorageError, match="SHA-256 mismatch"):
        repo.read_verified(1, "scriptmodule.pt")


def test_two_writers_claiming_one_checkpoint_one_wins(tmp_path) -> None:
    """Simultaneous conditional writes: exactly one succeeds. Local backend only: the GCS
    emulator does not enforce generation preconditions (next test), real GCS does."""
    storage = LocalStorage(tmp_path)
    for round_ in range(20):
        key = f"race/{round_}/.claim"
        wins, barrier = [], threading.Barrier(4)

        # Bound now: the threads run (and are joined) within this round.
        def claim(i: int, barrier=barrier, key=key, wins=wins) -> None:
            barrier.wait()
            try:
                storage.write(key, f"writer {i}".encode(), if_absent=True)
                wins.append(i)
            except CheckpointExistsError:
                pass

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1
        assert storage.read(key) == f"writer {wins[0]}".encode()


def test_emulator_ignores_generation_preconditions(gcs_emulator) -> None:
    """Documents the emulator (docs/training-server.md): an upload with if_generation_match=0
    over an existing object succeeds there, where real GCS answers 412. If this starts failing,
    the emulator enforces preconditions and the race test above can run on GCS too."""
    s = open_storage(gcs_emulator.url(f"t-{uuid.uuid4().hex[:8]}"))
    s.write("k", b"one")
    s.bucket.blob(s._name("k")).upload_from_string(b"two", if_generation_match=0)
    assert s.read("k") == b"two"


def test_gcs_calls_time_out_and_retry_a_bounded_time() -> None:
    """A server that accepts connections and never answers: each request times out and the
    retries stop after retry_seconds, instead of the client's default 120 s."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage as gcs

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        client = gcs.Client(project="test", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": f"http://127.0.0.1:{silent.getsockname()[1]}"})
        s = GCSStorage("bucket", "p", client=client, timeout=0.3, retry_seconds=1.0)
        t0 = time.monotonic()
        with pytest.raises(Exception, match=r"(?i)timed out|timeout") as info:
            s.read("x")
        elapsed = time.monotonic() - t0
    # It waited for its timeout and gave up (no upper bound on a busy machine's wall time).
    assert elapsed >= 0.3, elapsed
    assert "timed out" in repr(info.value).lower() or "timeout" in repr(info.value).lower()
