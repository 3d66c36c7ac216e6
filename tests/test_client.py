"""The Python client against the real stack: publish with validation, score, top, explain."""

from __future__ import annotations

import time

import orjson
import pytest
from kafka import KafkaConsumer, TopicPartition

from learnloop.client import Client
from learnloop.errors import InvalidEvent
from learnloop.events import Event
from tests.conftest import wait_for

BASE_TS = 1_767_225_600.0


def body(n: int, type_: str = "impression", user: str = "u7", item: str = "i1",
         **extra: object) -> dict:
    """A valid event as a dict, ``n`` seconds after a fixed base time."""
    return {"event_id": f"e{n}", "ts": BASE_TS + n, "user_id": user, "item_id": item,
            "type": type_, **extra}


def published(settings) -> int:
    """How many messages the interactions topic holds (every partition)."""
    reader = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        parts = [TopicPartition(settings.topic_interactions, p)
                 for p in range(settings.partitions)]
        return sum(reader.end_offsets(parts).values())
    finally:
        reader.close()


def raw_hash(redis_conn, key: str) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in redis_conn.hgetall(key).items()}


def test_publish_score_top_and_explain_return_what_redis_holds(
        settings, redis_conn, start_consumer):
    start_consumer(settings)
    with Client(settings) as client:
        for n, item in enumerate(["i1", "i2"]):
            client.publish(body(n, item=item))
        client.publish(body(2, "click", context={"position": 1}))
        client.publish(Event.model_validate(body(3, context={"position": 2})))
        client.flush()
        latest = wait_for(lambda: (s := client.score("u7", "i1")) and s.event_id == "e3" and s,
                          what="the score of e3")
        stored = raw_hash(redis_conn, f"score:{settings.champion}:u7:i1")
        assert latest.model == stored["model"] == settings.champion
        assert (latest.score, latest.ts, latest.source) == (
            float(stored["score"]), float(stored["ts"]), stored["source"])
        assert [list(part) for part in latest.explain] == orjson.loads(stored["explain"])
        assert client.score("u7", "i9") is None

        ranked = redis_conn.zrevrange(f"top:{settings.champion}:u7", 0, -1, withscores=True)
        assert client.top("u7") == [(item.decode(), value) for item, value in ranked]
        assert [item for item, _ in client.top("u7", k=1)] == [ranked[0][0].decode()]

        before = time.time()
        why = client.explain("u7", "i1")
        item_hash = raw_hash(redis_conn, "fi:i1")
    assert why.score == latest
    (part,) = why.contributions  # item_ctr: the item's CTR is the score itself
    assert (part.feature, part.description) == ("i_ctr", "item smoothed CTR")
    assert part.value == part.contribution == round(latest.score, 6)
    newest = max(float(item_hash["last|click"]), float(item_hash["last|impression"]))
    assert before - newest <= part.age_s <= time.time() - newest


@pytest.mark.parametrize(("bad", "reason"), [
    (body(1, "teleport"), "unknown_type"),
    ({k: v for k, v in body(1).items() if k != "user_id"}, "invalid_event"),
    (body(1, user="has space"), "invalid_event"),
    ({**body(1), "ts": time.time() + 3600}, "clock_skew"),
    (body(1, context={f"k{n}": n for n in range(100)}), "too_many_context_keys"),
    (body(1, context={"when": object()}), "invalid_json"),
])
def test_invalid_events_raise_with_the_reason_and_are_not_sent(settings, bad, reason):
    with Client(settings) as client:
        with pytest.raises(InvalidEvent) as caught:
            client.publish(bad)
        assert caught.value.reason == reason and str(caught.value).startswith(reason)
        client.flush()
        assert published(settings) == 0
        client.publish(body(2))  # the check above would have seen a send
        client.flush()
    assert published(settings) == 1


def test_explain_without_a_score_is_none_and_the_default_model_follows_promotions(
        settings, redis_conn):
    from learnloop import serving

    with Client(settings) as client:
        assert client.explain("nobody", "i1") is None
        redis_conn.hset("score:logreg:u1:i1", mapping={
            "score": "0.25", "model": "logreg", "version": "4", "ts": "1.0", "event_id": "x",
            "source": "t/0/0", "scored_at": "2.0", "explain": "[]"})
        assert client.score("u1", "i1") is None  # the settings' champion has none
        serving.promote(redis_conn, settings, "logreg", "test")
        assert (client.score("u1", "i1").model, client.score("u1", "i1").score) == ("logreg", 0.25)
        assert client.score("u1", "i1", model=settings.champion) is None
