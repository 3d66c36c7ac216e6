"""Hostile and broken input (issue 5, section 2): every bad message ends in the dead-letter
topic with its reason and original bytes, or is counted as a duplicate; the consumers
never crash or stall; every model parameter stays finite; and what is counted back —
dead letters by reason, duplicates, applied events — equals what was sent.

First the decoder alone (property-based, every category of :mod:`tests.hostile`, plus the
corpus), then over 10,000 bad messages through a real interactions consumer and learner
on the real broker and redis-server.
"""

from __future__ import annotations

import math
import random
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import orjson
import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka import KafkaProducer
from prometheus_client import CollectorRegistry
from river import linear_model, preprocessing

from consumers.interactions import InteractionsConsumer
from learnloop.connect import redis_client
from learnloop.deadletters import original_value
from learnloop.events import Event, Rejection
from learnloop.features import STATS_KEY, TOO_LATE, outbox_key
from learnloop.objective import FeedbackRule, Objective
from learnloop.scoring import score_key
from learnloop.settings import Settings
from learnloop.status import end_offsets
from tests.conftest import Running, make_settings, read_topic, wait_for
from tests.hostile import CATEGORIES, CORPUS, LIMITS, T0, dumps, epoch, random_body, rfc3339
from tests.test_dead_letters import scored_up_to
from tests.test_learner import RunningLearner, examples_made

NOW = T0 + 30 * 86_400
decoder = LIMITS.decoder()


# -- 1. the decoder ------------------------------------------------------------------------

@settings(max_examples=2000, deadline=None)
@given(rng=st.randoms(use_true_random=False), category=st.sampled_from(sorted(CATEGORIES)),
       n=st.integers(0, 10**6))
def test_every_generated_bad_message_is_rejected_for_its_reason(rng, category, n):
    body = random_body(rng, n)
    assert isinstance(decoder.decode(dumps(body), NOW), Event)  # only the mutation is wrong
    raw, reason = CATEGORIES[category](rng, body, LIMITS, NOW)
    result = decoder.decode(raw, NOW)
    assert isinstance(result, Rejection), f"{category} was accepted: {raw[:300]!r}"
    assert result.reason == reason, (category, result, raw[:300])
    assert result.detail


@pytest.mark.parametrize("case", CORPUS, ids=lambda case: case.name)
def test_corpus_message_gets_its_verdict(case):
    result = decoder.decode(case.raw, NOW)
    if case.reason is None:
        assert isinstance(result, Event), result
    else:
        assert isinstance(result, Rejection), result
        assert result.reason == case.reason, result


@pytest.mark.parametrize("opener, closer", [(b"[", b"]"), (b'{"a":', b"}")])
def test_nesting_far_past_the_recursion_limit_is_refused_by_the_parser(opener, closer):
    """Even when the size limit lets 100,000 levels through, nothing recurses that deep."""
    roomy = replace(LIMITS, max_bytes=10**7).decoder()
    nest = opener * 100_000 + b"1" + closer * 100_000
    inside = dumps({"event_id": "e1", "ts": T0, "user_id": "u1", "type": "impression",
                    "context": {"k": "@"}}).replace(b'"@"', nest)
    for raw in (nest, inside):
        assert roomy.decode(raw, NOW).reason == "invalid_json"
    shallow = opener * 1000 + b"1" + closer * 1000  # within the parser's depth: the model's
    assert roomy.decode(inside.replace(nest, shallow), NOW).reason == "invalid_event"


# -- 2. end to end: the plan ---------------------------------------------------------------

PARTITIONS, USERS, ITEMS = 2, 40, 20
LATENESS_S = 60
OBJECTIVES = {"ctr": Objective(exposures=("impression",),
                               feedback={"click": FeedbackRule(label=1, window_s=30)},
                               negative_label=0, allowed_lateness_s=LATENESS_S)}
APPLIED, DUPLICATE = "applied", "duplicate"
#: Valid context numbers no model should ever see unclipped.
EXTREME = (1e300, -1e300, 2**64 - 1, 5e-324, -0.0, 1e15)


@dataclass
class Planned:
    """One message to send, and what it must come to: applied, duplicate or a reason."""

    partition: int
    key: bytes | None
    value: bytes | None
    category: str
    expect: str
    body: dict | None = None  # valid events only
    offset: int = -1  # once sent


