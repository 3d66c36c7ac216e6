"""Redelivery and rebalances apply nothing twice; a failed offset commit is counted only.

Kafka redelivers after a seek back, a rebalance, or a member that was too slow; the
Redis watermarks decide what is new, so none of these may change an effect.
"""

from __future__ import annotations

import time

import redis
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumers.interactions import InteractionsConsumer
from learnloop.connect import redis_client
from learnloop.demo import DEMO_OBJECTIVES
from learnloop.features import STATS_KEY, outbox_key
from learnloop.scoring import scored_watermark_key
from learnloop.settings import Settings
from learnloop.status import end_offsets
from tests.conftest import make_settings, wait_for
from tests.effects import assert_same_effects, publish, recorded_events, redis_state

BAD = [b"{not json", b"\xff\xfe", b'{"type": "impression"}']


def caught_up(client: redis.Redis, settings: Settings, ends: dict[int, int]) -> bool:
    topic = settings.topic_interactions
    return all(client.get(scored_watermark_key(topic, p)) == str(end - 1).encode()
               and not client.llen(outbox_key(topic, p)) for p, end in ends.items())


def progress(client: redis.Redis, settings: Settings, ends: dict[int, int]) -> dict:
    topic = settings.topic_interactions
    return {p: (client.get(scored_watermark_key(topic, p)), end - 1,
                client.llen(outbox_key(topic, p))) for p, end in ends.items()}


def output_ends(settings: Settings) -> dict[str, dict[int, int]]:
    return {topic: end_offsets(settings, topic) for topic in (
        settings.topic_scores, settings.topic_dead_letters, settings.topic_examples)}


def test_redelivering_10k_applied_records_changes_nothing(stack, redis_conn, start_consumer):
    settings = make_settings(stack, objectives=DEMO_OBJECTIVES, max_poll_records=1000)
    records = recorded_events(10_000 - len(BAD), 2) + [(n % 2, b"bad", raw)
                                                       for n, raw in enumerate(BAD)]
    publish(stack.kafka_bootstrap, settings.topic_interactions, records)
    ends = end_offsets(settings, settings.topic_interactions)
    running = start_consumer(settings)
    wait_for(lambda: caught_up(redis_conn, settings, ends), 120, "10k events applied")
    running.close()
    before, outputs = redis_state(redis_conn), output_ends(settings)
    assert outputs[settings.topic_dead_letters] and sum(
        outputs[settings.topic_dead_letters].values()) == len(BAD)

    registry = CollectorRegistry()
    worker = InteractionsConsumer(settings, redis_client(settings), registry)
    try:
        worker.subscribe()
        wait_for(lambda: worker.poll_once() == 0 and len(worker.consumer.assignment()) == 2,
                 30, "both partitions assigned (and resumed at their watermarks)")
        for tp in worker.consumer.assignment():
            worker.consumer.seek(tp, 0)  # the whole history again
        replayed = lambda: registry.get_sample_value("learnloop_events_replayed_total")  # noqa: E731
        wait_for(lambda: worker.poll_once() == 0 and replayed() == 10_000, 120,
                 "every record redelivered")
    finally:
        worker.close()
    assert redis_state(redis_conn) == before  # scores and their scored_at included
    assert output_ends(settings) == outputs  # no score, dead letter or example re-sent


def stall_once(worker: InteractionsConsumer, seconds: float) -> None:
    """Make the next batch of ``worker`` take ``seconds`` (longer than max_poll_interval),
    in its tail: the commit that ends the tail then fails."""
    original = worker.score_writer.queue

    def stalled(*args, **kwargs):
        worker.score_writer.queue = original
        time.sleep(seconds)
        return original(*args, **kwargs)

    worker.score_writer.queue = stalled


def applied(client: redis.Redis) -> int:
    return int(client.hget(STATS_KEY, "events") or 0)


def test_members_joining_leaving_and_overrunning_apply_nothing_twice(stack, redis_conn,
                                                                     start_consumer):
    settings = make_settings(stack, objectives=DEMO_OBJECTIVES, max_poll_records=100)
    oracle = make_settings(stack, topic_interactions=settings.topic_interactions,
                           objectives=DEMO_OBJECTIVES,
                           redis_url=SecretStr(f"redis://127.0.0.1:{stack.redis_port}/13"))
    records = recorded_events(3000, 2)
    thirds = [records[n * 1000:(n + 1) * 1000] for n in range(3)]

    publish(stack.kafka_bootstrap, settings.topic_interactions, thirds[0])
    first = start_consumer(settings)
    wait_for(lambda: applied(redis_conn) > 200, 60, "the first member applying")
    second = start_consumer(settings)  # joins: a rebalance
    publish(stack.kafka_bootstrap, settings.topic_interactions, thirds[1])
    wait_for(lambda: len(second.worker.consumer.assignment()) == 1, 60, "the second member's share")
    first.close()  # leaves: a rebalance
    wait_for(lambda: len(second.worker.consumer.assignment()) == 2, 60, "the rest to the second")
    stall_once(second.worker, 4.5)  # > max_poll_interval_ms (3 s): it is taken out
    publish(stack.kafka_bootstrap, settings.topic_interactions, thirds[2])
    commit_failures = "learnloop_commit_failures_total"
    wait_for(lambda: second.sample(commit_failures) >= 1, 30, "the late member's commit to fail")
    assert second.thread.is_alive() and second.error is None  # counted, not fatal
    third = start_consumer(settings)  # joins while the late member rejoins
    ends = end_offsets(settings, settings.topic_interactions)
    wait_for(lambda: caught_up(redis_conn, settings, ends), 120,
             lambda: f"every event applied: {progress(redis_conn, settings, ends)}")
    for member in (second, third):
        member.close()

    oracle_client = redis.Redis.from_url(oracle.redis_url.get_secret_value())
    oracle_client.flushdb()
    alone = start_consumer(oracle)
    wait_for(lambda: caught_up(oracle_client, oracle, ends), 120, "the oracle run")
    alone.close()
    stats = {k.decode(): int(v) for k, v in redis_conn.hgetall(STATS_KEY).items()}
    assert stats["events"] == 3000 and stats.get("duplicates", 0) == 0
    assert_same_effects(redis_state(oracle_client), redis_state(redis_conn), exact_items=False)
