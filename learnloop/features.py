"""Features in Redis: decayed counters per user, item and (user, item), applied per batch.

One Lua script applies a whole batch together with the partition's watermark, so the
effects are exactly once: replaying offsets at or below the watermark changes nothing.

Key layout (every feature key has a TTL; watermark keys never expire):

- ``fu:{user}``, ``fi:{item}``, ``fui:{user}:{item}`` — hashes. Field ``t`` is the
  newest event time applied; ``{type}|{half_life_s}`` a decayed count and
  ``{type}|sum|{half_life_s}`` a decayed sum of ``value``, both held as of the base time
  ``b`` (forward decay: an event writes only the fields it changes; :func:`decay_to`
  gives them as of any later time); ``last|{type}`` the newest event time of that type.
- ``snap:{event_id}`` — JSON point-in-time snapshot of an exposure's features, kept
  until the exposure is both scored and resolved in every objective (or its TTL).
- ``dedup:{user}`` — de-duplication: a hash of the user's event ids of the last
  ``dedup_ttl_s`` of event time, each with its second and origin (for an event too late
  to apply, also the newest event time it was late for), with a TTL. Markers of older
  versions (``seen:{event_id}``) are still read until ``wm:dedup:{topic}:{partition}``.
- ``wm:features:{topic}:{partition}`` — last applied offset.
- ``etw:{topic}:{partition}`` — newest event time applied (the event-time watermark's base).
- ``outbox:{topic}:{partition}`` — labeled examples not yet published to Kafka.
- ``pend:{objective}:{exposure_id}``, ``pendu:{objective}:{user}``,
  ``due:{objective}:{topic}:{partition}`` — exposures waiting for feedback (the join).
- ``stats:interactions`` — exactly-once counters: events, exposures, duplicates,
  ``rejected:{reason}``.

An event older than its partition's newest event time minus the most lenient objective's
``allowed_lateness_s`` is *too late*: it is not applied, and comes back as a
:class:`~learnloop.events.Rejection` (reason :data:`TOO_LATE`) for the dead-letter topic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from importlib import resources

import orjson
import redis

from learnloop.events import Event, Rejection
from learnloop.settings import Settings

_SCRIPT = resources.files("learnloop").joinpath("apply_batch.lua").read_text()


STATS_KEY = "stats:interactions"
#: Dead-letter reason of an event behind its partition's event-time watermark.
TOO_LATE = "too_late"


def watermark_key(topic: str, partition: int) -> str:
    """Last offset of ``topic``/``partition`` whose features are applied."""
    return f"wm:features:{topic}:{partition}"


def outbox_key(topic: str, partition: int) -> str:
    """Examples made from ``topic``/``partition`` and not yet published."""
    return f"outbox:{topic}:{partition}"


def scored_watermark_key(topic: str, partition: int) -> str:
    """Last offset of ``topic``/``partition`` whose scores are written."""
    return f"wm:scores:{topic}:{partition}"


def event_time_key(topic: str, partition: int) -> str:
    """Newest event time applied from ``topic``/``partition``."""
    return f"etw:{topic}:{partition}"


@dataclass(frozen=True, slots=True)
class BatchResult:
    """What applying a batch did: the watermark before it, and per-event outcomes."""

    previous_watermark: int
    outcomes: list[Applied]


@dataclass(frozen=True, slots=True)
class Applied:
    """The outcome for one event of a batch that needs a follow-up (scoring or counting)."""

    offset: int
    status: str  # "new" | "replay" | "dup" | "late" | "unattributed:…"
    snapshot: dict[str, float] | None  # numbers (an int where the value is whole)
    rejection: Rejection | None = None  # for "late": bound for the dead-letter topic


class FeatureStore:
    """Applies batches of events to the Redis features and reads feature hashes."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.half_lives = list(settings.half_lives_s)
        self.exposure_types = frozenset(settings.exposure_types)
        objectives = [{"name": n, **o.wire()} for n, o in settings.objectives.items()]
        longest_wait = max(o.window_s + o.allowed_lateness_s for o in settings.objectives.values())
        self.lateness = max(o.allowed_lateness_s for o in settings.objectives.values())
        self._limits = {
            "half_lives": self.half_lives,
            "feature_ttl": settings.feature_ttl_s,
            # a snapshot must outlive its exposure's window, or the example loses it
            "snapshot_ttl": max(settings.snapshot_ttl_s, longest_wait + 86_400),
            "dedup_ttl": settings.dedup_ttl_s,
            "lateness": self.lateness,
            "objectives": objectives,
        }
        self.script = client.register_script(_SCRIPT)

    def apply_batch(
        self, topic: str, partition: int, items: list[tuple[int, Event | Rejection]],
        known_applied: int = -1,
    ) -> BatchResult:
        """Apply one partition's ``(offset, event or rejection)`` pairs, in offset order,
        atomically with its watermark. Rejections only advance the watermark and count.
        ``known_applied`` is the watermark the caller saw last: Redis must not be behind it
        (else a ``GAP n`` ResponseError: resume after offset n)."""
        return self.parse(self.queue(self.client, topic, partition, items, known_applied), items)

    def queue(self, client, topic: str, partition: int,
              items: list[tuple[int, Event | Rejection]], known_applied: int = -1):
        """The batch script called on ``client`` — a pipeline queues it by SHA (the
        caller loads :attr:`script` first, and again on NOSCRIPT); its reply goes to
        :meth:`parse`."""
        wire = [
            {"o": o, "r": e.reason} if isinstance(e, Rejection) else self._wire(o, e)
            for o, e in items
        ]
        payload = {**self._limits, "events": wire, "partition": partition,
                   "suffix": f"{topic}:{partition}", "known": known_applied}
        keys = [watermark_key(topic, partition), STATS_KEY, event_time_key(topic, partition),
                outbox_key(topic, partition), scored_watermark_key(topic, partition)]
        if isinstance(client, redis.client.Pipeline):  # by SHA: no SCRIPT EXISTS per pipeline
            return client.evalsha(self.script.sha, len(keys), *keys, orjson.dumps(payload))
        return self.script(keys=keys, args=[orjson.dumps(payload)], client=client)

    def parse(self, reply: bytes, items: list[tuple[int, Event | Rejection]]) -> BatchResult:
        """The batch script's reply (one JSON text), as outcomes per event."""
        previous, rows = orjson.loads(reply)
        events = None
        outcomes = []
        for offset, status, payload in rows:
            if status == "late":
                events = events if events is not None else dict(items)
                outcomes.append(Applied(offset, status, None,
                                        self._too_late(events[offset], payload)))
            else:
                outcomes.append(Applied(offset, status, payload))
        return BatchResult(previous, outcomes)

    def _too_late(self, event: Event, newest: float) -> Rejection:
        return Rejection(TOO_LATE, f"ts is {newest - event.ts:.0f}s older than the partition's "
                                   f"newest event; {self.lateness}s of lateness allowed")

    def _wire(self, offset: int, event: Event) -> dict:
        exposure = event.type in self.exposure_types
        wire = {
            "o": offset, "id": event.event_id, "t": event.ts, "s": repr(event.ts),
            "u": event.user_id, "i": event.item_id or "", "k": event.type,
            "x": 1 if exposure else 0,
        }
        if exposure:
            wire["c"] = event.context
        if event.value is not None:
            wire["v"] = event.value
        if event.exposure_id is not None:
            wire["e"] = event.exposure_id
        return wire

    def applied_offset(self, topic: str, partition: int) -> int | None:
        """The partition's feature watermark, or None before its first batch."""
        raw = self.client.get(watermark_key(topic, partition))
        return None if raw is None else int(raw)

    def read(self, user: str, item: str | None, at: float | None = None) -> dict[str, float]:
        """Current features of a user (and item) as one flat map, decayed to time ``at``."""
        keys = {"u": f"fu:{user}"}
        if item:
            keys |= {"i": f"fi:{item}", "ui": f"fui:{user}:{item}"}
        pipe = self.client.pipeline(transaction=False)
        for key in keys.values():
            pipe.hgetall(key)
        flat: dict[str, float] = {}
        for prefix, raw in zip(keys, pipe.execute(), strict=True):
            state = {k.decode(): float(v) for k, v in raw.items()}
            for field, value in decay_to(state, at).items():
                flat[f"{prefix}.{field}"] = value
        return flat


def decay_to(state: dict[str, float], at: float | None) -> dict[str, float]:
    """A feature hash as of time ``at`` — never earlier than its newest event ``t``, and
    ``at=None`` means ``t`` — with its base time ``b`` dropped (the Lua ``as_of``)."""
    ref = state.get("t")
    if ref is None:
        return dict(state)
    target = ref if at is None or at < ref else at
    base = state.get("b", ref)
    out = {}
    for field, value in state.items():
        if field == "b":
            continue
        if field != "t" and not field.startswith("last|"):
            value *= math.pow(2.0, -(target - base) / float(field.rsplit("|", 1)[1]))
        out[field] = value
    out["t"] = target
    return out