@dataclass
class Plan:
    """Messages in send order, judged as they are added: bad ones by their generator, valid
    ones by the rules the consumer must follow (a repeated event_id is a duplicate; an
    event older than its partition's newest applied event time minus the lateness is too
    late; the rest are applied)."""

    records: list[Planned] = field(default_factory=list)
    newest: list[float] = field(default_factory=lambda: [-math.inf] * PARTITIONS)
    seen: set[str] = field(default_factory=set)
    applied: list[list[dict]] = field(default_factory=lambda: [[] for _ in range(PARTITIONS)])

    def valid(self, partition: int, body: dict, category: str,
              raw: bytes | None = None) -> str:
        ts = epoch(body["ts"])
        if body["event_id"] in self.seen:
            expect = DUPLICATE
        elif ts < self.newest[partition] - LATENESS_S:
            expect = TOO_LATE
        else:
            expect = APPLIED
            self.newest[partition] = max(self.newest[partition], ts)
            self.applied[partition].append(body)
        self.seen.add(body["event_id"])
        self.records.append(Planned(partition, body["user_id"].encode(),
                                    dumps(body) if raw is None else raw, category, expect, body))
        return expect

    def bad(self, partition: int, key: bytes | None, raw: bytes | None, category: str,
            reason: str) -> None:
        self.records.append(Planned(partition, key, raw, category, reason))

    def expected(self) -> Counter:
        return Counter(r.expect for r in self.records)

    def dead_letters(self) -> list[Planned]:
        return [r for r in self.records if r.expect not in (APPLIED, DUPLICATE)]

    def applied_impressions(self) -> list[dict]:
        return [r.body for r in self.records
                if r.expect == APPLIED and r.body["type"] == "impression"]


def good_events(plan: Plan, rng: random.Random, k: int) -> None:
    """Impression ``k`` (10 s after the previous one) and, often for the first few items,
    its click a second later; now and then with extreme but valid context numbers."""
    user, item = rng.randrange(USERS), rng.randrange(ITEMS)
    context = {"position": rng.randrange(10)}
    if rng.random() < 0.1:
        context["boost"] = rng.choice(EXTREME)
    impression = {"event_id": f"g{k}", "ts": T0 + 10 * k, "user_id": f"user{user}",
                  "item_id": f"item{item}", "type": "impression", "context": context}
    assert plan.valid(user % PARTITIONS, impression, "good") == APPLIED
    if rng.random() < (0.6 if item < 5 else 0.1):
        click = {"event_id": f"k{k}", "ts": T0 + 10 * k + 1, "user_id": f"user{user}",
                 "item_id": f"item{item}", "type": "click"}
        if rng.random() < 0.5:
            click["exposure_id"] = impression["event_id"]
        assert plan.valid(user % PARTITIONS, click, "good") == APPLIED


def duplicate(plan: Plan, rng: random.Random, n: int) -> None:
    """An applied event again on its partition: verbatim (a retry) or changed but same id."""
    partition = rng.choice([p for p in range(PARTITIONS) if plan.applied[p]])
    original = rng.choice(plan.applied[partition])
    body = original if rng.random() < 0.5 else {**original, "type": "add_to_cart"}
    assert plan.valid(partition, body, "duplicate") == DUPLICATE


def too_late(plan: Plan, rng: random.Random, n: int) -> None:
    """A valid, new event from before its partition's event-time watermark."""
    partition = rng.choice([p for p in range(PARTITIONS) if plan.applied[p]])
    body = random_body(rng, n) | {"event_id": f"late{n}"}
    ts = max(plan.newest[partition] - LATENESS_S - rng.uniform(1e-3, 1e6), 0.0)
    body["ts"] = rng.choice([ts, rfc3339(ts), 0, -0.0])
    assert plan.valid(partition, body, "too_late") == TOO_LATE


def bad_message(plan: Plan, rng: random.Random, n: int, now: float) -> None:
    """One message of a category drawn at random (a generator's, a duplicate or too late)."""
    category = rng.choice([*sorted(CATEGORIES), "duplicate", "too_late"])
    if category == "duplicate":
        return duplicate(plan, rng, n)
    if category == "too_late":
        return too_late(plan, rng, n)
    body = random_body(rng, n) | {"event_id": f"b{n}"}
    raw, reason = CATEGORIES[category](rng, body, LIMITS, now)
    key = rng.choice([None, b"", body["user_id"].encode(), rng.randbytes(8)])
    if raw is None and key is None:  # a tombstone carries a key (Kafka requires one of the two)
        key = body["user_id"].encode()
    plan.bad(rng.randrange(PARTITIONS), key, raw, category, reason)


