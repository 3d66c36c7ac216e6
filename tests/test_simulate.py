"""The simulator's product life (purchases, new items, a drift) and the oracle's truth."""

from __future__ import annotations

import math

import orjson
import pytest
from typer.testing import CliRunner

from learnloop.cli import app
from learnloop.evaluation import ProgressiveScore
from learnloop.objective import FeedbackRule, Objective
from learnloop.oracle import Oracle, _late_click_then_purchase, label_probability
from learnloop.simulate import Simulator, Truth
from learnloop.usercap import UserCap
from tests.conftest import read_topic

CLICK_OR_PURCHASE = Objective(feedback={"click": FeedbackRule(window_s=30),
                                        "purchase": FeedbackRule(window_s=900)})


def labels_by_rule(events: list[dict], objective: Objective) -> dict[str, int]:
    """Each impression's label under ``objective``, decided from the events themselves:
    1 if a click or purchase came inside its window (a reference join)."""
    shown = {e["event_id"]: e["ts"] for e in events if e["type"] == "impression"}
    labels = dict.fromkeys(shown, 0)
    for e in events:
        rule = objective.feedback.get(e["type"])
        if rule and e["ts"] - shown[e["exposure_id"]] <= rule.window_s:
            labels[e["exposure_id"]] = 1
    return labels


@pytest.mark.parametrize("lam, mu, c0, w", [
    (1 / 20, 1 / 600, 60, 1800), (1 / 20, 1 / 20, 30, 100), (1 / 600, 1 / 20, 100, 1000),
    (0.05, 0.05, 0, 50), (0.05, 0.01, 90, 60),
])
def test_late_click_then_purchase_matches_numeric_integration(lam, mu, c0, w):
    steps = 20_000
    h = max(w - c0, 0) / steps
    mids = (c0 + (i + 0.5) * h for i in range(steps))
    numeric = sum(lam * math.exp(-lam * c) * (1 - math.exp(-mu * (w - c))) for c in mids) * h
    assert _late_click_then_purchase(lam, mu, c0, w) == pytest.approx(numeric, rel=1e-6,
                                                                      abs=1e-12)


def test_label_probability_is_the_rate_of_positive_examples():
    """Over 40,000 impressions the oracle's mean probability is the observed positive rate
    (within 4 standard errors), clicks, purchases and windows included."""
    sim = Simulator(users=300, items=60, seed=5, mean_click_delay_s=20.0, purchase_rate=0.4,
                    mean_purchase_delay_s=300.0)
    truth: dict[str, Truth] = {}
    events = list(sim.events(40_000, truth=truth))
    labels = labels_by_rule(events, CLICK_OR_PURCHASE)
    p = [label_probability(truth[i], CLICK_OR_PURCHASE, sim) for i in labels]
    clicked_only = [label_probability(truth[i], Objective(
        feedback={"click": FeedbackRule(window_s=30)}), sim) for i in labels]
    expected, observed = sum(p) / len(p), sum(labels.values()) / len(labels)
    se = math.sqrt(sum(q * (1 - q) for q in p)) / len(p)
    assert abs(observed - expected) < 4 * se
    assert sum(p) - sum(clicked_only) > 8 * se * len(p)  # purchases rescue late clicks


def test_purchases_follow_their_click_and_new_items_appear():
    sim = Simulator(users=100, items=20, seed=3, purchase_rate=0.5, new_item_every=100)
    events = list(sim.events(5000))
    clicks = {e["exposure_id"]: e["ts"] for e in events if e["type"] == "click"}
    purchases = [e for e in events if e["type"] == "purchase"]
    assert purchases and all(e["ts"] >= clicks[e["exposure_id"]] for e in purchases)
    first_shown: dict[int, int] = {}
    for e in events:
        if e["type"] == "impression":
            first_shown.setdefault(int(e["item_id"][1:]), int(e["event_id"].rsplit("-", 1)[1]))
    newcomers = {item: n for item, n in first_shown.items() if item >= 20}
    assert len(newcomers) > 40  # 49 joined, one every 100 impressions
    assert all(n >= 100 * (item - 19) for item, n in newcomers.items())  # not before joining
    assert [e["ts"] for e in events] == sorted(e["ts"] for e in events)


