"""``learnloop status``: lag, staleness and model versions at a glance, from Kafka and Redis."""

from __future__ import annotations

import time

import redis
from kafka import KafkaConsumer, TopicPartition

from learnloop.alerts import recent_alerts
from learnloop.checkpoints import CheckpointStore
from learnloop.connect import kafka_security
from learnloop.features import event_time_key
from learnloop.scoring import scored_watermark_key
from learnloop.serving import current_champion
from learnloop.settings import Settings


def end_offsets(settings: Settings, topic: str, timeout_s: float = 5.0) -> dict[int, int]:
    """The next offset to be written (the high watermark), per partition of ``topic``.

    Read from a fetch response rather than ListOffsets: the embedded broker answers
    ListOffsets(latest) with the last *batch's* base offset + 1, which undercounts.
    """
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=None,
                             client_id="learnloop-status", enable_auto_commit=False,
                             fetch_max_wait_ms=10, **kafka_security(settings))
    try:
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        consumer.assign(partitions)
        consumer.seek_to_end(*partitions)
        deadline = time.monotonic() + timeout_s
        while any(consumer.highwater(tp) is None for tp in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no high watermark for {topic} within {timeout_s}s")
            consumer.poll(timeout_ms=50, max_records=1, update_offsets=False)
        return {tp.partition: consumer.highwater(tp) for tp in partitions}
    finally:
        consumer.close()


def collect(settings: Settings, client: redis.Redis) -> dict:
    """Everything ``learnloop status`` shows, as plain data."""
    now = time.time()
    topic = settings.topic_interactions
    partitions = []
    for partition, end in sorted(end_offsets(settings, topic).items()):
        scored = client.get(scored_watermark_key(topic, partition))
        newest = client.get(event_time_key(topic, partition))
        partitions.append({
            "partition": partition, "end_offset": end,
            "lag_offsets": end - (int(scored) + 1 if scored is not None else 0),
            "event_time_lag_s": None if newest is None else now - float(newest),
        })
    store = CheckpointStore(client, b"", settings.checkpoints_kept)  # metadata only
    latest = store.latest_version()
    meta = store.meta(latest) if latest else {}
    examples_end = sum(end_offsets(settings, settings.topic_examples).values())
    consumed = sum(int(o) + 1 for o in meta.get("consumed", {}).values())
    return {
        "interactions": partitions,
        "champion": current_champion(client, settings),
        "checkpoint": {
            "version": latest, "examples": meta.get("examples", 0),
            "age_s": now - meta["published_at"] if "published_at" in meta else None,
            "example_messages_not_yet_checkpointed": examples_end - consumed,
        },
        "drift_alerts": recent_alerts(client, 5),
    }
