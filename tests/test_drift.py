"""Drift: the monitor detects abrupt changes and stays quiet on stationary input, its
cooldown and pickling behave, alerts go out once (topic, Redis stream, Prometheus), the
responses do what they say, and a proven challenger is promoted once — against the real
broker and redis-server where they are involved."""

from __future__ import annotations

import math
import pickle
import random
import time

import orjson
import pytest
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry
from river import stats

import models
from consumers.learner import LearnerState
from learnloop import alerts, responses, serving
from learnloop.alerts import STREAM, AlertSink, recent_alerts
from learnloop.checkpoints import checkpoint_store
from learnloop.drift import Alert, DriftMonitor
from learnloop.metrics import DriftMetrics
from learnloop.objective import FeedbackRule, Objective
from learnloop.responses import WHO, promote_ready, ready_to_promote, respond
from learnloop.settings import load_settings
from tests.conftest import read_topic, wait_for
from tests.test_learner import RunningLearner, quick_settings, send

N, CHANGE = 2000, 1000  # stream length and where the abrupt change happens


# -- the monitor -----------------------------------------------------------------------------

def monitor(cooldown_s: float = 0.0, max_features: int = 4) -> DriftMonitor:
    return DriftMonitor("ADWIN", {}, cooldown_s=cooldown_s, max_features=max_features)


def loss_stream(seed: int, drift: bool, n: int = N) -> list[float]:
    """Per-example losses: exponential with mean 0.3, then 0.7 from CHANGE on if ``drift``."""
    rng = random.Random(seed)
    return [rng.expovariate(1 / (0.7 if drift and i >= CHANGE else 0.3)) for i in range(n)]


def label_stream(seed: int, drift: bool) -> list[bool]:
    """Labels: positive rate 0.1, then 0.5 from CHANGE on if ``drift``."""
    rng = random.Random(seed)
    return [rng.random() < (0.5 if drift and i >= CHANGE else 0.1) for i in range(N)]


def feature_stream(seed: int, drift: bool) -> list[dict[str, float]]:
    """Inputs: ``a`` ~ N(0, 1) moving to N(2, 1) at CHANGE if ``drift``; ``b`` ~ N(5, 1)."""
    rng = random.Random(seed)
    return [{"a": rng.gauss(2.0 if drift and i >= CHANGE else 0.0, 1.0), "b": rng.gauss(5, 1)}
            for i in range(N)]


def observe(mon: DriftMonitor, kind: str, values: list, start: int = 0) -> list[Alert]:
    """Feed ``values`` (signal ``kind``) at event time = index, as the learner would."""
    alerts: list[Alert] = []
    for i, value in enumerate(values[start:], start=start):
        where = f"0/{i}"
        if kind == "loss":
            alerts += mon.observe_loss("logreg", value, float(i), where)
        elif kind == "label":
            alerts += mon.observe_label("engagement", value, float(i), where)
        else:
            alerts += mon.observe_features("engagement", value, float(i), where)
    return alerts