def test_the_drift_changes_the_truth_at_its_impression_and_only_there():
    plain, drifted = {}, {}
    list(Simulator(users=100, items=20, seed=3).events(2000, truth=plain))
    sim = Simulator(users=100, items=20, seed=3, drift_at=1000)
    events = list(sim.events(2000, truth=drifted))
    changed = [int(k.rsplit("-", 1)[1]) for k in plain if plain[k] != drifted[k]]
    assert min(changed) == 1000 and len(changed) == 1000
    assert sim.drift_ts == next(e["ts"] for e in events if e["event_id"] == "imp-3-1000")


def test_oracle_scores_each_learned_example_once_and_only_its_objective():
    sim = Simulator(users=1, items=1)
    truth = {"a": Truth(0.2, 0.0), "b": Truth(0.7, 0.0), "c": Truth(0.5, 0.0)}
    objective = Objective(feedback={"click": FeedbackRule(window_s=10 * 3600)})
    oracle = Oracle("clicks", objective, sim, truth, window=10, cap=UserCap(1, 3600))

    def example(exposure, label, source, user="u1", name="clicks"):
        return {"exposure_id": exposure, "label": label, "source": source, "user_id": user,
                "label_ts": "100.0", "objective": name}

    seen = [oracle.observe(example("a", 0, [0, 5, 0])),
            oracle.observe(example("a", 0, [0, 5, 0])),  # re-sent after a crash
            oracle.observe(example("b", 1, [0, 6, 0])),  # u1's window is full
            oracle.observe(example("c", 1, [1, 2, 0], user="u2", name="other")),
            oracle.observe(example("b", 1, [1, 3, 0], user="u3"))]
    assert seen == [True, False, False, False, True]
    expected = ProgressiveScore(10)
    expected.update(False, 0.2)
    expected.update(True, 0.7)
    assert oracle.report() == expected.report()


def test_simulate_command_writes_json_lines_and_the_truth(tmp_path):
    out, truth = tmp_path / "events.jsonl", tmp_path / "truth.jsonl"
    result = CliRunner().invoke(app, [
        "simulate", "--impressions", "300", "--users", "50", "--items", "10", "--seed", "4",
        "--drift-at", "150", "--purchase-rate", "0.3", "--seconds-between", "2", "--out", str(out),
        "--truth", str(truth)])
    assert result.exit_code == 0, result.output
    written = [orjson.loads(line) for line in out.read_bytes().splitlines()]
    expected = list(Simulator(users=50, items=10, seed=4, seconds_between_impressions=2.0,
                              drift_at=150, purchase_rate=0.3).events(300))
    assert written == expected
    rows = [orjson.loads(line) for line in truth.read_bytes().splitlines()]
    assert [r["exposure_id"] for r in rows] == [
        e["event_id"] for e in expected if e["type"] == "impression"]
    assert all(0 < r["click"] < 1 for r in rows)


def test_simulate_command_publishes_the_same_events(settings):
    env = {**settings.env(), "LEARNLOOP_TOPIC_INTERACTIONS": settings.topic_interactions}
    result = CliRunner().invoke(app, ["simulate", "--impressions", "60", "--users", "20",
                                      "--items", "5", "--seed", "2", "--publish"], env=env)
    assert result.exit_code == 0, result.output
    expected = list(Simulator(users=20, items=5, seed=2,
                              seconds_between_impressions=0.5).events(60))
    records = read_topic(settings.kafka_bootstrap, settings.topic_interactions, len(expected))
    assert sorted(orjson.loads(r.value)["event_id"] for r in records) == sorted(
        e["event_id"] for e in expected)
    assert all(r.key == orjson.loads(r.value)["user_id"].encode() for r in records)
