"""Bad messages go to the dead-letter topic, intact and explained, and block nothing."""

from __future__ import annotations

import orjson

from learnloop.deadletters import original_value
from learnloop.events import EventDecoder
from learnloop.features import STATS_KEY, FeatureStore
from learnloop.scoring import score_key, scored_watermark_key
from tests.conftest import event, read_topic, wait_for
from tests.hostile import T0


def send(producer, topic: str, value: bytes, key: bytes | None = None,
         partition: int | None = None) -> tuple[int, int]:
    """Publish one record and return its (partition, offset)."""
    meta = producer.send(topic, key=key, value=value, partition=partition).get(timeout=10)
    return meta.partition, meta.offset


def dead_letter_origins(settings) -> list[tuple[int, int]]:
    """(partition, offset) of the origin of every dead letter on the topic, sorted. Read
    until the topic stays quiet: the embedded broker's end offsets undercount a topic
    whose records arrived several to a batch."""
    letters = read_topic(settings.kafka_bootstrap, settings.topic_dead_letters, 10**9,
                         timeout_s=3.0)
    origins = [orjson.loads(r.value)["origin"] for r in letters]
    return sorted((o["partition"], o["offset"]) for o in origins)


def scored_up_to(client, topic: str, ends: dict[int, int]) -> bool:
    """True once every partition's scored watermark has reached its last offset."""
    return all(client.get(scored_watermark_key(topic, p)) == str(o).encode()
               for p, o in ends.items())


def bad_messages(max_bytes: int) -> dict[str, tuple[str, bytes]]:
    """One message of each bad kind: name -> (expected reason, raw bytes)."""
    valid = orjson.loads(event(900))
    return {
        "non_json": ("invalid_json", b'{"event_id": "e901", "ts": '),
        "non_utf8": ("not_utf8", b'{"event_id": "\xff\xfe\xfa"}'),
        "missing_field": ("invalid_event", orjson.dumps(
            {k: v for k, v in valid.items() if k != "user_id"} | {"event_id": "e902"})),
        "wrong_type": ("invalid_event", orjson.dumps({**valid, "event_id": "e903",
                                                      "user_id": 17})),
        "unknown_type": ("unknown_type", orjson.dumps({**valid, "event_id": "e904",
                                                        "type": "teleport"})),
        "oversized": ("too_large", event(905, context={"pad": "x" * 200})
                      + b" " * max_bytes),
    }


def test_bad_messages_are_dead_lettered_with_origin_and_original_bytes(
    settings, producer, start_consumer, redis_conn
):
    running = start_consumer(settings)
    topic = settings.topic_interactions
    bad = bad_messages(settings.max_event_bytes)
    valid = {n: (f"u{n % 3}", f"i{n}") for n in range(1, 7)}
    sent_bad, ends = {}, {}
    for (n, (user, item)), (name, (_, raw)) in zip(valid.items(), bad.items(), strict=True):
        where = send(producer, topic, event(n, user=user, item=item), key=user.encode())
        ends[where[0]] = max(ends.get(where[0], -1), where[1])
        where = send(producer, topic, raw, key=name.encode())
        ends[where[0]] = max(ends.get(where[0], -1), where[1])
        sent_bad[where] = name

    letters = read_topic(settings.kafka_bootstrap, settings.topic_dead_letters, len(bad))
    assert len(letters) == len(bad)
    for record in letters:
        letter = orjson.loads(record.value)
        origin = letter["origin"]
        assert origin["topic"] == topic
        name = sent_bad[(origin["partition"], origin["offset"])]
        reason, raw = bad[name]
        assert (letter["reason"], letter["consumer"]) == (reason, "interactions"), name
        assert letter["detail"] and len(letter["detail"]) <= 1000
        assert original_value(letter) == raw, name
        assert record.key == name.encode()

    wait_for(lambda: scored_up_to(redis_conn, topic, ends), what="every partition scored")
    expected = {"invalid_json": 1, "not_utf8": 1, "invalid_event": 2, "unknown_type": 1,
                "too_large": 1}
    for reason, count in expected.items():
        assert running.sample("learnloop_events_rejected_total", reason=reason) == count, reason
    stats = {k.decode(): int(v) for k, v in redis_conn.hgetall(STATS_KEY).items()}
    assert stats == {"events": len(valid), "exposures": len(valid),
                     **{f"rejected:{r}": c for r, c in expected.items()}}
    # bad input blocked nothing: every valid impression was applied and scored
    assert running.sample("learnloop_events_processed_total") == len(valid)
    for user, item in valid.values():
        assert redis_conn.hget(score_key(settings.champion, user, item), "score") is not None


def test_dead_letter_is_not_resent_when_a_restart_replays_its_offset(
    settings, producer, start_consumer, redis_conn
):
    """After a crash between the feature write and the score write, the replayed batch
    must not dead-letter again what the feature watermark says was already handled."""
    topic = settings.topic_interactions
    send(producer, topic, b"not json", partition=0)                     # p0 offset 0
    send(producer, topic, event(1), partition=1)                        # p1 offset 0
    send(producer, topic, b"not json either", partition=1)              # p1 offset 1
    ends = {0: 0, 1: 1}
    first = start_consumer(settings)
    wait_for(lambda: scored_up_to(redis_conn, topic, ends), what="first run scored")
    first.close()
    assert dead_letter_origins(settings) == [(0, 0), (1, 1)]

    redis_conn.delete(*(scored_watermark_key(topic, p) for p in ends))  # the "crash"
    second = start_consumer(settings)
    wait_for(lambda: scored_up_to(redis_conn, topic, ends), what="replay scored")
    assert second.sample("learnloop_events_replayed_total") == 3
    assert second.sample("learnloop_events_rejected_total", reason="invalid_json") == 0
    assert redis_conn.hget(STATS_KEY, "rejected:invalid_json") == b"2"
    assert dead_letter_origins(settings) == [(0, 0), (1, 1)]


def test_a_too_late_event_is_dead_lettered_after_a_crash_right_after_the_redis_step(
    settings, producer, start_consumer, redis_conn
):
    """The Lua step decides "too late" (its watermark lives in Redis), so the dead letter is
    sent after it: a crash in between must not lose it — the replay reports it again."""
    topic = settings.topic_interactions
    raws = [event(1, ts=T0 + 3600), event(2, ts=T0)]  # e2 is an hour behind e1: too late
    for raw in raws:
        send(producer, topic, raw, partition=0)
    decoder = EventDecoder(settings.event_types, settings.max_event_bytes,
                           settings.max_context_keys)
    FeatureStore(redis_conn, settings).apply_batch(  # what the consumer did before it died
        topic, 0, [(offset, decoder.decode(raw)) for offset, raw in enumerate(raws)])

    running = start_consumer(settings)
    (record,) = read_topic(settings.kafka_bootstrap, settings.topic_dead_letters, 1)
    letter = orjson.loads(record.value)
    assert (letter["reason"], letter["origin"]["offset"]) == ("too_late", 1)
    assert original_value(letter) == raws[1] and "older" in letter["detail"]
    wait_for(lambda: scored_up_to(redis_conn, topic, {0: 1}), what="replay scored")
    assert dead_letter_origins(settings) == [(0, 1)]
    assert running.sample("learnloop_events_rejected_total", reason="too_late") == 0  # a replay
    assert redis_conn.hget(STATS_KEY, "rejected:too_late") == b"1"  # counted once, by Redis