def at(alert: Alert) -> int:
    return int(alert.where.split("/")[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("kind", "streams", "who", "signal", "low", "high"), [
    ("loss", loss_stream, "logreg", "concept", 0.3, 0.7),
    ("label", label_stream, "objective:engagement", "label", 0.1, 0.5),
    ("feature", feature_stream, "objective:engagement", "feature:a", 0.0, 2.0),
])
def test_an_abrupt_change_is_detected_soon_after_and_a_stationary_stream_stays_quiet(
    seed, kind, streams, who, signal, low, high
):
    drifted = observe(monitor(), kind, streams(seed, drift=True))
    assert [(a.model, a.signal, a.detector) for a in drifted] == [(who, signal, "ADWIN")]
    alert = drifted[0]
    assert CHANGE <= at(alert) < CHANGE + 200  # ADWIN checks every 32 values
    assert alert.event_time == float(at(alert))
    # the level since the last drift, and the level of the last values: around each side
    assert alert.before < low + 0.25 * (high - low) < low + 0.4 * (high - low) < alert.after
    assert observe(monitor(), kind, streams(seed, drift=False)) == []


def test_feature_drift_watches_only_the_first_max_features_names_in_sorted_order():
    mon = monitor(max_features=2)
    mon.observe_features("engagement", {"c": 1.0, "a": 1.0, "b": 1.0}, 0.0, "0/0")
    mon.observe_features("engagement", {"0": 1.0, "d": 1.0}, 1.0, "0/1")
    assert mon.features == ["a", "b"]
    assert mon.watches.keys() == {("objective:engagement", "feature:a"),
                                  ("objective:engagement", "feature:b")}


def two_changes(seed: int) -> list[float]:
    """Loss 0.3 → 0.8 at 1000 → 0.3 at 2000: two detections, about 1000 apart."""
    rng = random.Random(seed)
    return [rng.expovariate(1 / (0.8 if 1000 <= i < 2000 else 0.3)) for i in range(3000)]


def test_the_cooldown_suppresses_a_second_alert_of_the_same_signal_within_it_not_after():
    values = two_changes(seed=0)
    first, second = observe(monitor(cooldown_s=0), "loss", values)
    gap = second.event_time - first.event_time
    assert 500 < gap < 1500
    # within the cooldown (event time) the second detection is not published…
    assert observe(monitor(cooldown_s=gap + 1), "loss", values) == [first]
    # …from the cooldown on it is
    assert observe(monitor(cooldown_s=gap), "loss", values) == [first, second]


def test_the_cooldown_is_per_model_and_signal():
    mon = monitor(cooldown_s=10_000)
    losses, labels = two_changes(seed=1), two_changes(seed=2)
    alerts = []
    for i in range(3000):
        alerts += mon.observe_loss("logreg", losses[i], float(i), f"0/{i}")
        alerts += mon.observe_loss("item_ctr", labels[i], float(i), f"0/{i}")
    assert sorted(a.model for a in alerts) == ["item_ctr", "logreg"]  # one each, not one


def test_a_monitor_pickled_mid_stream_continues_exactly_like_an_uninterrupted_one():
    """As in a learner checkpoint: detector windows, means and cooldowns survive."""
    losses, labels, inputs = two_changes(3), label_stream(3, True), feature_stream(3, True)

    def feed(mon: DriftMonitor, start: int, stop: int) -> list[Alert]:
        alerts = []
        for i in range(start, stop):
            where, ts = f"0/{i}", float(i)
            alerts += mon.observe_label("engagement", labels[i % N], ts, where)
            alerts += mon.observe_features("engagement", inputs[i % N], ts, where)
            alerts += mon.observe_loss("logreg", losses[i], ts, where)
        return alerts

    whole = feed(monitor(cooldown_s=1500), 0, 3000)
    # every signal changes at 1000 and back at 2000: the second detections fall within
    # the cooldown, so the pickled cooldown state matters as much as the detectors'
    assert {a.signal for a in whole} == {"label", "feature:a", "concept"}
    assert len(feed(monitor(cooldown_s=0), 0, 3000)) > len(whole)
    for cut in (500, 1037, 1500, 2070, 2500):
        resumed = monitor(cooldown_s=1500)
        before = feed(resumed, 0, cut)
        restored = pickle.loads(pickle.dumps(resumed, protocol=pickle.HIGHEST_PROTOCOL))
        assert before + feed(restored, cut, 3000) == whole, cut


def test_a_checkpoint_whose_watches_hold_rivers_mean_loads_and_continues_alike():
    """Checkpoints written before ``RunningMean`` hold River's ``stats.Mean`` per watch."""
    labels, inputs = label_stream(3, True), feature_stream(3, True)

    def feed(mon: DriftMonitor, start: int, stop: int) -> list[Alert]:
        alerts = []
        for i in range(start, stop):
            alerts += mon.observe_label("engagement", labels[i % N], float(i), f"0/{i}")
            alerts += mon.observe_features("engagement", inputs[i % N], float(i), f"0/{i}")
        return alerts

    whole = feed(monitor(cooldown_s=0), 0, 3000)
    old = monitor(cooldown_s=0)
    before = feed(old, 0, 1500)
    for watch in old.watches.values():
        legacy = stats.Mean()
        legacy.update(watch.mean.get(), w=watch.mean.n)
        watch.mean = legacy
    restored = pickle.loads(pickle.dumps(old))
    after = feed(restored, 1500, 3000)

    assert after and {a.signal for a in after} == {"label", "feature:a"}
    assert [(a.signal, a.where, a.after) for a in before + after] == [
        (a.signal, a.where, a.after) for a in whole]
    assert [a.before for a in before + after] == pytest.approx([a.before for a in whole])


# -- publishing alerts ------------------------------------------------------------------------

ALERT = Alert("logreg", "concept", "ADWIN", 1_767_225_600.5, "0/42", 0.31, 0.72)


def topic_count(bootstrap: str, topic: str) -> int:
    reader = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        parts = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic)]
        return sum(reader.end_offsets(parts).values())
    finally:
        reader.close()


