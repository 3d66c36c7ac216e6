"""Explained scores: logreg's stored contributions are weight × scaled value of the served
model, and ``learnloop explain`` shows features, meanings, values and ages."""

from __future__ import annotations

import math
import random
import re
import time

import orjson
import pytest
from typer.testing import CliRunner

import models
from consumers.learner import LearnerState
from learnloop import serving
from learnloop.checkpoints import checkpoint_store
from learnloop.cli import app
from learnloop.client import Client
from learnloop.explain import describe
from learnloop.featurize import Featurizer
from tests.conftest import wait_for
from tests.test_cli import _env

runner = CliRunner()
UNITS = {"s": 1, "min": 60, "h": 3600, "d": 86_400}


@pytest.mark.parametrize(("feature", "value", "meaning"), [
    ("u_click_3600", 0.7, "user clicks, 1 h half-life (log)"),
    ("ui_impression_604800", 0.0, "user × item impressions, 7 d half-life (log)"),
    ("i_add_to_cart_86400", 1.2, "item add to cart events, 1 d half-life (log)"),
    ("u_dismiss_1800", 0.1, "user dismisses, 30 min half-life (log)"),
    ("i_age_click_h", 3.0, "hours since the item's last click"),
    ("i_ctr", 0.05, "item smoothed CTR"),
    ("ctx_position", 3.0, "context position"),
    ("ctx_device_7", 1.0, "context device is one hashed string value"),
    ("ctx_slot_2", 4.0, "context slot 2"),  # a numeric key that ends in digits
    ("ctx_other_3", 1.0, "another context key's string value (hashed)"),
])
def test_features_are_described_in_words(feature, value, meaning):
    assert describe(feature, value) == meaning


def trained_logreg(featurize: Featurizer):
    """A logreg that learned that clicked items and top positions get clicked."""
    model, rng = models.build("logreg"), random.Random(7)
    for _ in range(400):
        clicks, position = rng.randint(0, 5), rng.randint(1, 10)
        snapshot = {f"i.click|{hl}": clicks * rng.uniform(0.5, 1.0) for hl in (3600, 86_400)}
        snapshot |= {"i.click|604800": float(clicks), "i.impression|604800": 20.0,
                     "u.click|3600": float(rng.randint(0, 3))}
        x = featurize(snapshot, 0.0, {"position": position})
        model.learn_one(x, rng.random() < clicks / 6 + 0.3 / position)
    return model


def test_logreg_contributions_are_weight_times_scaled_value_of_the_served_model(
        settings, redis_conn, start_consumer):
    featurize = Featurizer.from_settings(settings)
    state = LearnerState.fresh(settings)
    state.models["logreg"] = trained_logreg(featurize)
    version = checkpoint_store(settings, redis_conn).save(state, {"examples": 400})
    serving.promote(redis_conn, settings, "logreg", "test: explain a linear model")
    start_consumer(settings)
    with Client(settings) as client:
        for n, (type_, item) in enumerate([("impression", "i1"), ("click", "i1"),
                                           ("impression", "i2"), ("impression", "i1")]):
            client.publish({"event_id": f"e{n}", "ts": time.time() - 60 + n, "user_id": "u1",
                            "item_id": item, "type": type_, "context": {"position": n + 1}})
        client.flush()
        score = wait_for(lambda: (s := client.score("u1", "i1")) and s.event_id == "e3" and s,
                         what="logreg's score of e3")
    assert (score.model, score.version) == ("logreg", str(version))

    served = state.models["logreg"]
    scaler, regression = served.pipeline.steps.values()
    snapshot = {k: float(v) for k, v in orjson.loads(redis_conn.get("snap:e3")).items()}
    x = featurize(snapshot, score.ts, {"position": 4})
    assert score.score == pytest.approx(served.predict_one(x), abs=1e-12)
    assert len(score.explain) == 5 and all(abs(c) > 1e-4 for _, c, _ in score.explain)
    for feature, contribution, value in score.explain:
        assert value == pytest.approx(x[feature], abs=1e-6)
        scaled = (x[feature] - scaler.means[feature]) / math.sqrt(scaler.vars[feature])
        assert contribution == pytest.approx(regression.weights[feature] * scaled, abs=1e-6)
    magnitudes = [abs(c) for _, c, _ in score.explain]
    assert magnitudes == sorted(magnitudes, reverse=True)
    everything = served.explain_one(x, top=len(x))
    logit = math.log(score.score / (1 - score.score))
    assert sum(c for _, c in everything) + regression.intercept == pytest.approx(logit)


def seconds(age: str) -> float:
    number, unit = age.split()
    return float(number) * UNITS[unit]


def test_explain_command_shows_features_values_and_ages(settings, redis_conn, start_consumer):
    start_consumer(settings)
    env = {**_env(settings), "COLUMNS": "160"}
    start = time.time() - 1800
    with Client(settings) as client:
        for n, (type_, item) in enumerate([("impression", "i1"), ("impression", "i2"),
                                           ("click", "i2"), ("impression", "i2")]):
            client.publish({"event_id": f"e{n}", "ts": start + 60 * n, "user_id": "u7",
                            "item_id": item, "type": type_})
        client.flush()
        wait_for(lambda: (s := client.score("u7", "i2")) and s.event_id == "e3",
                 what="the score of e3")
        shown = runner.invoke(app, ["explain", "u7", "i2"], env=env)
        why = client.explain("u7", "i2")
        best = client.top("u7", k=1)[0][0]
    assert shown.exit_code == 0, shown.output
    (part,) = why.contributions
    row = next(line for line in shown.stdout.splitlines() if "i_ctr" in line)
    assert "item smoothed CTR" in row and f"{part.value:.6g}" in row
    assert f"{part.contribution:+.6f}" in row
    age = re.search(r"(-?[\d.]+ (?:s|min|h|d))\s*│?\s*$", row)[1]
    newest = float(redis_conn.hget("fi:i2", "last|impression"))
    assert abs(seconds(age) - (time.time() - newest)) <= 60  # shown in minutes
    assert f"score {why.score.score:.6f} for user u7, item i2" in shown.stdout
    assert "model item_ctr version 0, event e3" in shown.stdout

    default = runner.invoke(app, ["explain", "u7"], env=env)
    assert default.exit_code == 0 and f"item {best}" in default.stdout
    both = runner.invoke(app, ["explain", "u7", "-k", "2"], env=env)
    assert both.stdout.count("for user u7, item") == 2

    missing = runner.invoke(app, ["explain", "nobody"], env=env)
    assert missing.exit_code == 1 and "no score for user 'nobody'" in missing.stderr
    assert isinstance(missing.exception, SystemExit)  # a clear message, no traceback
