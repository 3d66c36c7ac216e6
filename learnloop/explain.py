"""Explanations: a stored score's top contributions, each with what it means and its age.

A score hash's ``explain`` holds ``[feature, contribution, value]`` per top input (see
:mod:`learnloop.scoring`). To read it, each input name is described in words and given an
*age*: how long ago (from ``at``, the wall clock by default) the newest event behind it
happened — from the ``last|{type}`` fields of the user, item and (user, item) feature
hashes, or the exposure's own event time for its context inputs.

>>> describe("u_click_3600"), describe("i_ctr"), describe("ctx_position")
('user clicks, 1 h half-life (log)', 'item smoothed CTR', 'context position')
>>> describe("ui_age_purchase_h")
"hours since the user × item's last purchase"
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from rich.console import Group
from rich.table import Table
from rich.text import Text

from learnloop.scoring import Score

_WHO = {"u": "user", "i": "item", "ui": "user × item"}
_ENTITY = r"(?P<who>ui|u|i)_"
_COUNT = re.compile(_ENTITY + r"(?P<kind>.+)_(?P<half_life>\d+)$")
_AGE = re.compile(_ENTITY + r"age_(?P<kind>.+)_h$")
_CTR = re.compile(_ENTITY + r"ctr$")
_HASHED = re.compile(r"ctx_(?P<key>.+)_(?P<bucket>\d+)$")
#: Event types a smoothed CTR is made of.
_CTR_KINDS = ("click", "impression")


@dataclass(frozen=True, slots=True)
class Contribution:
    """One input's share of a score."""

    feature: str
    description: str
    value: float | None  # the model input (None: not recorded by the scorer)
    contribution: float  # signed, in the model's units (see models.base)
    age_s: float | None  # seconds since the newest event behind it (None: never seen)


@dataclass(frozen=True, slots=True)
class Explanation:
    """A stored score and its top contributions, ages measured at ``at``."""

    score: Score
    contributions: list[Contribution]
    at: float


def describe(feature: str, value: float | None = None) -> str:
    """What a model input means, in words (``value`` tells hashed indicators apart)."""
    if match := _AGE.match(feature):
        return f"hours since the {_WHO[match['who']]}'s last {_words(match['kind'])}"
    if match := _COUNT.match(feature):
        return (f"{_WHO[match['who']]} {_plural(match['kind'])}, "
                f"{_half_life(int(match['half_life']))} half-life (log)")
    if match := _CTR.match(feature):
        return f"{_WHO[match['who']]} smoothed CTR"
    if feature.startswith("ctx_other_num_"):
        return "other numeric context keys (hashed)"
    if feature.startswith("ctx_other_"):
        return "another context key's string value (hashed)"
    if (match := _HASHED.match(feature)) and value in (None, 1.0):
        return f"context {_words(match['key'])} is one hashed string value"
    if feature.startswith("ctx_"):
        return f"context {_words(feature.removeprefix('ctx_'))}"
    return feature


def feature_age(feature: str, features: dict[str, float], event_ts: float,
                at: float) -> float | None:
    """Seconds from the newest event behind ``feature`` to ``at``; ``features`` is a
    :meth:`~learnloop.features.FeatureStore.read` map, ``event_ts`` the exposure's time.

    >>> feature_age("i_ctr", {"i.last|click": 40.0, "i.last|impression": 90.0}, 95.0, 100.0)
    10.0
    >>> feature_age("ctx_position", {}, 95.0, 100.0), feature_age("u_click_3600", {}, 95.0, 100.0)
    (5.0, None)
    """
    if feature.startswith("ctx_"):
        return at - event_ts
    match = _AGE.match(feature) or _COUNT.match(feature) or _CTR.match(feature)
    if match is None:
        return None
    kinds = (match["kind"],) if "kind" in match.re.groupindex else _CTR_KINDS
    times = [features[k] for kind in kinds if (k := f"{match['who']}.last|{kind}") in features]
    return at - max(times) if times else None


def explain_score(score: Score, features: dict[str, float], at: float) -> Explanation:
    """``score``'s stored contributions, described and aged at ``at``.

    >>> score = Score("item_ctr", "3", "u1", "i9", 0.05, "e1", 90.0, "t/0/7",
    ...               [("i_ctr", 0.05, 0.05)], 91.0)
    >>> part, = explain_score(score, {"i.last|impression": 90.0}, at=100.0).contributions
    >>> part.description, part.value, part.contribution, part.age_s
    ('item smoothed CTR', 0.05, 0.05, 10.0)
    """
    parts = []
    for feature, contribution, *value in score.explain:
        value = value[0] if value else None  # scores stored before values were recorded
        parts.append(Contribution(feature, describe(feature, value), value, contribution,
                                  feature_age(feature, features, score.ts, at)))
    return Explanation(score, parts, at)


def render(explanation: Explanation) -> Group:
    """A readable view: the score, its model and times, then a table of contributions."""
    score = explanation.score
    about = f"user {score.user_id}" + (f", item {score.item_id}" if score.item_id else "")
    header = Text.assemble(
        (f"score {score.score:.6f} for {about}\n", "bold"),
        f"model {score.model} version {score.version}, event {score.event_id} at "
        f"{_utc(score.ts)}, scored at {_utc(score.scored_at)} (source {score.source})\n"
        f"feature ages at {_utc(explanation.at)}")
    table = Table()
    for column in ("feature", "meaning", "value", "contribution", "age"):
        table.add_column(column, no_wrap=column != "meaning",
                         justify="right" if column in ("value", "contribution") else "left")
    for part in explanation.contributions:
        value = "-" if part.value is None else f"{part.value:.6g}"
        table.add_row(part.feature, part.description, value, f"{part.contribution:+.6f}",
                      duration(part.age_s))
    return Group(header, table)


def duration(seconds: float | None) -> str:
    """A feature age in words (negative: the event is ahead of the clock).

    >>> duration(95.2), duration(600), duration(7200), duration(-3 * 86_400), duration(None)
    ('95 s', '10 min', '2.0 h', '-3.0 d', 'never')
    """
    if seconds is None:
        return "never"
    sign, size = ("-" if seconds < 0 else ""), abs(seconds)
    if size < 120:
        return f"{sign}{size:.0f} s"
    if size < 7200:
        return f"{sign}{size / 60:.0f} min"
    if size < 172_800:
        return f"{sign}{size / 3600:.1f} h"
    return f"{sign}{size / 86_400:.1f} d"


def _utc(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def _words(name: str) -> str:
    return name.replace("_", " ")


def _plural(kind: str) -> str:
    if "_" in kind:
        return f"{_words(kind)} events"
    return f"{kind}es" if kind.endswith("s") else f"{kind}s"


def _half_life(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"