def test_an_alert_is_published_once_to_the_topic_the_stream_and_prometheus(
    settings, redis_conn, producer, monkeypatch
):
    registry = CollectorRegistry()
    hold_s = 30.0  # the clock is moved past it below: no race with a slow machine
    sink = AlertSink(redis_conn, producer, settings.topic_drift_alerts, DriftMetrics(registry),
                     hold_s=hold_s, stream_max=100)

    def sample(name: str) -> float | None:
        return registry.get_sample_value(name, {"model": "logreg", "signal": "concept"})

    assert sink.publish(ALERT) is True
    assert sink.publish(ALERT) is False  # the same id: detected again after a restart
    # a second sink (a restarted learner) does not send it either
    assert AlertSink(redis_conn, producer, settings.topic_drift_alerts,
                     DriftMetrics(CollectorRegistry()), 0.3, 100).publish(ALERT) is False

    [record] = read_topic(settings.kafka_bootstrap, settings.topic_drift_alerts, 1)
    assert record.key == b"logreg"
    assert orjson.loads(record.value) == {**ALERT.as_dict(), "id": "logreg|concept|0/42"}
    assert topic_count(settings.kafka_bootstrap, settings.topic_drift_alerts) == 1
    assert redis_conn.xlen(STREAM) == 1
    [entry] = recent_alerts(redis_conn)
    assert entry["id"] == ALERT.alert_id and entry["where"] == "0/42"
    assert float(entry["event_time"]) == ALERT.event_time
    assert sample("learnloop_drift_alerts_total") == 1
    assert sample("learnloop_drift_active") == 1
    sink.expire()
    assert sample("learnloop_drift_active") == 1  # still within hold_s
    now = time.monotonic()
    monkeypatch.setattr(alerts.time, "monotonic", lambda: now + hold_s + 0.05)
    sink.expire()
    assert sample("learnloop_drift_active") == 0
    assert sink.active_until == {}


class UnreachableBroker:
    """A producer whose broker is down: ``send`` times out, as kafka-python's does."""

    def send(self, *args, **kwargs):
        raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")

    def flush(self, timeout=None):
        pass


def test_an_alert_whose_sending_failed_is_sent_when_detected_again(
    settings, redis_conn, producer
):
    failing = AlertSink(redis_conn, UnreachableBroker(), settings.topic_drift_alerts,
                        DriftMetrics(CollectorRegistry()), 0.3, 100)
    with pytest.raises(KafkaTimeoutError):
        failing.publish(ALERT)
    restarted = AlertSink(redis_conn, producer, settings.topic_drift_alerts,
                          DriftMetrics(CollectorRegistry()), 0.3, 100)
    assert restarted.publish(ALERT) is True
    assert redis_conn.xlen(STREAM) == 1


# -- a learner that crashes after alerting -----------------------------------------------------