def hostile_plan(seed: int, impressions: int, bad_per_impression: int) -> Plan:
    """The corpus, then good impressions and clicks with bad messages in between, then an
    event per partition far enough ahead to close every exposure's window."""
    rng, plan, now = random.Random(seed), Plan(), time.time()
    for n, case in enumerate(CORPUS):
        partition = n % PARTITIONS
        if case.reason is None:
            body = orjson.loads(case.raw)
            plan.valid(partition, body, "corpus", raw=case.raw)
        else:
            plan.bad(partition, case.name.encode(), case.raw, "corpus", case.reason)
    n = 0
    for k in range(impressions):
        good_events(plan, rng, k)
        for _ in range(bad_per_impression):
            bad_message(plan, rng, n, now)
            n += 1
    end = T0 + 10 * impressions + 30 + LATENESS_S + 10
    for p in range(PARTITIONS):
        tick = {"event_id": f"tick{p}", "ts": end, "user_id": f"user{p}", "item_id": "item0",
                "type": "add_to_cart"}
        assert plan.valid(p, tick, "good") == APPLIED
    return plan


def test_the_plan_holds_over_10000_bad_messages_of_every_category():
    plan = hostile_plan(seed=2026, impressions=1500, bad_per_impression=7)
    categories = Counter(r.category for r in plan.records if r.expect != APPLIED)
    assert sum(categories.values()) >= 10_000
    assert set(categories) >= {*CATEGORIES, "duplicate", "too_late", "corpus"}
    assert min(c for name, c in categories.items() if name != "corpus") >= 300, categories
    assert set(plan.expected()) >= {*decoder.REASONS, TOO_LATE, DUPLICATE, APPLIED}


# -- 2. end to end: the run ----------------------------------------------------------------

def publish(settings: Settings, plan: Plan) -> dict[int, int]:
    """Send every planned message (raw bytes, explicit partition, in order); note each
    offset; return the last offset of each partition."""
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             linger_ms=20, batch_size=1 << 20,
                             max_in_flight_requests_per_connection=1)
    try:
        futures = [producer.send(settings.topic_interactions, partition=r.partition,
                                 key=r.key, value=r.value) for r in plan.records]
        producer.flush()
        for record, future in zip(plan.records, futures, strict=True):
            record.offset = future.get(timeout=10).offset
    finally:
        producer.close()
    ends: dict[int, int] = {}
    for record in plan.records:
        ends[record.partition] = max(ends.get(record.partition, -1), record.offset)
    return ends


@dataclass
class Outcome:
    plan: Plan
    settings: Settings
    client: redis.Redis
    consumer: Running
    learner: RunningLearner
    letters: list  # dead-letter records
    alive: bool  # both threads, at the end of the run
    lags: list[float | None]
    seconds: float


def lag(running: Running, settings: Settings, partition: int) -> float | None:
    return running.registry.get_sample_value(
        "learnloop_consumer_lag_offsets",
        {"topic": settings.topic_interactions, "partition": str(partition)})


def learned_everything(client: redis.Redis, settings: Settings, learner: RunningLearner,
                       examples: int) -> bool:
    outboxes = [outbox_key(settings.topic_interactions, p) for p in range(PARTITIONS)]
    return (client.exists(*outboxes) == 0 and examples_made(client) == examples
            and learner.state.examples == examples)


@pytest.fixture(scope="module")
def outcome(stack) -> Outcome:
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    settings = make_settings(
        stack, partitions=PARTITIONS, objectives=OBJECTIVES, max_event_bytes=LIMITS.max_bytes,
        max_context_keys=LIMITS.max_context_keys, max_clock_skew_s=LIMITS.max_clock_skew_s)
    plan = hostile_plan(seed=2026, impressions=1500, bad_per_impression=7)
    registry = CollectorRegistry()
    consumer = Running(InteractionsConsumer(settings, redis_client(settings), registry),
                       registry)
    learner = RunningLearner(settings, redis_client(settings))
    try:
        started = time.monotonic()
        ends = publish(settings, plan)
        wait_for(lambda: scored_up_to(client, settings.topic_interactions, ends), 90,
                 "every partition scored to its end")
        wait_for(lambda: all(lag(consumer, settings, p) == 0 for p in ends), 30, "zero lag")
        examples = len(plan.applied_impressions())
        wait_for(lambda: learned_everything(client, settings, learner, examples), 60,
                 lambda: f"{examples} examples learned, got {learner.state.examples}")
        seconds = time.monotonic() - started
        alive = consumer.thread.is_alive() and learner.thread.is_alive()
        lags = [lag(consumer, settings, p) for p in range(PARTITIONS)]
    finally:
        consumer.close()  # fails the run if either crashed
        learner.close()
    count = len(plan.dead_letters())
    letters = read_topic(settings.kafka_bootstrap, settings.topic_dead_letters, count)
    return Outcome(plan, settings, client, consumer, learner, letters, alive, lags, seconds)


