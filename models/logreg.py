"""Scaled logistic regression: River's ``StandardScaler | LogisticRegression`` pipeline.

Contributions are the weight of each feature times its scaled value.

After a drift, the fresh model a response starts (:func:`after_drift`) learns with a
rate that starts at 10× the steady one and anneals back to it (half the excess every
500 examples): the steady rate is tuned for noise, a fresh model must learn a new
concept from a few hundred examples. Measured on the Hyperplane switch by
``scripts/drift_eval.py --only recovery`` (README, "Drift").

>>> model = create()
>>> for _ in range(50):
...     model.learn_one({"i_ctr": 0.3}, True)
...     model.learn_one({"i_ctr": 0.01}, False)
>>> model.predict_one({"i_ctr": 0.3}) > 0.5 > model.predict_one({"i_ctr": 0.01})
True
>>> model.explain_one({"i_ctr": 0.3})[0][0]
'i_ctr'
"""

from __future__ import annotations

from river import compose, linear_model, optim, preprocessing
from river.optim.base import Scheduler

from models.base import Contributions, Features

NAME = "logreg"


LEARNING_RATE = 0.01


class AnnealedRate(Scheduler):
    """A learning rate from ``start`` to ``end``, the excess halving every ``half_life`` steps.

    >>> rate = AnnealedRate(0.1, 0.01, half_life=500)
    >>> [round(rate.get(t), 4) for t in (0, 500, 5000)]
    [0.1, 0.055, 0.0101]
    """

    def __init__(self, start: float, end: float, half_life: float) -> None:
        self.start, self.end, self.half_life = start, end, half_life

    def get(self, t: int) -> float:
        return self.end + (self.start - self.end) * 0.5 ** (t / self.half_life)


def pipeline(learning_rate: float | Scheduler = LEARNING_RATE,
             l2: float = 1e-4) -> compose.Pipeline:
    """The River estimator itself (also what equivalence tests run in-process)."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(learning_rate), l2=l2, intercept_lr=learning_rate
    )


class ScaledLogisticRegression:
    """A River pipeline behind the :class:`models.base.OnlineModel` interface."""

    name = NAME

    def __init__(self, learning_rate: float | Scheduler = LEARNING_RATE,
                 l2: float = 1e-4) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.pipeline = pipeline(learning_rate, l2)

    def predict_one(self, x: Features) -> float:
        return self.pipeline.predict_proba_one(x).get(True, 0.5)

    def learn_one(self, x: Features, y: bool) -> None:
        self.pipeline.learn_one(x, y)

    def explain_one(self, x: Features, top: int = 5) -> Contributions:
        scaler, regression = self.pipeline.steps.values()
        scaled = scaler.transform_one(x)
        parts = [(name, regression.weights.get(name, 0.0) * v) for name, v in scaled.items()]
        parts.sort(key=lambda part: abs(part[1]), reverse=True)
        return parts[:top]


def create() -> ScaledLogisticRegression:
    return ScaledLogisticRegression()


def after_drift() -> ScaledLogisticRegression:
    """A fresh model that starts hot (see the module docstring)."""
    return ScaledLogisticRegression(AnnealedRate(10 * LEARNING_RATE, LEARNING_RATE, 500))