def drifting_examples(count: int, objective: str, seed: int = 5) -> list[bytes]:
    """Examples as the join emits them; positive rate 0.1, then 0.6 from the middle on."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        y = rng.random() < (0.6 if n >= count // 2 else 0.1)
        out.append(orjson.dumps({
            "objective": objective, "exposure_id": f"imp-{n}", "user_id": f"u{n % 50}",
            "item_id": "i1", "label": int(y), "exposure_ts": 1_767_225_600 + n,
            "label_ts": 1_767_225_600 + n + 5, "feedback": "click" if y else "",
            "context": {"x": rng.random()}, "features": {}, "source": [0, n, 0]}))
    return out


def stream_ids(client: redis.Redis) -> list[str]:
    return [f[b"id"].decode() for _id, f in client.xrange(STREAM)]


def test_a_learner_restarted_from_an_older_checkpoint_neither_loses_nor_repeats_alerts(
    stack, redis_conn, producer
):
    examples = drifting_examples(2400, "ctr")
    clients: list[redis.Redis] = []

    def learner(settings) -> RunningLearner:
        clients.append(redis.Redis.from_url(stack.redis_url))
        return RunningLearner(settings, clients[-1])

    # uninterrupted
    settings = quick_settings(stack, checkpoint_every_s=3600)
    whole = learner(settings)
    send(producer, settings.topic_examples, examples)
    wait_for(lambda: whole.state.examples == len(examples), what="all examples learned")
    whole.close()
    expected = stream_ids(redis_conn)
    assert any("|label|" in i for i in expected)
    assert any(int(i.rsplit("/", 1)[1]) >= 800 for i in expected)  # will be replayed
    redis_conn.flushdb()

    # a checkpoint before the drift, then a crash after the alerts went out
    settings = quick_settings(stack, checkpoint_every_s=0.1)
    store = checkpoint_store(settings, redis_conn)
    first = learner(settings)
    send(producer, settings.topic_examples, examples[:800])
    wait_for(lambda: store.latest_version() and store.meta(store.latest_version())["examples"]
             == 800, what="a checkpoint of the first 800 examples")
    first.stop_checkpointing()
    send(producer, settings.topic_examples, examples[800:])
    wait_for(lambda: first.state.examples == len(examples), what="all examples learned")
    first.close()  # no checkpoint on the way out: the crash
    assert stream_ids(redis_conn) == expected
    assert store.load_newest_valid().state.examples == 800

    second = learner(settings)  # replays from example 800: detects every alert again
    wait_for(lambda: second.state.examples == len(examples), what="replay learned")
    second.close()
    assert stream_ids(redis_conn) == expected  # none lost, none repeated
    assert second.state.drift.last_alert == whole.state.drift.last_alert
    assert not any(v for k, v in _samples(second, "learnloop_drift_alerts_total"))
    for client in clients:
        client.close()


def _samples(running: RunningLearner, name: str) -> list[tuple[dict, float]]:
    return [(s.labels, s.value) for metric in running.registry.collect()
            for s in metric.samples if s.name == name]


# -- responses --------------------------------------------------------------------------------

TWO = {"engagement": Objective(feedback={"click": FeedbackRule(window_s=60)}),
       "purchases": Objective(feedback={"purchase": FeedbackRule(window_s=600)})}


def state_with(**overrides):
    settings = load_settings(objectives=TWO, model_objectives={"logreg": "purchases"},
                             **overrides)
    return LearnerState.fresh(settings), settings


def concept(model: str = "logreg", where: str = "0/10") -> Alert:
    return Alert(model, "concept", "ADWIN", 100.0, where, 0.3, 0.7)


def trained(state: LearnerState, x: dict) -> None:
    for _ in range(30):
        state.models["logreg"].learn_one(x, True)
    assert state.models["logreg"].predict_one(x) > 0.52  # its intercept learned


def test_reset_replaces_the_model_with_a_fresh_one_and_forgets_its_detectors():
    state, settings = state_with(drift_responses={"logreg": "reset"})
    x = {"i_ctr": 1.0}
    trained(state, x)
    old = state.models["logreg"]
    state.drift.observe_loss("logreg", 0.5, 1.0, "0/1")
    state.drift.observe_loss("item_ctr", 0.5, 1.0, "0/1")
    assert respond(state, concept(), settings) is None
    assert state.models["logreg"] is not old
    assert state.models["logreg"].predict_one(x) == 0.5  # untrained
    assert state.kind_of("logreg") == "logreg" and state.objective_of("logreg") == "purchases"
    assert ("logreg", "concept") not in state.drift.watches
    assert ("item_ctr", "concept") in state.drift.watches
    assert state.challengers == {}


def first_step(model, x) -> float:
    """How far one positive example moves a fresh model's score for ``x``."""
    model.learn_one(x, True)
    return model.predict_one(x) - 0.5


def test_the_model_a_drift_response_starts_learns_hot_then_cools_to_the_steady_rate():
    x = {"i_ctr": 1.0}
    steady, hot = first_step(models.build("logreg"), x), first_step(
        models.build_after_drift("logreg"), x)
    assert 5 * steady < hot  # ten times the learning rate on its first example
    rate = models.build_after_drift("logreg").pipeline["LogisticRegression"].optimizer.lr
    assert rate.get(0) == pytest.approx(0.1) and rate.get(10_000) == pytest.approx(0.01, 1e-3)
    # a model without an after_drift() variant starts as create() makes it
    assert type(models.build_after_drift("item_ctr")) is type(models.build("item_ctr"))


def test_responses_start_the_hot_variant():
    for policy, name in (("reset", "logreg"), ("challenger", "logreg~1")):
        state, settings = state_with(drift_responses={"logreg": policy})
        respond(state, concept(), settings)
        x = {"i_ctr": 1.0}
        assert first_step(state.models[name], x) > 5 * first_step(models.build("logreg"), x)


