"""Restarts resume from the Redis watermarks: nothing is applied twice, nothing is lost."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from consumers.interactions import InteractionsConsumer
from learnloop.connect import redis_client
from learnloop.features import watermark_key
from learnloop.scoring import scored_watermark_key
from tests.conftest import event, read_topic, wait_for

N = 300
TYPES = ("impression", "impression", "impression", "click", "purchase")
EXPOSURES = sum(1 for n in range(N) if TYPES[n % len(TYPES)] == "impression")


def publish(producer, topic: str) -> dict[int, int]:
    """N events of 6 users (each user pinned to one of the 2 partitions); last offsets."""
    futures = []
    for n in range(N):
        type_, user = TYPES[n % len(TYPES)], f"u{n % 6}"
        extra = {"value": float(n % 13)} if type_ == "purchase" else {}
        futures.append(producer.send(
            topic, key=user.encode(), partition=n % 2,
            value=event(n, type_, user=user, item=f"i{n * 7 % 10}", **extra),
        ))
    producer.flush()
    ends: dict[int, int] = {}
    for future in futures:
        meta = future.get(timeout=10)
        ends[meta.partition] = max(ends.get(meta.partition, -1), meta.offset)
    assert sorted(ends) == [0, 1]
    return ends


def scored_up_to(client, topic: str, ends: dict[int, int]) -> bool:
    return all(client.get(scored_watermark_key(topic, p)) == str(o).encode()
               for p, o in ends.items())


def features_state(client) -> dict[bytes, object]:
    """Every feature hash, the stats hash and the feature watermarks, byte for byte."""
    out: dict[bytes, object] = {}
    for pattern in ("fu:*", "fi:*", "fui:*", "stats:*"):
        out |= {key: client.hgetall(key) for key in client.scan_iter(pattern)}
    out |= {key: client.get(key) for key in client.scan_iter("wm:features:*")}
    return out


def scores_state(client) -> tuple[dict, dict]:
    """(every score hash without ``scored_at`` plus every top-k set, the ``scored_at``s)."""
    values, scored_at = {}, {}
    for key in client.scan_iter("score:*"):
        fields = client.hgetall(key)
        scored_at[key] = float(fields.pop(b"scored_at"))
        values[key] = fields
    for key in client.scan_iter("top:*"):
        values[key] = client.zrange(key, 0, -1, withscores=True)
    return values, scored_at


def first_run(settings, producer, start_consumer, redis_conn):
    """Publish N events, run a consumer until both partitions are scored, stop it."""
    ends = publish(producer, settings.topic_interactions)
    running = start_consumer(settings)
    wait_for(lambda: scored_up_to(redis_conn, settings.topic_interactions, ends),
             what="first run to score both partitions")
    running.close()
    assert running.sample("learnloop_events_processed_total") == N
    features, (scores, scored_at) = features_state(redis_conn), scores_state(redis_conn)
    assert redis_conn.hget("stats:interactions", "events") == str(N).encode()
    assert len(scored_at) == len({(n % 6, n * 7 % 10) for n in range(N) if n % 5 < 3})
    return ends, features, scores, scored_at


def caught_up(running, topic: str) -> bool:
    """Both partitions assigned, fetched and processed: lag gauges exist and read 0."""
    lags = [running.registry.get_sample_value(
        "learnloop_consumer_lag_offsets", {"topic": topic, "partition": str(p)})
        for p in (0, 1)]
    return all(lag == 0 for lag in lags)


def test_second_consumer_in_the_same_group_resumes_after_the_watermark(
    settings, producer, start_consumer, redis_conn
):
    _, features, scores, scored_at = first_run(settings, producer, start_consumer, redis_conn)
    second = start_consumer(settings)
    wait_for(lambda: caught_up(second, settings.topic_interactions),
             what="second consumer assigned and caught up")
    for metric in ("replayed", "processed", "duplicate"):
        assert second.sample(f"learnloop_events_{metric}_total") == 0, metric
    assert second.sample("learnloop_scores_published_total", model=settings.champion) == 0
    assert features_state(redis_conn) == features
    assert scores_state(redis_conn) == (scores, scored_at)  # not even rewritten


def test_lost_scored_watermark_replays_everything_without_double_effects(
    settings, producer, start_consumer, redis_conn
):
    ends, features, scores, scored_at = first_run(settings, producer, start_consumer, redis_conn)
    topic = settings.topic_interactions
    # the crash: features and their watermark written, scores' watermark not
    assert redis_conn.delete(*(scored_watermark_key(topic, p) for p in ends)) == 2
    fresh_group = settings.model_copy(update={"consumer_group": f"{settings.consumer_group}-2"})
    replay = start_consumer(fresh_group)
    wait_for(lambda: scored_up_to(redis_conn, topic, ends), what="replay to score both")

    assert replay.sample("learnloop_events_replayed_total") == N
    assert replay.sample("learnloop_events_processed_total") == 0
    assert replay.sample("learnloop_scores_published_total", model=settings.champion) == EXPOSURES
    assert features_state(redis_conn) == features
    assert {redis_conn.get(watermark_key(topic, p)) for p in ends} == {
        str(o).encode() for o in ends.values()}
    new_scores, new_scored_at = scores_state(redis_conn)
    assert new_scores == scores
    assert all(new_scored_at[key] > scored_at[key] for key in scored_at), "not rewritten"

    # the scores topic is at-least-once: every exposure twice, with the same score
    published = read_topic(settings.kafka_bootstrap, settings.topic_scores, 2 * EXPOSURES)
    by_source: dict[str, set[float]] = {}
    for record in published:
        message = orjson.loads(record.value)
        by_source.setdefault(message["source"], set()).add(message["score"])
    assert len(published) == 2 * EXPOSURES and len(by_source) == EXPOSURES
    assert all(len(values) == 1 for values in by_source.values())


def test_a_failed_tail_stops_the_consumer_and_a_restart_scores_everything(
    settings, producer, start_consumer, redis_conn
):
    """A poll's tail runs on its own thread: its error reaches the main thread, and the
    poll scored meanwhile is not finished past it (its scored watermark would hide the
    failed tail's scores), so a restart scores every exposure."""
    small = settings.model_copy(update={"max_poll_records": 40})  # several polls in a row
    ends = publish(producer, small.topic_interactions)
    worker = InteractionsConsumer(small, redis_client(small), CollectorRegistry())
    writes = worker.score_writer.queue

    def broken(*args, **kwargs):
        raise RuntimeError("score write failed")

    worker.score_writer.queue = broken
    try:
        worker.subscribe()
        with pytest.raises(RuntimeError, match="score write failed"):
            wait_for(lambda: worker.poll_once() < 0, 60, "the tail's error")
    finally:
        worker.score_writer.queue = writes
        worker.close()  # finishes nothing more
    topic = small.topic_interactions
    assert all(redis_conn.get(scored_watermark_key(topic, p)) is None for p in ends)
    assert not list(redis_conn.scan_iter("score:*"))

    restarted = start_consumer(small)
    wait_for(lambda: scored_up_to(redis_conn, topic, ends), what="the restart to score both")
    assert restarted.sample("learnloop_scores_published_total", model=small.champion) == EXPOSURES
    assert redis_conn.hget("stats:interactions", "events") == str(N).encode()


def test_an_error_scoring_a_poll_drops_the_poll_sent_after_it(
    settings, producer, start_consumer, redis_conn
):
    """While a poll is scored the next one is already applied in Redis: when scoring
    fails, closing must not finish that next poll (its scored watermark would pass the
    failed poll's exposures), so a restart scores every exposure."""
    small = settings.model_copy(update={"max_poll_records": 40})  # several polls in a row
    ends = publish(producer, small.topic_interactions)
    worker = InteractionsConsumer(small, redis_client(small), CollectorRegistry())
    score, chunks = worker._score, []

    def failing(chunk) -> None:
        chunks.append(chunk)
        if len(chunks) == 3:
            raise RuntimeError("scoring failed")
        score(chunk)

    worker._score = failing
    try:
        worker.subscribe()
        with pytest.raises(RuntimeError, match="scoring failed"):
            wait_for(lambda: worker.poll_once() < 0, 60, "the scoring error")
    finally:
        worker.close()
    topic = small.topic_interactions
    failed = chunks[-1]
    scored = redis_conn.get(scored_watermark_key(topic, failed.tp.partition))
    assert scored is None or int(scored) < failed.records[0].offset

    start_consumer(small)
    wait_for(lambda: scored_up_to(redis_conn, topic, ends), what="the restart to score both")
    sources = {orjson.loads(record.value)["source"] for record in read_topic(
        small.kafka_bootstrap, small.topic_scores, 2 * EXPOSURES, timeout_s=5)}
    assert len(sources) == EXPOSURES


def test_a_poll_that_was_not_full_is_scored_without_waiting_for_the_next_poll(
    settings, producer, redis_conn
):
    """A consumer that has caught up scores what it polled at once: the scores of a
    poll that held fewer than ``max_poll_records`` become visible with no further poll
    (a full poll is held until the next one is sent to Redis: throughput)."""
    topic = settings.topic_interactions
    for n in range(20):
        producer.send(topic, key=b"u1", partition=0, value=event(n, user="u1", item=f"i{n}"))
    producer.flush()
    worker = InteractionsConsumer(settings, redis_client(settings), CollectorRegistry())
    try:
        worker.subscribe()
        held = wait_for(lambda: worker.poll_once(), 60, "a poll with records")
        assert held < settings.max_poll_records
        wait_for(lambda: redis_conn.get(scored_watermark_key(topic, 0)) == str(held - 1).encode(),
                 10, "its scores, with no further poll")
    finally:
        worker.close()
