"""Progressive metrics: River's own figures, from sums; and checkpoints written when the
score held River metric objects still load and go on counting."""

from __future__ import annotations

import pickle
import random

import pytest
from river import metrics, stats, utils

from learnloop.evaluation import BinnedROCAUC, ProgressiveScore

WINDOW = 200


def predictions(n: int, seed: int) -> list[tuple[bool, float]]:
    rng = random.Random(seed)
    out = [(rng.random() < 0.3, rng.random()) for _ in range(n)]
    return out + [(True, 0.5), (False, 0.5), (True, 0.0), (False, 1.0)]  # ties, clamping


def river_state(data: list[tuple[bool, float]], window: int = WINDOW) -> dict:
    """The state a ProgressiveScore held before the sums: River metric objects."""
    state = {
        "window": window, "examples": 0,
        "cumulative": {"logloss": metrics.LogLoss(), "accuracy": metrics.Accuracy()},
        "recent": {"logloss": utils.Rolling(metrics.LogLoss, window_size=window),
                   "accuracy": utils.Rolling(metrics.Accuracy, window_size=window)},
        "auc": BinnedROCAUC(), "recent_auc": metrics.RollingROCAUC(window_size=window),
        "positive_rate": stats.Mean(),
        "recent_positive_rate": utils.Rolling(stats.Mean, window_size=window),
    }
    for y, p in data:
        proba = {False: 1.0 - p, True: p}
        predicted = max(proba, key=proba.get)
        state["examples"] += 1
        for name, metric in (*state["cumulative"].items(), *state["recent"].items()):
            metric.update(y, proba if name == "logloss" else predicted)
        state["auc"].update(y, p)
        state["recent_auc"].update(y, proba)
        state["positive_rate"].update(float(y))
        state["recent_positive_rate"].update(float(y))
    return state


def river_report(state: dict) -> dict[str, float]:
    out = {"examples": state["examples"]}
    for name, metric in state["cumulative"].items():
        out[name] = metric.get()
        out[f"recent_{name}"] = state["recent"][name].get()
    out.update(roc_auc=state["auc"].get(), recent_roc_auc=state["recent_auc"].get(),
               positive_rate=state["positive_rate"].get(),
               recent_positive_rate=state["recent_positive_rate"].get())
    return out


def scored(data: list[tuple[bool, float]]) -> ProgressiveScore:
    score = ProgressiveScore(WINDOW)
    for y, p in data:
        score.update(y, p)
    return score


def test_every_figure_equals_rivers_metrics_on_the_same_predictions():
    data = predictions(3000, seed=1)
    got, want = scored(data).report(), river_report(river_state(data))
    assert got.keys() == want.keys()
    assert got == pytest.approx(want, rel=0, abs=1e-9)
    assert 0.0 < got["recent_accuracy"] < 1.0 and got["recent_logloss"] > 0.0


@pytest.mark.parametrize("y, p", [(True, 0.25), (False, 0.25), (False, 1.0), (True, 0.0)])
def test_update_returns_the_predictions_log_loss_as_river_computes_it(y, p):
    river = metrics.LogLoss()
    river.update(y, {False: 1.0 - p, True: p})
    assert ProgressiveScore(WINDOW).update(y, p) == pytest.approx(river.get(), rel=1e-12)


def test_a_checkpoint_of_river_metric_objects_loads_and_goes_on_counting():
    data = predictions(3000, seed=2)
    older = ProgressiveScore.__new__(ProgressiveScore)
    older.__dict__.update(river_state(data[:1700]))  # as an earlier learner pickled it
    restored = pickle.loads(pickle.dumps(older))
    assert restored.report() == pytest.approx(river_report(river_state(data[:1700])), abs=1e-9)
    for y, p in data[1700:]:
        restored.update(y, p)
    assert restored.report() == pytest.approx(scored(data).report(), rel=0, abs=1e-9)
