"""The heuristic baseline: the item's smoothed click-through rate from the Redis counters.

It learns nothing itself — the decayed counters in Redis are its memory — and every ML
model must beat it on the same examples to earn its place.

>>> model = create()
>>> model.predict_one({"i_ctr": 0.12})
0.12
>>> model.explain_one({"i_ctr": 0.12})
[('i_ctr', 0.12)]
"""

from __future__ import annotations

from learnloop.featurize import PRIOR_CLICKS, PRIOR_IMPRESSIONS
from models.base import Contributions, Features

NAME = "item_ctr"


class ItemCTR:
    """Scores an exposure with its item's smoothed CTR (``x["i_ctr"]``)."""

    name = NAME

    def predict_one(self, x: Features) -> float:
        return x.get("i_ctr", PRIOR_CLICKS / PRIOR_IMPRESSIONS)

    def learn_one(self, x: Features, y: bool) -> None:
        """Nothing to learn: the counters are updated by the interactions consumer."""

    def explain_one(self, x: Features, top: int = 5) -> Contributions:
        return [("i_ctr", self.predict_one(x))]


def create() -> ItemCTR:
    return ItemCTR()
