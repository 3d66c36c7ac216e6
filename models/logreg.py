"""Scaled logistic regression: River's ``StandardScaler | LogisticRegression``.

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

from river import linear_model, optim, preprocessing

from models.base import Contributions, Features

NAME = "logreg"


class ScaledLogisticRegression:
    """River pipeline behind the :class:`models.base.OnlineModel` interface."""

    name = NAME

    def __init__(self, learning_rate: float = 0.05, l2: float = 1e-4) -> None:
        self.learning_rate = learning_rate
        self.l2 = l2
        self.scaler = preprocessing.StandardScaler()
        self.regression = linear_model.LogisticRegression(
            optimizer=optim.SGD(learning_rate), l2=l2
        )

    def predict_one(self, x: Features) -> float:
        return self.regression.predict_proba_one(self.scaler.transform_one(x))[True]

    def learn_one(self, x: Features, y: bool) -> None:
        self.scaler.learn_one(x)
        self.regression.learn_one(self.scaler.transform_one(x), y)

    def explain_one(self, x: Features, top: int = 5) -> Contributions:
        scaled = self.scaler.transform_one(x)
        weights = self.regression.weights
        parts = [(name, weights.get(name, 0.0) * value) for name, value in scaled.items()]
        parts.sort(key=lambda part: abs(part[1]), reverse=True)
        return parts[:top]


def create() -> ScaledLogisticRegression:
    return ScaledLogisticRegression()
