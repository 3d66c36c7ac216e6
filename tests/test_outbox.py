"""The example outbox is trimmed through the last entry sent, found by its bytes: a
retried or stale trim never drops an example that was not sent (real Redis)."""

from __future__ import annotations

import orjson

from learnloop.features import outbox_key
from learnloop.outbox import Outbox


def entry(offset: int, seq: int = 0) -> bytes:
    return orjson.dumps({"source": [0, offset, seq], "features": {"u.click|3600": 1.5}})


def test_trim_drops_through_the_last_sent_entry_and_a_retry_drops_nothing(redis_conn):
    outbox = Outbox(redis_conn)
    sent = [entry(n) for n in range(5)]
    redis_conn.rpush(outbox_key("t", 0), *sent)

    assert outbox.trim_through("t", 0, sent[2]) == 3
    assert outbox.pending("t", 0) == sent[3:]
    newer = [entry(5), entry(5, 1)]
    redis_conn.rpush(outbox_key("t", 0), *newer)
    assert outbox.trim_through("t", 0, sent[2]) == 0  # the retry after a lost reply
    assert outbox.pending("t", 0) == sent[3:] + newer


def test_a_stale_trim_after_a_further_one_drops_nothing(redis_conn):
    """Two consumers read the outbox around a rebalance; the later trim went further."""
    outbox = Outbox(redis_conn)
    entries = [entry(n) for n in range(6)]
    redis_conn.rpush(outbox_key("t", 1), *entries)

    assert outbox.trim_through("t", 1, entries[4]) == 5
    assert outbox.trim_through("t", 1, entries[1]) == 0
    assert outbox.pending("t", 1) == entries[5:]


def test_trim_on_a_pipeline_matches_the_direct_call(redis_conn):
    outbox = Outbox(redis_conn)
    entries = [entry(n) for n in range(4)]
    redis_conn.rpush(outbox_key("t", 2), *entries)
    redis_conn.script_load(outbox.script.script)

    pipe = redis_conn.pipeline(transaction=False)
    outbox.queue_trim(pipe, "t", 2, entries[1])
    assert pipe.execute() == [2]
    assert outbox.pending("t", 2) == entries[2:]
