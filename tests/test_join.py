"""The join against the real redis-server (and once the real broker): exposures plus
feedback become labeled examples in the partition's outbox — in event time, point in
time, exactly once, in the same partition as their source."""

from __future__ import annotations

import orjson
import pytest

from learnloop.events import Event
from learnloop.features import STATS_KEY, BatchResult, FeatureStore, decay_to, outbox_key
from learnloop.objective import FeedbackRule, Objective
from learnloop.scoring import Score, ScoreWriter
from learnloop.settings import load_settings
from tests.conftest import event, make_settings, read_examples, wait_for

T0 = 1_767_225_600.0  # 2026-01-01: months before the wall clock, so wall time never matters
TOPIC = "interactions"
CLICK_S, BUY_S, LATENESS_S = 60, 600, 10
CLOSE_S = BUY_S + LATENESS_S  # event time after an exposure at which its window closes
CTR = Objective(
    exposures=("impression",),
    feedback={"click": FeedbackRule(label=1, window_s=CLICK_S),
              "purchase": FeedbackRule(label=1, window_s=BUY_S),
              "dismiss": FeedbackRule(label=0, window_s=CLICK_S)},
    negative_label=0, allowed_lateness_s=LATENESS_S,
)
OBJECTIVES = {"ctr": CTR}


def ev(n: int, type_: str = "impression", dt: float = 0.0, user: str = "u1",
       item: str | None = "i1", **extra: object) -> Event:
    return Event(event_id=f"e{n}", ts=T0 + dt, user_id=user, item_id=item, type=type_, **extra)


def tick(n: int, dt: float) -> Event:
    """An event that only moves the partition's event time: no exposure, no feedback."""
    return ev(n, "add_to_cart", dt, user="bystander", item="i0")


class Partition:
    """One source partition: batches go in at consecutive offsets; its outbox read back."""

    def __init__(self, store: FeatureStore, number: int = 0) -> None:
        self.store, self.number, self.next_offset = store, number, 0

    def apply(self, *events: Event) -> BatchResult:
        items = list(enumerate(events, self.next_offset))
        self.next_offset += len(events)
        return self.store.apply_batch(TOPIC, self.number, items)

    def raw_outbox(self) -> list[bytes]:
        return self.store.client.lrange(outbox_key(TOPIC, self.number), 0, -1)

    def outbox(self) -> list[dict]:
        return [orjson.loads(raw) for raw in self.raw_outbox()]


def make_store(client, objectives: dict[str, Objective] = OBJECTIVES) -> FeatureStore:
    return FeatureStore(client, load_settings(objectives=objectives))


@pytest.fixture
def part(redis_conn) -> Partition:
    return Partition(make_store(redis_conn))


def unattributed(result: BatchResult) -> list[str]:
    return [o.status for o in result.outcomes if o.status.startswith("unattributed:")]


def join_counters(client) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(STATS_KEY).items()
            if k.startswith((b"examples:", b"unattributed:"))}


def summary(examples: list[dict]) -> list[tuple]:
    """(exposure, label, feedback type, label time relative to T0) per example."""
    return [(x["exposure_id"], x["label"], x["feedback"], float(x["label_ts"]) - T0)
            for x in examples]


def floats(features: dict) -> dict[str, float]:
    return {k: float(v) for k, v in features.items()}


# -- 1. negatives in event time ------------------------------------------------------------

