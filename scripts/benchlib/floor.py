"""The Kafka floor: what kafka-python alone costs per event on this machine.

A pass-through over the same events as the consumer: ``poll`` every record, parse it
(orjson), and send one message per exposure (what the consumer sends: one score each),
keyed by user, with the consumer's producer settings (its linger and batch size, acks all)
and one flush per poll. No validation, no Redis, no model. Any consumer built on
kafka-python that publishes one message per score runs at most this fast here; its CPU
per event is the part of the consumer's that is Kafka's.
"""

from __future__ import annotations

import os
import time

import orjson
from kafka import KafkaProducer

from benchlib.topics import ensure_topic, read_from_start
from consumers.interactions import BATCH_BYTES, LINGER_MS
from learnloop.connect import kafka_security
from learnloop.settings import Settings

OUT_TOPIC = "floor-out"


def run_floor(settings: Settings, limit: int) -> dict:
    """Pass the first ``limit`` events of the interactions topic (or all it holds, if
    fewer) through; events/s and CPU per event of this process (its kafka-python threads
    included)."""
    ensure_topic(settings, OUT_TOPIC)
    consumer, parts = read_from_start(settings, settings.topic_interactions,
                                      max_poll_records=settings.max_poll_records)
    limit = min(limit, sum(consumer.end_offsets(parts).values()))  # never wait for more
    if limit < 1:
        consumer.close()
        raise ValueError("the Kafka floor needs at least one event (--floor-events, and a "
                         "published interactions topic)")
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             linger_ms=LINGER_MS, batch_size=BATCH_BYTES,
                             **kafka_security(settings))
    exposures = set(settings.exposure_types)
    done = sent = 0
    started = cpu = None
    try:
        while done < limit:
            batch = consumer.poll(timeout_ms=100)
            if started is None and batch:
                started, cpu = time.perf_counter(), os.times()
            for records in batch.values():
                for record in records[:limit - done]:
                    event = orjson.loads(record.value)
                    if event["type"] in exposures:
                        producer.send(OUT_TOPIC, key=record.key, value=record.value)
                        sent += 1
                done += min(len(records), limit - done)
            producer.flush()
        seconds = time.perf_counter() - started
        after = os.times()
    finally:
        producer.close()
        consumer.close()
    busy = (after.user - cpu.user) + (after.system - cpu.system)
    return {"events_per_s": round(done / seconds, 1), "events": done, "sent": sent,
            "seconds": round(seconds, 3), "cpu_us_per_event": round(1e6 * busy / done, 1)}
