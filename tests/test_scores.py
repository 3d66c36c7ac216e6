"""The score script: a user's top-k set — every item scored goes in with its latest score,
and the lowest go out past k — and its TTL."""

from __future__ import annotations

import random

from learnloop.scoring import Score, ScoreWriter, top_key

T0 = 1_700_000_000.0


def write(client, writer: ScoreWriter, scores: dict[str, float], first_offset: int) -> int:
    """One call of the score script for user u1: ``scores`` by item, in order; the next
    offset."""
    batch = [(first_offset + n, Score("m", "1", "u1", item, value, f"e{first_offset + n}",
                                      T0, f"interactions/0/{first_offset + n}", [], T0))
             for n, (item, value) in enumerate(scores.items())]
    pipe = client.pipeline(transaction=False)
    writer.queue(pipe, "interactions", 0, batch, batch[-1][0])
    assert pipe.execute() == [len(batch)]
    return first_offset + len(batch)


def test_the_top_set_keeps_each_items_latest_score_and_drops_the_lowest_past_k(
    settings, redis_conn
):
    k = 5
    writer = ScoreWriter(redis_conn, settings.model_copy(update={"top_k": k}))
    redis_conn.script_load(writer.script.script)
    rng = random.Random(7)
    expected: dict[str, float] = {}
    offset = 0
    for _ in range(30):  # new items and rescored ones (up or down), several to a call
        batch = {f"i{rng.randrange(12)}": rng.random() for _ in range(rng.randint(1, 4))}
        offset = write(redis_conn, writer, batch, offset)
        for item, score in batch.items():
            expected[item] = score
            if len(expected) > k:
                del expected[min(expected, key=expected.__getitem__)]
        held = redis_conn.zrevrange(top_key("m", "u1"), 0, -1, withscores=True)
        assert [(item.decode(), score) for item, score in held] == sorted(
            expected.items(), key=lambda kv: kv[1], reverse=True)
    assert 0 < redis_conn.ttl(top_key("m", "u1")) <= settings.score_ttl_s