def test_unanswered_exposures_turn_negative_once_each_when_event_time_passes(part, redis_conn):
    part.apply(ev(1), ev(2, item="i2"), ev(3, user="u2"), ev(4, dt=100, item="i3"))
    part.apply(tick(5, CLOSE_S - 1))  # offset 4: 1 s short of the threshold
    assert part.outbox() == [], "closed before watermark - lateness passed exposure + window"

    part.apply(tick(6, CLOSE_S + 1))  # offset 5: past it for e1..e3, not for e4 (at +100)
    first = part.outbox()
    assert summary(first) == [(f"e{n}", 0, "", BUY_S) for n in (1, 2, 3)]
    assert [x["source"] for x in first] == [[0, 5, 0], [0, 5, 1], [0, 5, 2]]
    assert all(float(x["label_ts"]) == float(x["exposure_ts"]) + BUY_S for x in first)

    # later events — newer, out of order, or just short of e4's threshold — add nothing
    part.apply(tick(7, CLOSE_S + 50), tick(8, 99), tick(9, 100 + CLOSE_S - 1))
    assert part.outbox() == first
    part.apply(tick(10, 100 + CLOSE_S + 1), tick(11, 5000), tick(12, 90_000))  # offsets 9..11
    assert [x["source"] for x in part.outbox()[3:]] == [[0, 9, 0]]
    assert summary(part.outbox()[3:]) == [("e4", 0, "", 100 + BUY_S)]
    assert join_counters(redis_conn) == {"examples:ctr:negative": 4}
    assert not list(redis_conn.scan_iter("pend:*")), "a resolved exposure is still pending"


# -- 2. feedback naming its exposure -------------------------------------------------------

def test_feedback_with_exposure_id_resolves_that_exposure_once(part, redis_conn):
    part.apply(ev(1), ev(2, dt=1), ev(3, dt=2, item="i2"))  # e2 is u1/i1's latest, e1 is named
    result = part.apply(
        ev(4, "click", dt=30, exposure_id="e1"),
        ev(5, "click", dt=40, exposure_id="e1"),  # e1 is already resolved
        ev(6, "dismiss", dt=50, item="i2", exposure_id="e3"),  # a label-0 feedback type
    )
    assert unattributed(result) == ["unattributed:ctr:no_pending_exposure"]
    part.apply(tick(7, 10_000))  # closes every window: only e2 is still unanswered
    assert summary(part.outbox()) == [
        ("e1", 1, "click", 30), ("e3", 0, "dismiss", 50), ("e2", 0, "", 1 + BUY_S)]
    assert join_counters(redis_conn) == {
        "examples:ctr:positive": 1, "examples:ctr:negative": 2,
        "unattributed:ctr:no_pending_exposure": 1}


# -- 3. feedback without exposure_id, and windows per feedback type ------------------------

def test_feedback_without_exposure_id_joins_the_latest_pending_exposure(part, redis_conn):
    part.apply(ev(1), ev(2, dt=10), ev(3, dt=20, item="i2"), ev(4, dt=20, user="u2"))
    result = part.apply(
        ev(5, "click", dt=30),  # u1/i1: the latest is e2
        ev(6, "click", dt=40),  # then e1, still pending and 40 s old
        ev(7, "click", dt=45),  # u1/i1 has none left; e3 (other item), e4 (other user) don't match
        ev(8, "click", dt=50, user="u3"),
        ev(9, "purchase", dt=320, user="u2"),  # 300 s after e4: inside the purchase window
    )
    assert unattributed(result) == ["unattributed:ctr:no_pending_exposure"] * 2
    assert summary(part.outbox()) == [
        ("e2", 1, "click", 30), ("e1", 1, "click", 40), ("e4", 1, "purchase", 320)]
    part.apply(tick(10, 20 + CLOSE_S + 1))
    assert summary(part.outbox()[3:]) == [("e3", 0, "", 20 + BUY_S)]
    assert join_counters(redis_conn) == {
        "examples:ctr:positive": 3, "examples:ctr:negative": 1,
        "unattributed:ctr:no_pending_exposure": 2}


@pytest.mark.parametrize("by_id", [
    True,
    False,
], ids=["with_exposure_id", "without_exposure_id"])
def test_feedback_after_its_types_window_is_outside_window_a_longer_type_joins(
    part, redis_conn, by_id
):
    link = {"exposure_id": "e1"} if by_id else {}
    late = part.apply(ev(1), ev(2, "click", dt=CLICK_S + 1, **link))
    assert unattributed(late) == ["unattributed:ctr:outside_window"]
    part.apply(ev(3, "purchase", dt=300, **link))
    assert summary(part.outbox()) == [("e1", 1, "purchase", 300)]
    assert join_counters(redis_conn) == {
        "examples:ctr:positive": 1, "unattributed:ctr:outside_window": 1}