def test_a_challenger_is_a_fresh_clone_learning_the_same_objective_one_at_a_time():
    state, settings = state_with(drift_responses={"logreg": "challenger"})
    x = {"i_ctr": 1.0}
    trained(state, x)
    parent = state.models["logreg"]
    assert respond(state, concept(), settings) == "logreg~1"
    assert state.models["logreg"] is parent  # the parent keeps learning and serving
    assert state.models["logreg~1"].predict_one(x) == 0.5
    assert state.kind_of("logreg~1") == "logreg"
    assert state.objective_of("logreg~1") == "purchases"
    assert state.scores["logreg~1"].examples == 0
    assert {k: v for k, v in state.challengers["logreg~1"].items() if k != "parent_score"} \
        == {"parent": "logreg", "done": False}
    # another drift of the parent while its challenger is still out: nothing new
    assert respond(state, concept(where="0/99"), settings) is None
    assert [m for m in state.models if "~" in m] == ["logreg~1"]
    # once that one is decided, the next drift starts the next one
    state.challengers["logreg~1"]["done"] = True
    assert respond(state, concept(where="0/500"), settings) == "logreg~2"
    assert state.objective_of("logreg~2") == "purchases"


def test_alert_only_and_non_concept_signals_change_nothing():
    for policy in ("alert", None):  # configured, and the default
        responses_ = {"logreg": policy} if policy else {}
        state, settings = state_with(drift_responses=responses_)
        before = dict(state.models)
        assert respond(state, concept(), settings) is None
        assert state.models == before and state.challengers == {}
    state, settings = state_with(drift_responses={"logreg": "reset", "item_ctr": "challenger"})
    before = dict(state.models)
    for alert in (Alert("objective:engagement", "label", "ADWIN", 1.0, "0/1", 0.1, 0.5),
                  Alert("objective:engagement", "feature:i_ctr", "ADWIN", 1.0, "0/1", 0, 1),
                  Alert("logreg", "label", "ADWIN", 1.0, "0/1", 0.1, 0.5),
                  concept(model="unknown")):
        assert respond(state, alert, settings) is None
    assert state.models == before and state.challengers == {}


# -- automatic promotion --------------------------------------------------------------------

def score(state: LearnerState, name: str, examples: int, p: float) -> None:
    """``examples`` positives predicted with probability ``p``: log loss exactly -ln p
    (a parent's score also counts for its racing challengers, as in the learner)."""
    racing = [c for c in state.challengers.values() if c["parent"] == name and not c["done"]]
    for _ in range(examples):
        state.scores[name].update(True, p)
        for challenger in racing:
            challenger["parent_score"].update(True, p)


@pytest.fixture
def racing(redis_conn):
    """logreg served (promoted by hand), its challenger logreg~1 started by a drift."""
    state, settings = state_with(drift_responses={"logreg": "challenger"},
                                 challenger_min_examples=100, challenger_margin=0.02,
                                 recent_window=50)
    serving.promote(redis_conn, settings, "logreg", why="beats the baseline", who="alice")
    assert respond(state, concept(), settings) == "logreg~1"
    score(state, "logreg", 300, 0.5)  # recent log loss ln 2 = 0.6931
    return state, settings


def history(client) -> list[dict]:
    return serving.history(client)


def test_a_challenger_that_beats_its_served_parent_by_the_margin_is_promoted_once(
    racing, redis_conn
):
    state, settings = racing
    score(state, "logreg~1", 99, 0.6)  # log loss 0.51: better, but too few examples
    assert ready_to_promote(state, settings) == []
    assert promote_ready(state, redis_conn, settings) == []
    checkpointed = pickle.loads(pickle.dumps(state))  # the checkpoint before the promotion
    score(state, "logreg~1", 1, 0.6)
    assert promote_ready(state, redis_conn, settings) == ["logreg~1"]
    assert serving.current_champion(redis_conn, settings) == "logreg~1"
    newest = history(redis_conn)[0]
    assert {k: newest[k] for k in ("action", "from", "to", "who")} == {
        "action": "promote", "from": "logreg", "to": "logreg~1", "who": WHO}
    assert WHO == "learnloop (drift response)"
    assert "beat logreg" in newest["why"] and "100 examples" in newest["why"]
    assert redis_conn.get("serving:auto:logreg~1") == b"1"
    assert state.challengers["logreg~1"]["done"] is True
    # never twice: neither again, nor after a restart from the older checkpoint
    assert promote_ready(state, redis_conn, settings) == []
    score(checkpointed, "logreg~1", 1, 0.6)
    assert promote_ready(checkpointed, redis_conn, settings) == []
    assert [h["to"] for h in history(redis_conn)] == ["logreg~1", "logreg"]


