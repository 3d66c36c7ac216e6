"""Scaled logistic regression: River's ``StandardScaler | LogisticRegression`` pipeline.

Contributions are the weight of each feature times its scaled value.

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

from models.base import Contributions, Features

NAME = "logreg"


def pipeline(learning_rate: float = 0.01, l2: float = 1e-4) -> compose.Pipeline:
    """The River estimator itself (also what equivalence tests run in-process)."""
    return preprocessing.StandardScaler() | linear_model.LogisticRegression(
        optimizer=optim.SGD(learning_rate), l2=l2
    )


class ScaledLogisticRegression:
    """A River pipeline behind the :class:`models.base.OnlineModel` interface."""

    name = NAME

    def __init__(self, learning_rate: float = 0.01, l2: float = 1e-4) -> None:
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