# -- 4. point in time ----------------------------------------------------------------------

def test_an_example_carries_its_exposures_snapshot_not_its_own_feedback(part, redis_conn):
    first = part.apply(ev(1), ev(2, "click", dt=10))
    second = part.apply(ev(3, dt=100), ev(4, "click", dt=110))
    x1, x2 = part.outbox()
    assert x1["features"] == {} == first.outcomes[0].snapshot  # u1's first event ever
    assert floats(x2["features"]) == second.outcomes[0].snapshot
    one_click = 2 ** (-90 / 3600)  # e2's click, as of e3's time; e4 is not in it
    assert floats(x2["features"])["ui.click|3600"] == pytest.approx(one_click, rel=1e-12)
    assert float(x2["features"]["ui.t"]) == T0 + 100
    now = decay_to({k.decode(): float(v) for k, v in redis_conn.hgetall("fui:u1:i1").items()},
                   None)
    assert now["click|3600"] == pytest.approx(1 + 2 ** (-100 / 3600), rel=1e-12)  # counts e4


def test_an_exposure_arriving_after_newer_feedback_is_scored_but_never_learned(part, redis_conn):
    """Its snapshot cannot be point-in-time (its own click is already counted), so it
    must not become an example — least of all a label-0 one carrying that click."""
    part.apply(ev(1, "click", dt=10), ev(2))  # the click reaches the partition first
    part.apply(ev(3, dt=20, item="i2"), tick(4, CLOSE_S + 30))
    assert [x["exposure_id"] for x in part.outbox()] == ["e3"]
    stats = redis_conn.hgetall(STATS_KEY)
    assert stats[b"late_exposures:ctr"] == b"1"
    assert stats[b"unattributed:ctr:no_pending_exposure"] == b"1"


# -- 5. replay determinism -----------------------------------------------------------------

HISTORY = [
    ev(1, context={"pos": 1}), ev(2, user="u2"), ev(3, "click", dt=5),
    ev(4, dt=10, item="i2"), ev(5, "click", dt=20, user="u2", exposure_id="e2"),
    ev(6, "click", dt=25, exposure_id="e2"), tick(7, CLOSE_S + 10),
    ev(8, dt=CLOSE_S + 20), ev(9, dt=CLOSE_S + 20, item="i3"), ev(10, dt=CLOSE_S + 20, item="i4"),
    ev(11, "purchase", dt=CLOSE_S + 300), ev(12, "click", user="u2", dt=CLOSE_S + 400),
    tick(13, 3 * CLOSE_S),
]


def apply_split(store: FeatureStore, events: list[Event], cuts: list[int]) -> None:
    """``events`` at offsets 0.., in batches starting at each index of ``cuts``."""
    items = list(enumerate(events))
    for start, stop in zip([0, *cuts], [*cuts, len(items)], strict=True):
        store.apply_batch(TOPIC, 0, items[start:stop])


def test_replay_gives_byte_identical_outboxes_and_applied_offsets_add_nothing(
    part, redis_conn
):
    store = part.store
    apply_split(store, HISTORY, [])
    once = part.raw_outbox()
    assert {x["label"] for x in part.outbox()} == {0, 1} and len(once) == 6
    stats = redis_conn.hgetall(STATS_KEY)
    for cuts in ([4, 7, 11], list(range(1, len(HISTORY)))):
        redis_conn.flushdb()
        apply_split(store, HISTORY, cuts)
        assert part.raw_outbox() == once, f"batches split at {cuts}"
        assert redis_conn.hgetall(STATS_KEY) == stats

    apply_split(store, HISTORY, [5])  # every offset again: nothing new
    assert part.raw_outbox() == once
    redis_conn.delete(outbox_key(TOPIC, 0))  # as after publishing
    apply_split(store, HISTORY, [3, 9])
    assert part.raw_outbox() == [] and redis_conn.hgetall(STATS_KEY) == stats


