"""Recorded events, and their effects in Redis compared between two runs of the same
events (see test_chaos.py for the comparison classes: exact, float round-off, keys only)."""

from __future__ import annotations

import math
import zlib

import orjson
import redis
from kafka import KafkaProducer

from learnloop.features import decay_to
from learnloop.simulate import Simulator


def recorded_events(count: int, partitions: int) -> list[tuple[int, bytes, bytes]]:
    """``count`` simulated events (Zipf users and items, delayed clicks) as
    (partition, key, value), each user pinned to one partition."""
    sim = Simulator(users=3000, items=300, seed=11)
    records = []
    for body in sim.events(count):
        key = body["user_id"].encode()
        records.append((zlib.crc32(key) % partitions, key, orjson.dumps(body)))
        if len(records) == count:
            break
    return records


def publish(bootstrap: str, topic: str, records) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20,
                             batch_size=512 * 1024, acks="all")
    for partition, key, value in records:
        producer.send(topic, key=key, value=value, partition=partition)
    producer.flush()
    producer.close()


#: key families compared only as sets of keys (their values depend on timing)
KEYS_ONLY = ("score:", "top:")
#: learner and serving bookkeeping, compared through the checkpoint instead
SKIPPED = ("ckpt:", "serving:", "model:metrics:", "drift:")


def redis_state(client: redis.Redis) -> dict[bytes, object]:
    """Every key's value (by type), but the learner's and serving's bookkeeping."""
    state: dict[bytes, object] = {}
    for key in client.scan_iter(count=5000):
        if key.decode().startswith(SKIPPED):
            continue
        kind = client.type(key)
        state[key] = {
            b"string": client.get, b"hash": client.hgetall,
            b"list": lambda k: client.lrange(k, 0, -1), b"set": client.smembers,
            b"zset": lambda k: client.zrange(k, 0, -1, withscores=True),
        }[kind](key)
    return state


def as_of_newest(raw: dict[bytes, bytes]) -> dict[str, float]:
    """A feature hash's fields as of its newest event (forward decay's base dropped)."""
    return decay_to({k.decode(): float(v) for k, v in raw.items()}, None)


def without_item_side(snapshot: bytes) -> dict:
    return {k: v for k, v in orjson.loads(snapshot).items() if not k.startswith("i.")}


def assert_same_effects(oracle: dict, chaos: dict, *, exact_items: bool) -> None:
    """The comparison classes of the module docstring."""
    assert sorted(oracle) == sorted(chaos), (
        f"keys only in oracle: {sorted(set(oracle) - set(chaos))[:10]}, "
        f"only after chaos: {sorted(set(chaos) - set(oracle))[:10]}")
    for key, expected in oracle.items():
        name, got = key.decode(), chaos[key]
        if name.startswith(KEYS_ONLY):
            continue
        if exact_items:
            assert got == expected, name
        elif name.startswith("fi:"):  # as of its newest event: the base time may differ
            expected, got = as_of_newest(expected), as_of_newest(got)
            assert expected.keys() == got.keys(), name
            for fld, value in expected.items():
                assert math.isclose(value, got[fld], rel_tol=1e-9, abs_tol=1e-12), (name, fld)
        elif name.startswith("snap:"):
            assert without_item_side(got) == without_item_side(expected), name
        else:
            assert got == expected, name
