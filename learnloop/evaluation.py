"""Progressive validation: every model predicts each example before learning from it.

Per model, cumulative and over the most recent ``window`` examples: log loss, ROC AUC,
accuracy and positive rate. Log loss and accuracy are River's own metrics, so they equal
``river.evaluate.progressive_val_score`` on the same (x, y) sequence. The cumulative ROC
AUC is :class:`BinnedROCAUC` (River's ``ROCAUC`` uses 10 thresholds, which cannot tell
apart the low probabilities of click prediction); the recent one is River's exact
``RollingROCAUC``.

>>> score = ProgressiveScore(window=3)
>>> for y, p in [(True, 0.9), (False, 0.2), (True, 0.6), (False, 0.7)]:
...     score.update(y, p)
>>> score.examples, round(score.report()["accuracy"], 3), score.report()["positive_rate"]
(4, 0.75, 0.5)
>>> round(score.report()["recent_accuracy"], 3)
0.667
"""

from __future__ import annotations

import math

from river import metrics, stats, utils

_PAIRS = (("logloss", metrics.LogLoss), ("accuracy", metrics.Accuracy))


class BinnedROCAUC:
    """ROC AUC over all predictions, exact up to ties within a bin of the score's logit.

    O(1) per update: counts of positives and negatives per bin of ``logit(p)`` over
    [-15, 15] (4000 bins, width 0.0075); pairs inside one bin count as ties.

    >>> auc = BinnedROCAUC()
    >>> for y, p in [(True, 0.03), (False, 0.01), (False, 0.02), (True, 0.001)]:
    ...     auc.update(y, p)
    >>> auc.get()  # 2 of the 4 positive-negative pairs are ordered right
    0.5
    """

    BINS = 4000
    LIMIT = 15.0

    def __init__(self) -> None:
        self.positives = [0] * self.BINS
        self.negatives = [0] * self.BINS

    def update(self, y: bool, p: float) -> None:
        p = min(max(p, 1e-300), 1.0 - 1e-16)
        logit = min(max(math.log(p / (1.0 - p)), -self.LIMIT), self.LIMIT)
        index = min(int((logit + self.LIMIT) / (2 * self.LIMIT) * self.BINS), self.BINS - 1)
        (self.positives if y else self.negatives)[index] += 1

    def get(self) -> float:
        total_pos, total_neg = sum(self.positives), sum(self.negatives)
        if not total_pos or not total_neg:
            return 0.0
        ordered, negatives_below = 0.0, 0
        for pos, neg in zip(self.positives, self.negatives, strict=True):
            ordered += pos * (negatives_below + 0.5 * neg)
            negatives_below += neg
        return ordered / (total_pos * total_neg)


class ProgressiveScore:
    """Cumulative and recent-window metrics of one model's predictions."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.examples = 0
        self.cumulative = {name: make() for name, make in _PAIRS}
        self.recent = {name: utils.Rolling(make, window_size=window) for name, make in _PAIRS}
        self.auc = BinnedROCAUC()
        self.recent_auc = metrics.RollingROCAUC(window_size=window)
        self.positive_rate = stats.Mean()
        self.recent_positive_rate = utils.Rolling(stats.Mean, window_size=window)

    def update(self, y: bool, p: float) -> None:
        """Account for one prediction ``p`` = P(y is True) made before learning ``y``."""
        proba = {False: 1.0 - p, True: p}
        predicted = max(proba, key=proba.get)  # River's tie-break: False on 0.5
        self.examples += 1
        for name, metric in (*self.cumulative.items(), *self.recent.items()):
            metric.update(y, proba if name == "logloss" else predicted)
        self.auc.update(y, p)
        self.recent_auc.update(y, proba)
        self.positive_rate.update(float(y))
        self.recent_positive_rate.update(float(y))

    def report(self) -> dict[str, float]:
        """Every figure by name (``recent_*`` for the window)."""
        out: dict[str, float] = {"examples": self.examples}
        for name, metric in self.cumulative.items():
            out[name] = metric.get()
            out[f"recent_{name}"] = self.recent[name].get()
        out["roc_auc"] = self.auc.get()
        out["recent_roc_auc"] = self.recent_auc.get()
        out["positive_rate"] = self.positive_rate.get()
        out["recent_positive_rate"] = self.recent_positive_rate.get()
        return out


def lift(model: dict[str, float], baseline: dict[str, float], window: str = "") -> float:
    """Relative log-loss improvement over the baseline: > 0 means the model beats it."""
    base = baseline.get(f"{window}logloss", 0.0)
    return 0.0 if not base else (base - model[f"{window}logloss"]) / base