# -- 6. what an example carries ------------------------------------------------------------

def test_examples_carry_source_times_ids_and_the_exposures_context(part):
    context = {"device": "ios", "position": 3, "promoted": True, "boost": 0.25}
    exposed = part.apply(ev(1, context=context), ev(2, item="i2"))  # offsets 0, 1
    part.apply(ev(3, "click", dt=7))  # offset 2
    part.apply(tick(4, CLOSE_S + 1))  # offset 3
    positive, negative = ({**x, "exposure_ts": float(x["exposure_ts"]),
                           "label_ts": float(x["label_ts"]),
                           "features": floats(x["features"])} for x in part.outbox())
    assert positive == {
        "objective": "ctr", "exposure_id": "e1", "user_id": "u1", "item_id": "i1",
        "label": 1, "feedback": "click", "exposure_ts": T0, "label_ts": T0 + 7,
        "context": context, "features": {}, "source": [0, 2, 0]}
    assert negative == {
        "objective": "ctr", "exposure_id": "e2", "user_id": "u1", "item_id": "i2",
        "label": 0, "feedback": "", "exposure_ts": T0, "label_ts": T0 + BUY_S,
        "context": {}, "features": exposed.outcomes[1].snapshot, "source": [0, 3, 0]}
    assert negative["features"]["u.impression|3600"] == 1.0  # e1 counted, e2 itself not


def test_exposure_times_are_the_events_own_text_even_from_records_written_before_it(part):
    """A pending record keeps its exposure's time as the consumer's text; one written by
    an earlier version (a number, ``t``) still joins, either way."""
    part.apply(ev(1, dt=0.123456), ev(2, item="i2", dt=0.5))  # offsets 0, 1
    stored = part.store.client.get("pend:ctr:e2")
    old_form = stored.replace(b'"s":"1767225600.5"', b'"t":1767225600.5')
    assert b'"t":' in old_form
    part.store.client.set("pend:ctr:e2", old_form)
    part.apply(ev(3, "click", dt=7.25))  # offset 2: answers e1
    part.apply(tick(4, CLOSE_S + 1))  # offset 3: e2 (the old record) turns negative
    positive, negative = part.outbox()
    assert (positive["exposure_ts"], positive["label_ts"]) == (repr(T0 + 0.123456), repr(T0 + 7.25))
    assert float(negative["exposure_ts"]) == T0 + 0.5
    assert float(negative["label_ts"]) == T0 + 0.5 + BUY_S


def test_every_example_of_a_partition_has_a_distinct_increasing_source(redis_conn):
    quick = Objective(feedback={"click": FeedbackRule(window_s=30)}, allowed_lateness_s=0)
    part = Partition(make_store(redis_conn, {"ctr": CTR, "quick": quick}))
    part.apply(ev(1), ev(2, dt=1, item="i2"), ev(3, "click", dt=5), tick(4, 2 * CLOSE_S))
    examples = part.outbox()
    assert len(examples) == 4  # e1 positive and e2 negative, for each objective
    sources = [tuple(x["source"]) for x in examples]
    assert sources == sorted(set(sources)), sources  # the learner skips any not increasing


# -- 7. how long a snapshot is kept --------------------------------------------------------

def write_scores(part: Partition, *offsets_and_ids: tuple[int, str], last_offset: int,
                 objectives: dict[str, Objective] = OBJECTIVES) -> None:
    """What the consumer does after scoring: the scores of those exposures, and the
    partition's scored watermark, in one call of the score script."""
    writer = ScoreWriter(part.store.client, load_settings(objectives=objectives))
    scores = [(offset, Score("m", "1", "u1", "i1", 0.5, event_id, T0, "model", [], T0))
              for offset, event_id in offsets_and_ids]
    pipe = part.store.client.pipeline(transaction=False)
    pipe.script_load(writer.script.script)
    writer.queue(pipe, TOPIC, part.number, scores, last_offset)
    pipe.execute()


