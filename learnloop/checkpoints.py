"""Versioned, HMAC-signed checkpoints of the learner's state, kept in Redis.

A blob is ``b"LLCK1" + HMAC-SHA256(key, payload) + payload``; the payload is a pickle
and is unpickled only after its signature verifies. A blob that does not verify is
refused (logged and counted), never unpickled, and the next older version is tried.

Redis layout:

- ``ckpt:seq`` — the last version number handed out;
- ``ckpt:{version}`` — the signed blob;
- ``ckpt:meta`` — hash version → JSON (published_at, examples, offsets), for people;
- ``ckpt:versions`` — list of kept versions, oldest first (the last ``keep``);
- ``ckpt:latest`` — the newest version (written last: readers never see a partial one).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass

import orjson
import redis

from learnloop.crashpoints import crash_point

log = logging.getLogger("learnloop.checkpoints")
MAGIC = b"LLCK1"
_DIGEST = hashlib.sha256().digest_size


class BadSignature(Exception):
    """The blob was not signed with our key (tampered, truncated or foreign)."""


def sign(key: bytes, payload: bytes) -> bytes:
    """``payload`` with a header that proves it was written with ``key``."""
    return MAGIC + hmac.new(key, payload, hashlib.sha256).digest() + payload


def verify(key: bytes, blob: bytes) -> bytes:
    """The payload of a signed blob; :class:`BadSignature` if it does not verify."""
    header = len(MAGIC) + _DIGEST
    if len(blob) < header or not blob.startswith(MAGIC):
        raise BadSignature("not a learnloop checkpoint (bad header or truncated)")
    signature, payload = blob[len(MAGIC):header], blob[header:]
    expected = hmac.new(key, payload, hashlib.sha256).digest()
    if not hmac.compare_digest(signature, expected):
        raise BadSignature("signature does not match (tampered or signed with another key)")
    return payload


@dataclass(frozen=True, slots=True)
class Loaded:
    """A verified checkpoint: its version, when it was published, and the state."""

    version: int
    published_at: float
    state: object


class CheckpointStore:
    """Saves and loads signed learner checkpoints; keeps the newest ``keep`` versions."""

    def __init__(self, client: redis.Redis, key: bytes, keep: int,
                 on_refused: Callable[[int, str], None] | None = None) -> None:
        self.client = client
        self.key = key
        self.keep = keep
        self.on_refused = on_refused
        self.refused: set[int] = set()

    def save(self, state: object, meta: dict) -> int:
        """Sign and store ``state``; return its version."""
        blob = sign(self.key, pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL))
        version = int(self.client.incr("ckpt:seq"))
        published_at = time.time()
        pipe = self.client.pipeline(transaction=True)
        pipe.set(f"ckpt:{version}", blob)
        meta = {**meta, "published_at": published_at}
        pipe.hset("ckpt:meta", version, orjson.dumps(meta, option=orjson.OPT_NON_STR_KEYS))
        pipe.rpush("ckpt:versions", version)
        pipe.set("ckpt:latest", version)
        crash_point("checkpoint.before_write")
        pipe.execute()
        crash_point("checkpoint.written")
        self._prune()
        return version

    def _prune(self) -> None:
        old = self.client.lrange("ckpt:versions", 0, -(self.keep + 1))
        if old:
            pipe = self.client.pipeline(transaction=True)
            pipe.ltrim("ckpt:versions", len(old), -1)
            for version in old:
                pipe.delete(f"ckpt:{int(version)}")
                pipe.hdel("ckpt:meta", version)
            pipe.execute()

    def latest_version(self) -> int | None:
        raw = self.client.get("ckpt:latest")
        return None if raw is None else int(raw)

    def versions(self) -> list[int]:
        """Kept versions, newest first."""
        return [int(v) for v in reversed(self.client.lrange("ckpt:versions", 0, -1))]

    def meta(self, version: int) -> dict:
        raw = self.client.hget("ckpt:meta", version)
        return orjson.loads(raw) if raw else {}

    def load(self, version: int) -> Loaded:
        """Verify and unpickle one version (:class:`BadSignature` or KeyError if not)."""
        blob = self.client.get(f"ckpt:{version}")
        if blob is None:
            raise KeyError(f"checkpoint {version} is gone")
        state = pickle.loads(verify(self.key, blob))  # noqa: S301 - verified above
        return Loaded(version, self.meta(version).get("published_at", 0.0), state)

    def load_newest_valid(self, newer_than: int | None = None) -> Loaded | None:
        """The newest checkpoint that verifies (optionally only versions > ``newer_than``)."""
        for version in self.versions():
            if newer_than is not None and version <= newer_than:
                return None
            if version in self.refused:
                continue
            try:
                return self.load(version)
            except (BadSignature, KeyError) as exc:
                self.refused.add(version)
                log.error("checkpoint %d refused: %s", version, exc)
                if self.on_refused:
                    self.on_refused(version, str(exc))
        return None


def checkpoint_store(settings, client: redis.Redis,
                     on_refused: Callable[[int, str], None] | None = None) -> CheckpointStore:
    """The store for ``settings`` (:class:`ConfigError` without a checkpoint key)."""
    from learnloop.errors import ConfigError

    if settings.checkpoint_key is None:
        raise ConfigError("LEARNLOOP_CHECKPOINT_KEY is not set: checkpoints cannot be signed "
                          "or verified (the embedded stack makes one up)")
    key = settings.checkpoint_key.get_secret_value().encode()
    return CheckpointStore(client, key, settings.checkpoints_kept, on_refused)
