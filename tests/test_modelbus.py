"""The model bus against a real Redis: publish, fetch with checksum, announcements."""

import threading
import uuid

import pytest
import redis

from pyhexz.infra.modelbus import ModelBus, ModelIntegrityError, keys


@pytest.fixture
def bus(redis_url) -> ModelBus:
    return ModelBus(redis_url, f"m-{uuid.uuid4().hex[:8]}")


def test_key_names_are_documented_and_prefixed():
    assert keys("cain") == {"latest": "pyhexz:models:cain:latest",
                            "checkpoint": "pyhexz:models:cain:ckpt:{n}",
                            "channel": "pyhexz:models:cain:announce"}


@pytest.mark.parametrize("name", ["", "../x", "a/b", "a:b", "x" * 65])
def test_bad_model_names_are_refused(redis_url, name):
    with pytest.raises(ValueError, match="invalid model name"):
        ModelBus(redis_url, name)


def test_nothing_published_yet(bus):
    assert bus.latest() is None
    assert bus.fetch_latest() is None


def test_publish_then_fetch_latest(bus):
    digest = bus.publish(0, b"model zero", examples_trained=0)
    bus.publish(1, b"model one", examples_trained=4096)
    assert bus.latest() == 1
    m = bus.fetch_latest()
    assert (m.checkpoint, m.data) == (1, b"model one")
    assert bus.fetch(0).sha256 == digest
    # The superseded checkpoint stays fetchable for a while, then expires.
    assert 0 < bus.redis.ttl(bus.checkpoint_key(0)) <= 3600
    assert bus.redis.ttl(bus.checkpoint_key(1)) == -1


def test_corrupt_bytes_are_refused(bus):
    bus.publish(3, b"good bytes")
    bus.redis.hset(bus.checkpoint_key(3), "data", b"evil bytes")
    with pytest.raises(ModelIntegrityError, match="SHA-256"):
        bus.fetch(3)


def test_missing_checkpoint_and_garbage_pointer(bus):
    with pytest.raises(ModelIntegrityError, match="missing"):
        bus.fetch(7)
    bus.redis.set(bus.latest_key, "not-a-number")
    with pytest.raises(ModelIntegrityError, match="not a number"):
        bus.latest()


def test_subscriber_receives_the_number_not_the_bytes(bus):
    got = []
    ready = threading.Event()

    def listen():
        for n in bus.announcements(poll_seconds=0.05):
            ready.set()
            if n is not None:
                got.append(n)
                return

    t = threading.Thread(target=listen, daemon=True)
    t.start()
    assert ready.wait(5)
    bus.publish(5, b"x" * 1000)
    t.join(5)
    assert got == [5]


def test_unreachable_redis_fails_fast():
    bus = ModelBus("redis://127.0.0.1:1/0", "cain", timeout=0.5)
    with pytest.raises(redis.ConnectionError, match="Connection refused"):
        bus.latest()


def test_onnx_bytes_travel_with_the_model_and_are_checked(bus, caplog):
    bus.publish(4, b"torchscript", onnx=b"onnx bytes")
    assert bus.fetch(4).onnx == b"onnx bytes"
    bus.publish(5, b"torchscript five")
    assert bus.fetch(5).onnx is None          # a checkpoint without model.onnx
    # ONNX bytes that fail their check are dropped, the model itself still loads.
    bus.redis.hset(bus.checkpoint_key(4), "onnx", b"tampered")
    m = bus.fetch(4)
    assert (m.data, m.onnx) == (b"torchscript", None)
    assert "onnx bytes ignored" in caplog.text and "SHA-256 mismatch" in caplog.text
