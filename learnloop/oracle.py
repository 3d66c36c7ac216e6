"""The oracle: the best achievable predictions of a simulated stream, scored like a model.

The simulator knows each impression's true P(click) and P(purchase | click) and its
label delays, so the probability that an exposure becomes a *positive example* of an
objective is known exactly (:func:`label_probability`). :class:`Oracle` predicts that
for every example the learner evaluates — the same examples, chosen the same way
(duplicates dropped by source, the per-user cap) — and scores it with the learner's own
:class:`~learnloop.evaluation.ProgressiveScore`. No model beats its log loss in
expectation: it is the floor to read the models' numbers against.

>>> from learnloop.objective import FeedbackRule, Objective
>>> from learnloop.simulate import Simulator, Truth
>>> sim = Simulator(users=1, items=1, mean_click_delay_s=20.0)
>>> clicks = Objective(feedback={"click": FeedbackRule(window_s=20)})
>>> round(label_probability(Truth(click=0.1, purchase=0.0), clicks, sim), 4)  # 0.1·(1-1/e)
0.0632
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from learnloop.evaluation import ProgressiveScore
from learnloop.objective import Objective
from learnloop.simulate import Simulator, Truth
from learnloop.usercap import UserCap


def label_probability(truth: Truth, objective: Objective, simulator: Simulator) -> float:
    """P(label = 1) of an exposure under ``objective``: clicked within the click window,
    or else bought within the purchase window (C ~ Exp(click delay) after the
    exposure, then P ~ Exp(purchase delay) after the click; the first feedback inside
    its window labels the exposure, as the join does)."""
    rules = {kind: rule for kind, rule in objective.feedback.items()
             if kind in ("click", "purchase")}
    if objective.negative_label != 0 or any(rule.label != 1 for rule in rules.values()):
        raise ValueError("the oracle knows objectives whose clicks and purchases are "
                         "positive and silence negative")
    lam = 1.0 / simulator.mean_click_delay_s
    click_window = rules["click"].window_s if "click" in rules else 0.0
    in_time = 1.0 - math.exp(-lam * click_window)
    if "purchase" not in rules:
        return truth.click * in_time
    mu = 1.0 / simulator.mean_purchase_delay_s
    late_but_bought = _late_click_then_purchase(lam, mu, click_window,
                                                rules["purchase"].window_s)
    return truth.click * (in_time + truth.purchase * late_but_bought)


def _late_click_then_purchase(lam: float, mu: float, c0: float, w: float) -> float:
    """P(C > c0 and C + P <= w) for C ~ Exp(lam), P ~ Exp(mu), independent."""
    if w <= c0:
        return 0.0
    both = math.exp(-lam * c0) - math.exp(-lam * w)
    if math.isclose(lam, mu):
        return both - lam * math.exp(-lam * w) * (w - c0)
    return both - lam / (mu - lam) * (math.exp(-lam * w) - math.exp(-mu * (w - c0) - lam * c0))


class Oracle:
    """Scores the true label probability on the examples the learner evaluates for
    ``objective`` (its duplicate and per-user-cap rules applied, in arrival order)."""

    def __init__(self, name: str, objective: Objective, simulator: Simulator,
                 truth: Mapping[str, Truth], window: int, cap: UserCap | None = None) -> None:
        self.name = name
        self.objective = objective
        self.simulator = simulator
        self.truth = truth
        self.score = ProgressiveScore(window)
        self.cap = cap or UserCap(None, 1)
        self.learned: dict[int, tuple[int, int]] = {}  # source partition → (offset, seq)

    def observe(self, example: dict) -> bool:
        """Account for one example from the examples topic; True if the models learn it
        (and so the oracle scored it)."""
        source_partition, source_offset, seq = example["source"]
        done = self.learned.get(source_partition)
        if done is not None and (source_offset, seq) <= done:
            return False  # a re-sent example: the learner skips it
        self.learned[source_partition] = (source_offset, seq)
        if not self.cap.admit(source_partition, example["user_id"], float(example["label_ts"])):
            return False
        if example["objective"] != self.name:
            return False
        truth = self.truth[example["exposure_id"]]
        self.score.update(example["label"] == 1,
                          label_probability(truth, self.objective, self.simulator))
        return True

    def report(self) -> dict[str, float]:
        """The oracle's progressive figures, named like a model's."""
        return self.score.report()
