"""Signed checkpoints against the real redis-server: a blob that does not verify is refused
and never unpickled; the newest valid version wins; only the last ``keep`` are kept."""

from __future__ import annotations

import pickle
from types import SimpleNamespace

import pytest

from learnloop import checkpoints
from learnloop.checkpoints import BadSignature, CheckpointStore, sign, verify

KEY = b"test-checkpoint-key"
STATE = {"weights": {"i_ctr": 0.25, "u_ctr": -1.5}, "examples": 42}


def store(client, keep: int = 5, key: bytes = KEY, refused: list | None = None):
    on_refused = None if refused is None else (lambda v, why: refused.append((v, why)))
    return CheckpointStore(client, key, keep, on_refused)


def flipped(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x01]) + blob[at + 1:]


@pytest.fixture
def unpickled(monkeypatch) -> list[bytes]:
    """Every payload the checkpoints module unpickles (it sees this ``pickle``)."""
    calls: list[bytes] = []

    def loads(data: bytes):
        calls.append(data)
        return pickle.loads(data)

    monkeypatch.setattr(checkpoints, "pickle", SimpleNamespace(
        dumps=pickle.dumps, HIGHEST_PROTOCOL=pickle.HIGHEST_PROTOCOL, loads=loads))
    return calls


def test_sign_then_verify_returns_the_payload():
    payload = pickle.dumps(STATE)
    blob = sign(KEY, payload)
    assert blob.startswith(checkpoints.MAGIC) and blob.endswith(payload)
    assert verify(KEY, blob) == payload
    assert verify(KEY, sign(KEY, b"")) == b""


def test_save_then_load_round_trips_the_state_and_meta(redis_conn):
    ckpt = store(redis_conn)
    version = ckpt.save(STATE, {"examples": 42, "consumed": {0: 7}})
    loaded = ckpt.load(version)
    assert (loaded.version, loaded.state) == (1, STATE)
    assert ckpt.meta(version)["examples"] == 42
    assert loaded.published_at == ckpt.meta(version)["published_at"] > 0
    assert ckpt.latest_version() == 1 and ckpt.versions() == [1]


def test_every_single_byte_flip_and_every_truncation_is_refused_unpickled(
    redis_conn, unpickled
):
    ckpt = store(redis_conn)
    version = ckpt.save(STATE, {})
    good = redis_conn.get(f"ckpt:{version}")
    assert ckpt.load(version).state == STATE and len(unpickled) == 1  # the guard sees loads
    unpickled.clear()
    bad = [flipped(good, at) for at in range(len(good))]  # magic, signature and payload
    bad += [good[:length] for length in range(len(good))]  # every truncation, empty included
    for blob in bad:
        redis_conn.set(f"ckpt:{version}", blob)
        with pytest.raises(BadSignature):
            ckpt.load(version)
    assert unpickled == []


def test_a_blob_signed_with_another_key_is_refused(redis_conn, unpickled):
    version = store(redis_conn, key=b"someone-else").save(STATE, {})
    with pytest.raises(BadSignature, match="another key"):
        store(redis_conn).load(version)
    assert unpickled == []


def test_newest_valid_falls_back_past_a_tampered_newest_and_reports_it(redis_conn):
    refused: list = []
    ckpt = store(redis_conn, refused=refused)
    for n in (1, 2, 3):
        ckpt.save({**STATE, "examples": n}, {})
    redis_conn.set("ckpt:3", flipped(redis_conn.get("ckpt:3"), -1))
    loaded = ckpt.load_newest_valid()
    assert (loaded.version, loaded.state["examples"]) == (2, 2)
    assert [v for v, _ in refused] == [3] and "signature" in refused[0][1]
    assert ckpt.load_newest_valid().version == 2 and len(refused) == 1, "refused once, cached"
    assert ckpt.load_newest_valid(newer_than=2) is None
    assert store(redis_conn).load_newest_valid(newer_than=1).version == 2


def test_a_missing_blob_is_skipped_like_a_tampered_one(redis_conn):
    refused: list = []
    ckpt = store(redis_conn, refused=refused)
    ckpt.save(STATE, {})
    ckpt.save(STATE, {})
    redis_conn.delete("ckpt:2")
    assert ckpt.load_newest_valid().version == 1 and [v for v, _ in refused] == [2]


def test_only_the_last_keep_versions_are_kept(redis_conn):
    ckpt = store(redis_conn, keep=3)
    for n in range(1, 8):
        assert ckpt.save({"n": n}, {"examples": n}) == n
    assert ckpt.versions() == [7, 6, 5] and ckpt.latest_version() == 7
    assert sorted(int(k.split(b":")[1]) for k in redis_conn.scan_iter("ckpt:[0-9]*")) == [5, 6, 7]
    assert sorted(int(v) for v in redis_conn.hkeys("ckpt:meta")) == [5, 6, 7]
    assert [ckpt.load(v).state["n"] for v in (5, 6, 7)] == [5, 6, 7]
    with pytest.raises(KeyError):
        ckpt.load(4)