def test_consumers_never_crash_or_stall(outcome):
    assert outcome.alive and outcome.consumer.error is None and outcome.learner.error is None
    assert outcome.lags == [0.0] * PARTITIONS
    assert outcome.seconds < 60, f"took {outcome.seconds:.1f}s"


def test_every_bad_message_is_one_dead_letter_with_its_reason_and_bytes(outcome):
    plan, settings = outcome.plan, outcome.settings
    expected = {(r.partition, r.offset): r for r in plan.dead_letters()}
    # (high watermarks from a fetch: the embedded broker's ListOffsets undercounts)
    assert sum(end_offsets(settings, settings.topic_dead_letters).values()) == len(expected)
    origins = []
    for record in outcome.letters:
        letter = orjson.loads(record.value)
        origin = letter["origin"]
        origins.append((origin["partition"], origin["offset"]))
        planned = expected[origins[-1]]
        assert (letter["reason"], letter["consumer"]) == (planned.expect, "interactions"), \
            (planned.category, letter)
        assert original_value(letter) == planned.value and record.key == planned.key
        assert origin["topic"] == settings.topic_interactions
        assert 0 < len(letter["detail"]) <= 1000
    assert sorted(origins) == sorted(expected)


def test_counters_equal_what_was_sent_by_reason(outcome):
    expected = outcome.plan.expected()
    reasons = {r: c for r, c in expected.items() if r not in (APPLIED, DUPLICATE)}
    sample = outcome.consumer.sample
    assert {r: sample("learnloop_events_rejected_total", reason=r) for r in reasons} == reasons
    assert sample("learnloop_events_duplicate_total") == expected[DUPLICATE]
    assert sample("learnloop_events_processed_total") == expected[APPLIED]
    stats = {k.decode(): int(v) for k, v in outcome.client.hgetall(STATS_KEY).items()}
    assert {k[9:]: v for k, v in stats.items() if k.startswith("rejected:")} == reasons
    assert (stats["events"], stats["duplicates"]) == (expected[APPLIED], expected[DUPLICATE])
    assert stats["exposures"] == len(outcome.plan.applied_impressions())


def test_every_valid_event_was_applied_and_every_impression_scored(outcome):
    client, champion = outcome.client, outcome.settings.champion
    applied = [r.body for r in outcome.plan.records if r.expect == APPLIED]
    missing = [b["event_id"] for b in applied if not client.exists(f"fu:{b['user_id']}")]
    assert not missing
    unscored = [b["event_id"] for b in outcome.plan.applied_impressions()
                if client.hget(score_key(champion, b["user_id"], b["item_id"]), "score") is None]
    assert not unscored


def test_every_feature_value_in_redis_is_finite(outcome):
    client = outcome.client
    hashes = [k for k in client.scan_iter(count=5000) if k.startswith((b"fu:", b"fi:", b"fui:"))]
    assert len(hashes) > USERS
    for key in hashes:
        values = [float(v) for v in client.hgetall(key).values()]
        assert all(math.isfinite(v) for v in values), key


def parameters(model) -> list[float]:
    """Every learned number of a River pipeline model: the scaler's means and variances,
    the regression's weights and intercept (none for models without a pipeline)."""
    numbers: list[float] = []
    for step in getattr(getattr(model, "pipeline", None), "steps", {}).values():
        if isinstance(step, preprocessing.StandardScaler):
            numbers += [*step.means.values(), *step.vars.values()]
        elif isinstance(step, linear_model.LogisticRegression):
            numbers += [*step.weights.values(), step.intercept]
    return numbers


def test_every_model_parameter_and_prediction_stays_finite(outcome):
    state = outcome.learner.state
    assert state.examples == len(outcome.plan.applied_impressions())
    logreg = parameters(state.models["logreg"])
    assert len(logreg) > 50, "the logistic regression learned nothing"
    hostile_x = outcome.learner.learner.featurize({}, T0, {"boost": 1e300, "position": -1e300})
    for name, model in state.models.items():
        assert all(math.isfinite(v) for v in parameters(model)), name
        assert 0.0 <= model.predict_one(hostile_x) <= 1.0, name
        assert math.isfinite(state.scores[name].report()["logloss"]), name
    assert outcome.learner.sample("learnloop_features_clipped_total", pattern="ctx_*") > 0, \
        "no extreme context number reached the learner: the finiteness check proved nothing"
