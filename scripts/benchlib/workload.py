"""The event mix: learnloop's own simulated product, pre-published to Kafka.

Impressions and clicks (a click follows its impression after an exponential delay in
event time and carries its ``exposure_id``), users and items drawn Zipf-like, so a few
hot users and items get most of the traffic — see :class:`learnloop.simulate.Simulator`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field

import orjson
from kafka import KafkaProducer

from learnloop.connect import kafka_security
from learnloop.settings import Settings
from learnloop.simulate import Simulator


@dataclass(frozen=True)
class Workload:
    """Which simulated stream: ``impressions`` impressions (plus their clicks)."""

    users: int
    items: int
    impressions: int
    seed: int = 0
    start_ts: float = Simulator(users=1, items=1).start_ts

    def events(self) -> Iterator[dict]:
        return Simulator(users=self.users, items=self.items, seed=self.seed,
                         start_ts=self.start_ts).events(self.impressions)

    def after(self, published: Published, impressions: int, seed: int) -> Workload:
        """The same product, continuing in event time after ``published``."""
        return Workload(self.users, self.items, impressions, seed, published.last_ts + 1.0)


@dataclass
class Published:
    """What went onto the interactions topic."""

    events: int = 0
    exposures: int = 0
    clicks: int = 0
    distinct_users: int = 0
    distinct_items: int = 0
    last_ts: float = 0.0
    seconds: float = 0.0
    #: per partition, the offset after the last message written (from the producer's
    #: acknowledgements: the embedded broker's ListOffsets undercounts)
    end_offsets: dict[int, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


def producer(settings: Settings, **options: object) -> KafkaProducer:
    """A plain kafka-python producer for pre-publishing (batched, acks=all)."""
    defaults = {"linger_ms": 20, "batch_size": 256 * 1024, "acks": "all"}
    return KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, **kafka_security(settings),
                         **{**defaults, **options})


def publish(settings: Settings, workload: Workload, encode_first: bool = False) -> Published:
    """Publish the whole workload (raw JSON, keyed by user id) and wait for delivery.

    ``encode_first`` simulates and encodes every event before sending any, so the
    sending itself is as fast as kafka-python goes (when consumers already run)."""
    out = Published()
    users: set[str] = set()
    items: set[str] = set()
    exposure_types = set(settings.exposure_types)
    messages = _encoded(workload.events())
    if encode_first:
        messages = list(messages)
    started = time.monotonic()
    kafka = producer(settings)
    ends = out.end_offsets

    def acked(meta) -> None:
        ends[meta.partition] = max(ends.get(meta.partition, 0), meta.offset + 1)

    try:
        for key, value, body in messages:
            kafka.send(settings.topic_interactions, key=key, value=value).add_callback(acked)
            out.events += 1
            if body["type"] in exposure_types:
                out.exposures += 1
            else:
                out.clicks += 1
            users.add(body["user_id"])
            items.add(body["item_id"])
            out.last_ts = max(out.last_ts, body["ts"])
        kafka.flush()
    finally:
        kafka.close()
    out.distinct_users, out.distinct_items = len(users), len(items)
    out.seconds = round(time.monotonic() - started, 2)
    return out


def _encoded(events: Iterator[dict]) -> Iterator[tuple[bytes, bytes, dict]]:
    for body in events:
        yield body["user_id"].encode(), orjson.dumps(body), body
