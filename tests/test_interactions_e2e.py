"""End to end against the real broker and redis-server: raw bytes in, scores out."""

from __future__ import annotations

import subprocess

import orjson

from learnloop.embedded import redis_server_binary
from tests.conftest import event, read_topic, wait_for


def test_plain_kafka_event_becomes_a_score_readable_with_redis_cli(
    settings, producer, start_consumer, stack
):
    running = start_consumer(settings)
    producer.send(settings.topic_interactions, key=b"u1", value=event(1, user="u1", item="i9"))
    producer.flush()

    key = f"score:{settings.champion}:u1:i9"
    cli = str(redis_server_binary()).replace("redis-server", "redis-cli")

    def via_redis_cli() -> str:
        out = subprocess.run(
            [cli, "-p", str(stack.redis_port), "HGET", key, "score"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        return out

    score = float(wait_for(via_redis_cli, what=f"{key} in redis-cli"))
    assert 0.0 < score < 1.0
    assert running.sample("learnloop_scores_published_total", model=settings.champion) == 1
    published = read_topic(settings.kafka_bootstrap, settings.topic_scores, 1)
    message = orjson.loads(published[0].value)
    assert message["event_id"] == "e1"
    assert message["source"].startswith(f"{settings.topic_interactions}/")
    assert message["score"] == score


def test_feature_age_is_observed_per_entity_at_scoring(settings, producer, start_consumer):
    """How old an exposure's newest user / item feature was: u1's impression 100 s before,
    the item never seen; a first-ever exposure has no age at all."""
    running = start_consumer(settings)
    t0 = 1_767_225_600.0
    for n, (item, ts) in enumerate((("i1", t0), ("i2", t0 + 100.0), ("i2", t0 + 160.0)), 1):
        producer.send(settings.topic_interactions, key=b"u1",
                      value=event(n, user="u1", item=item, ts=ts - n))  # event() adds n
    producer.flush()

    wait_for(lambda: running.sample("learnloop_scores_published_total",
                                    model=settings.champion) == 3, what="three scores")
    age = "learnloop_feature_age_seconds"
    assert running.sample(f"{age}_count", entity="user") == 2
    assert running.sample(f"{age}_sum", entity="user") == 100.0 + 60.0
    assert running.sample(f"{age}_count", entity="item") == 1
    assert running.sample(f"{age}_sum", entity="item") == 60.0
