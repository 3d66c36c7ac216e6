"""The objective as configuration: which events are exposures, which feedback counts,
what it is worth, and how late it may come.

Set ``LEARNLOOP_OBJECTIVES`` to JSON; each model learns the objective named in
``LEARNLOOP_MODEL_OBJECTIVES`` (default: the first one). The default reads as
"an impression is positive if clicked within 30 minutes or bought within 7 days":

>>> objective = DEFAULT_OBJECTIVES["engagement"]
>>> objective.feedback["click"].window_s, objective.feedback["purchase"].window_s
(1800, 604800)
>>> objective.window_s
604800

An exposure is resolved by its first feedback inside that feedback type's window
(label 1 or 0 as configured). When the partition's event-time watermark — the newest
event time seen minus ``allowed_lateness_s`` — passes ``exposure time + window_s`` with
no feedback, it becomes a ``negative_label`` example.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class FeedbackRule(BaseModel):
    """What one feedback type is worth, and how long after the exposure it may arrive."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: Literal[0, 1] = 1
    window_s: int = Field(gt=0, description="Attribution window after the exposure.")


class Objective(BaseModel):
    """One learning objective (binary: models predict P(label = 1 | exposure))."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    exposures: tuple[str, ...] = Field(("impression",), min_length=1)
    feedback: dict[str, FeedbackRule] = Field(min_length=1)
    negative_label: Literal[0, 1] = 0
    allowed_lateness_s: int = Field(60, ge=0)

    @model_validator(mode="after")
    def _disjoint(self) -> Objective:
        both = set(self.exposures) & set(self.feedback)
        if both:
            raise ValueError(f"{sorted(both)} cannot be both exposure and feedback")
        return self

    @property
    def window_s(self) -> int:
        """The longest attribution window: when an unanswered exposure turns negative."""
        return max(rule.window_s for rule in self.feedback.values())

    def wire(self) -> dict:
        """The compact form the Lua join script reads."""
        return {
            "exposures": list(self.exposures),
            "feedback": {k: [r.label, r.window_s] for k, r in self.feedback.items()},
            "negative": self.negative_label, "lateness": self.allowed_lateness_s,
            "window": self.window_s,
        }


DEFAULT_OBJECTIVES = {
    "engagement": Objective(
        exposures=("impression",),
        feedback={"click": FeedbackRule(label=1, window_s=1800),
                  "purchase": FeedbackRule(label=1, window_s=7 * 86_400)},
        negative_label=0, allowed_lateness_s=60,
    )
}


def check_objectives(
    objectives: dict[str, Objective], event_types: tuple[str, ...],
    model_objectives: dict[str, str], models: tuple[str, ...],
) -> None:
    """Raise ValueError naming every inconsistency between objectives and settings."""
    problems = []
    if not objectives:
        problems.append("at least one objective is needed")
    for name, objective in objectives.items():
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            problems.append(f"objective name {name!r}: use letters, digits, '_' or '-'")
        unknown = (set(objective.exposures) | set(objective.feedback)) - set(event_types)
        if unknown:
            problems.append(f"objective {name!r} uses unknown event types {sorted(unknown)}")
    for model, objective in model_objectives.items():
        if model not in models:
            problems.append(f"model_objectives names {model!r}, which is not in models")
        if objective not in objectives:
            problems.append(f"model {model!r} wants objective {objective!r}, not defined")
    if problems:
        raise ValueError("; ".join(problems))
