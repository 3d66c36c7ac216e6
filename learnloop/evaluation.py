"""Progressive validation: every model predicts each example before learning from it.

Per model, cumulative and over the most recent ``window`` examples: log loss, ROC AUC,
accuracy and positive rate. Log loss and accuracy are computed as River's own metrics do
(from running sums), so they equal ``river.evaluate.progressive_val_score`` on the same
(x, y) sequence. The cumulative ROC AUC is :class:`BinnedROCAUC` (River's ``ROCAUC`` uses
10 thresholds, which cannot tell apart the low probabilities of click prediction); the
recent one is River's exact ``RollingROCAUC``.

>>> score = ProgressiveScore(window=3)
>>> for y, p in [(True, 0.9), (False, 0.2), (True, 0.6), (False, 0.7)]:
...     loss = score.update(y, p)
>>> score.examples, round(score.report()["accuracy"], 3), score.report()["positive_rate"]
(4, 0.75, 0.5)
>>> round(score.report()["recent_accuracy"], 3)
0.667
"""

from __future__ import annotations

import math
from collections import deque

from river import metrics


def log_loss(y: bool, p: float) -> float:
    """One prediction's log loss, ``p`` clamped like River's ``LogLoss``."""
    p = min(max(p, 1e-15), 1 - 1e-15)
    return -math.log(p if y else 1.0 - p)


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
    """Cumulative and recent-window metrics of one model's predictions.

    O(1) per update, no River metric objects on the hot path (the learner updates one per
    model per example): sums for the cumulative figures; the window's per-example values
    in deques, summed only when a report is asked for (once per checkpoint). The figures
    equal River's ``LogLoss``, ``Accuracy`` and ``stats.Mean`` on the same sequence."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.examples = 0
        self.loss_sum = 0.0
        self.correct = 0
        self.positives = 0
        self.recent_losses: deque[float] = deque(maxlen=window)
        self.recent_correct: deque[bool] = deque(maxlen=window)
        self.recent_labels: deque[bool] = deque(maxlen=window)
        self.auc = BinnedROCAUC()
        self.recent_auc = metrics.RollingROCAUC(window_size=window)

    def update(self, y: bool, p: float) -> float:
        """Account for one prediction ``p`` = P(y is True) made before learning ``y``;
        returns its log loss."""
        loss = log_loss(y, p)
        correct = (p > 1.0 - p) == y  # River's tie-break: False on 0.5
        self.examples += 1
        self.loss_sum += loss
        self.correct += correct
        self.positives += y
        self.recent_losses.append(loss)
        self.recent_correct.append(correct)
        self.recent_labels.append(y)
        self.auc.update(y, p)
        self.recent_auc.update(y, {False: 1.0 - p, True: p})
        return loss

    def recent_logloss(self) -> float:
        """Mean log loss over the window."""
        return _mean(math.fsum(self.recent_losses), len(self.recent_losses))

    def report(self) -> dict[str, float]:
        """Every figure by name (``recent_*`` for the window)."""
        n, recent = self.examples, len(self.recent_losses)
        return {
            "examples": n,
            "logloss": _mean(self.loss_sum, n),
            "recent_logloss": self.recent_logloss(),
            "accuracy": _mean(self.correct, n),
            "recent_accuracy": _mean(sum(self.recent_correct), recent),
            "roc_auc": self.auc.get(),
            "recent_roc_auc": self.recent_auc.get(),
            "positive_rate": _mean(self.positives, n),
            "recent_positive_rate": _mean(sum(self.recent_labels), recent),
        }

    def __setstate__(self, state: dict) -> None:
        """Unpickle, also a checkpoint written before these sums (River metric objects)."""
        if "cumulative" in state:
            state = _from_river_metrics(state)
        self.__dict__.update(state)


def _mean(total: float, count: int) -> float:
    """``total / count``, 0 before anything was counted (as River's metrics report)."""
    return total / count if count else 0.0


def _from_river_metrics(old: dict) -> dict:
    """An older checkpoint's ProgressiveScore state (River metrics) as this one's."""
    window, n = old["window"], old["examples"]
    fresh = ProgressiveScore(window)
    fresh.examples = n
    fresh.loss_sum = old["cumulative"]["logloss"].get() * n
    fresh.correct = round(old["cumulative"]["accuracy"].get() * n)
    fresh.positives = round(old["positive_rate"].get() * n)
    for (y, proba), _ in old["recent"]["logloss"].window:
        fresh.recent_losses.append(log_loss(y, proba[True]))
        fresh.recent_labels.append(y)
    for (y, predicted), _ in old["recent"]["accuracy"].window:
        fresh.recent_correct.append(predicted == y)
    fresh.auc, fresh.recent_auc = old["auc"], old["recent_auc"]
    return fresh.__dict__


def lift(model: dict[str, float], baseline: dict[str, float], window: str = "") -> float:
    """Relative log-loss improvement over the baseline: > 0 means the model beats it."""
    base = baseline.get(f"{window}logloss", 0.0)
    return 0.0 if not base else (base - model[f"{window}logloss"]) / base