def snapshots(client) -> set[str]:
    return {k.decode() for k in client.scan_iter("snap:*")}


def test_a_snapshot_is_dropped_once_its_exposure_is_scored_and_resolved_either_order(
    part, redis_conn
):
    part.apply(ev(1), ev(2, item="i2"))  # offsets 0, 1
    write_scores(part, (0, "e1"), (1, "e2"), last_offset=1)
    assert snapshots(redis_conn) == {"snap:e1", "snap:e2"}, "pending: the examples need them"
    part.apply(ev(3, "click", dt=5))  # resolves e1, scored already
    assert snapshots(redis_conn) == {"snap:e2"}

    part.apply(ev(4, dt=10, item="i3"), ev(5, "click", dt=11, item="i3"))  # offsets 3, 4
    assert snapshots(redis_conn) == {"snap:e2", "snap:e4"}, "resolved, not scored: kept"
    replay = part.store.apply_batch(TOPIC, 0, [(3, ev(4, dt=10, item="i3"))])
    assert replay.outcomes[0].status == "replay" and replay.outcomes[0].snapshot is not None
    write_scores(part, (3, "e4"), last_offset=4)
    assert snapshots(redis_conn) == {"snap:e2"}

    part.apply(tick(6, CLOSE_S + 1))  # e2's window closes: its negative example
    assert [x["exposure_id"] for x in part.outbox()] == ["e1", "e4", "e2"]
    assert snapshots(redis_conn) == set()


def test_a_snapshot_is_kept_while_another_objective_still_waits_for_its_label(redis_conn):
    quick = Objective(feedback={"click": FeedbackRule(window_s=30)}, allowed_lateness_s=0)
    objectives = {"ctr": CTR, "quick": quick}
    part = Partition(make_store(redis_conn, objectives))
    part.apply(ev(1))
    write_scores(part, (0, "e1"), last_offset=0, objectives=objectives)
    part.apply(tick(2, 31))  # "quick" closes e1's window; "ctr" still waits
    assert snapshots(redis_conn) == {"snap:e1"}
    part.apply(ev(3, "purchase", dt=40))
    assert snapshots(redis_conn) == set()
    assert sorted((x["objective"], x["label"]) for x in part.outbox()) == [
        ("ctr", 1), ("quick", 0)]


# -- 8. end to end -------------------------------------------------------------------------

def test_examples_reach_the_examples_topic_in_their_source_partition(
    stack, redis_conn, producer, start_consumer
):
    settings = make_settings(stack, objectives=OBJECTIVES)
    running = start_consumer(settings)
    expected = {}  # partition -> {exposure_id: label}
    for p, items in ((0, 2), (1, 3)):  # impressions of items 1..n; user u{p} clicks item 1
        base = 100 * p
        raw = [event(base + n, user=f"u{p}", item=f"i{n}") for n in range(1, items + 1)]
        raw += [event(base + 50, "click", user=f"u{p}", item="i1"),
                event(base + 99, "add_to_cart", user=f"u{p}", item="i0", ts=T0 + CLOSE_S)]
        for value in raw:
            producer.send(settings.topic_interactions, partition=p, value=value)
        expected[p] = {f"e{base + n}": int(n == 1) for n in range(1, items + 1)}
    producer.flush()

    got = {0: {}, 1: {}}
    for partition, example in read_examples(settings.kafka_bootstrap, settings.topic_examples, 5):
        assert partition == example["source"][0], example
        got[partition][example["exposure_id"]] = example["label"]
    assert got == expected

    outboxes = [outbox_key(settings.topic_interactions, p) for p in (0, 1)]
    wait_for(lambda: redis_conn.exists(*outboxes) == 0, what="drained outboxes")
    published = {label: running.sample("learnloop_examples_published_total", label=label)
                 for label in ("positive", "negative")}
    assert published == {"positive": 2, "negative": 3}
    assert join_counters(redis_conn) == {"examples:ctr:positive": 2, "examples:ctr:negative": 3}
