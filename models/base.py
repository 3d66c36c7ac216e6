"""The interface every model implements, so consumers never import a concrete one."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

Features = dict[str, float]
Contributions = list[tuple[str, float]]


@runtime_checkable
class OnlineModel(Protocol):
    """A binary-outcome model that scores, explains and learns one example at a time."""

    name: str

    def predict_one(self, x: Features) -> float:
        """Probability of a positive outcome for input ``x``."""

    def learn_one(self, x: Features, y: bool) -> None:
        """Update with one labeled example."""

    def explain_one(self, x: Features, top: int = 5) -> Contributions:
        """The ``top`` features that moved this score most, with signed contributions,
        largest magnitude first; each name is a key of ``x`` (the scorer stores its value).

        Exact for linear models, a documented approximation otherwise:

        - linear (``logreg``): weight × scaled value, in log-odds; with the intercept
          the contributions of all inputs add up to the logit of the score;
        - heuristics (``item_ctr``): the input the score is read from, with the score
          itself as its contribution (there is nothing else to attribute);
        - a future tree model: path attribution (Saabas) — walking from the root to the
          leaf, each split's change in predicted probability is credited to the split's
          feature and summed per feature, so the root's prediction plus the contributions
          equals the score; it is not the exact Shapley value (TreeSHAP) and is biased
          towards features split on near the root.
        """
