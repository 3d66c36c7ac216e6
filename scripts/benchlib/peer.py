"""The peer: a per-event loop the way tutorials build it, on the same events.

kafka-python ``poll`` → ``json.loads`` → redis-py calls one at a time (no pipelining,
no Lua): HGETALL of the user, item and user-item hashes, then HINCRBY of each → River
``predict_one`` of the champion on the same :func:`~learnloop.featurize.featurize`
input → HSET of the score → one produced message per score. No exactly-once, no
point-in-time snapshot kept, no join of feedback, no examples: strictly less work than
learnloop does per event.

It reads the partitions directly (``assign``; a group join would only add start-up
time, which is not timed anyway) and is timed from its first record to its last.
"""

from __future__ import annotations

import json
import time

import redis
from kafka import KafkaProducer

import models
from benchlib.topics import ensure_topic, read_from_start
from learnloop.connect import kafka_security
from learnloop.featurize import featurize
from learnloop.settings import Settings

SCORES_TOPIC = "peer-scores"


def _snapshot(hashes: list[tuple[str, dict]], half_lives: tuple[int, ...]) -> dict[str, float]:
    """Plain counters in the key layout featurize reads (no decay: a count is a count)."""
    snapshot = {}
    for prefix, fields in hashes:
        for field, value in fields.items():
            for hl in half_lives:
                snapshot[f"{prefix}.{field.decode()}|{hl}"] = float(value)
    return snapshot


def run_peer(settings: Settings, client: redis.Redis, limit: int, tag: str) -> dict:
    """Process the first ``limit`` events of the interactions topic; events/s."""
    ensure_topic(settings, SCORES_TOPIC)
    consumer, _ = read_from_start(settings, settings.topic_interactions)
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap,
                             **kafka_security(settings))
    model = models.build(settings.champion)
    exposures = set(settings.exposure_types)
    half_lives, types = settings.half_lives_s, settings.event_types
    done, first = 0, None
    try:
        while done < limit:
            for records in consumer.poll(timeout_ms=100).values():
                for record in records:
                    if first is None:
                        first = time.perf_counter()
                    event = json.loads(record.value)
                    user, item, kind = event["user_id"], event["item_id"], event["type"]
                    keys = [("u", f"{tag}:u:{user}"), ("i", f"{tag}:i:{item}"),
                            ("ui", f"{tag}:ui:{user}:{item}")]
                    if kind in exposures:
                        hashes = [(prefix, client.hgetall(key)) for prefix, key in keys]
                        x = featurize(_snapshot(hashes, half_lives), event["ts"],
                                      event.get("context") or {}, half_lives, types)
                        score = model.predict_one(x)
                        client.hset(f"{tag}:score:{user}:{item}", mapping={
                            "score": score, "event_id": event["event_id"], "ts": event["ts"]})
                        producer.send(SCORES_TOPIC, json.dumps({
                            "user_id": user, "item_id": item, "event_id": event["event_id"],
                            "score": score}).encode())
                    for _prefix, key in keys:
                        client.hincrby(key, kind, 1)
                    done += 1
                    if done >= limit:
                        break
                if done >= limit:
                    break
        producer.flush()
        seconds = time.perf_counter() - first
    finally:
        producer.close()
        consumer.close()
    return {"events_per_s": round(done / seconds, 1), "events": done,
            "seconds": round(seconds, 3)}
