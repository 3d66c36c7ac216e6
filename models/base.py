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
        """The ``top`` features that moved this score most, with signed contributions."""