def test_the_margin_is_relative_to_the_parents_recent_log_loss(racing, redis_conn):
    state, settings = racing
    parent = state.challengers["logreg~1"]["parent_score"].report()["recent_logloss"]
    just_short = parent * (1 - settings.challenger_margin) + 1e-4
    score(state, "logreg~1", 100, math.exp(-just_short))
    assert promote_ready(state, redis_conn, settings) == []
    assert state.challengers["logreg~1"]["done"] is False  # still racing
    score(state, "logreg~1", 50, math.exp(-(just_short - 2e-4)))  # the whole window
    assert promote_ready(state, redis_conn, settings) == ["logreg~1"]


def test_a_challenger_of_a_model_that_is_not_served_is_not_promoted(redis_conn):
    state, settings = state_with(drift_responses={"logreg": "challenger"},
                                 challenger_min_examples=100, recent_window=50)
    # the champion is the settings' item_ctr: logreg is itself only a challenger
    assert respond(state, concept(), settings) == "logreg~1"
    score(state, "logreg", 300, 0.5)
    score(state, "logreg~1", 300, 0.9)
    assert ready_to_promote(state, settings) == ["logreg~1"]
    assert promote_ready(state, redis_conn, settings) == []
    assert serving.current_champion(redis_conn, settings) == "item_ctr"
    assert history(redis_conn) == []
    assert not redis_conn.exists("serving:auto:logreg~1")
    assert state.challengers["logreg~1"]["done"] is True  # decided: it stays a challenger


def test_a_promotion_that_failed_halfway_is_made_after_a_restart(racing, redis_conn,
                                                                  monkeypatch):
    state, settings = racing
    score(state, "logreg~1", 100, 0.6)
    checkpointed = pickle.loads(pickle.dumps(state))
    real = responses.promote

    def broken(*args, **kwargs):
        raise redis.ConnectionError("Connection reset by peer")

    monkeypatch.setattr(responses, "promote", broken)
    with pytest.raises(redis.ConnectionError):
        promote_ready(state, redis_conn, settings)
    monkeypatch.setattr(responses, "promote", real)
    assert promote_ready(checkpointed, redis_conn, settings) == ["logreg~1"]
    assert serving.current_champion(redis_conn, settings) == "logreg~1"


def test_a_falling_loss_gets_no_response():
    """ADWIN also fires when a model improves; resetting it then would undo learning."""
    state, settings = state_with(drift_responses={"logreg": "challenger"})
    better = Alert("logreg", "concept", "ADWIN", 100.0, "0/10", 0.7, 0.3)
    assert respond(state, better, settings) is None and not state.challengers
    assert respond(state, concept(), settings) == "logreg~1"


def test_a_challenger_that_never_wins_retires_so_a_later_drift_can_start_another():
    from learnloop.responses import PATIENCE, ready_to_promote

    state, settings = state_with(drift_responses={"logreg": "challenger"},
                                 challenger_min_examples=10)
    assert respond(state, concept(), settings) == "logreg~1"
    score(state, "logreg", PATIENCE * 10 + 1, 0.9)
    score(state, "logreg~1", PATIENCE * 10 + 1, 0.1)  # always worse than its parent
    assert ready_to_promote(state, settings) == []
    assert state.challengers["logreg~1"]["done"]
    assert respond(state, concept(where="0/99"), settings) == "logreg~2"


def test_a_challenger_is_judged_against_its_parent_on_the_same_examples_only(redis_conn):
    """The parent's bad stretch before the challenger was born must not count for it."""
    state, settings = state_with(drift_responses={"logreg": "challenger"},
                                 challenger_min_examples=50, recent_window=100)
    serving.promote(redis_conn, settings, "logreg", why="test", who="t")
    score(state, "logreg", 100, 0.05)  # a terrible stretch (loss 3.0) before the drift
    assert respond(state, concept(), settings) == "logreg~1"
    score(state, "logreg", 60, 0.6)  # since then: as good as the challenger
    score(state, "logreg~1", 60, 0.6)
    assert state.scores["logreg"].report()["recent_logloss"] > 1.0  # window mixes both
    assert ready_to_promote(state, settings) == []
