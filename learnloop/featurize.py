"""From a point-in-time feature snapshot and an event to the model's input ``x``.

Counts are log-scaled (zeros included), rates are smoothed, ages are capped, and
context strings are hashed into a fixed number of buckets, so the input space stays
bounded whatever ids and values products send: user and item ids never become inputs,
and a context string (numbers sent as strings included) is one of ``CONTEXT_BUCKETS``
hashed indicators per key. Context keys that match none of the ``context_keys`` patterns
are hashed too (into ``ctx_other_{bucket}`` and ``ctx_other_num_{bucket}``), which bounds
the inputs whatever keys products invent.

Every input is then clipped into the range of the first ``clip`` pattern (``fnmatch``)
its name matches, so an absurd value (a context number of 1e300, a flood of clicks) moves
a model no further than the range's edge. Scorer and learner both build ``x`` with a
:class:`Featurizer` made from the same settings, so they see the same, clipped, input.

>>> featurize({}, 0.0, {"device": "ios", "price": 1e300}, (3600,), ("click",))["ctx_price"]
1000.0
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import zlib
from collections.abc import Callable, Mapping
from fnmatch import translate
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from learnloop.settings import Settings

#: Prior for smoothed click-through rates: (clicks + PRIOR_CLICKS) / (impr + PRIOR_IMPRESSIONS).
PRIOR_CLICKS = 1.0
PRIOR_IMPRESSIONS = 20.0
#: Ages are capped here (and "never seen" counts as this old).
MAX_AGE_S = 30 * 86_400
#: Context string values are hashed into this many buckets per key.
CONTEXT_BUCKETS = 32
#: Context keys that get inputs named after them (``fnmatch`` patterns); the rest are hashed.
ALL_CONTEXT_KEYS = ("*",)
#: Input ranges, the first matching pattern wins: numeric context values (documented as
#: small scalars), ages in hours, smoothed rates, and log-counts (log1p of decayed counts:
#: 15 is about 3.3 million events).
DEFAULT_CLIP: dict[str, tuple[float, float]] = {
    "ctx_*": (-1000.0, 1000.0),
    "*_age_*_h": (0.0, MAX_AGE_S / 3600.0),
    "*_ctr": (0.0, 1.0),
    "*_[0-9]*": (0.0, 15.0),
}
_PREFIXES = ("u", "i", "ui")
_MEMO_MAX = 10_000  # input names whose range is remembered (names are bounded, this too)
_UNSEEN = ("", 0.0, 0.0)


def smoothed_ctr(clicks: float, impressions: float) -> float:
    """Click-through rate pulled towards the prior when there is little evidence."""
    return (clicks + PRIOR_CLICKS) / (impressions + PRIOR_IMPRESSIONS)


class Clip:
    """Clips each input into the range of the first pattern its name matches.

    ``on_clip(pattern)`` is called for every value clipped (NaN becomes ``lo``).

    >>> clip = Clip({"ctx_*": (-10.0, 10.0), "*_ctr": (0.0, 1.0)})
    >>> clip({"ctx_price": -1e300, "ctx_pos": 3.0, "u_ctr": 7.0, "other": 1e9})
    {'ctx_price': -10.0, 'ctx_pos': 3.0, 'u_ctr': 1.0, 'other': 1000000000.0}
    """

    def __init__(self, ranges: Mapping[str, tuple[float, float]],
                 on_clip: Callable[[str], None] | None = None) -> None:
        self.ranges = dict(ranges)
        self.on_clip = on_clip
        self._patterns = [(p, re.compile(translate(p)), float(lo), float(hi))
                          for p, (lo, hi) in self.ranges.items()]
        self._memo: dict[str, tuple[str, float, float] | None] = {}
        self._fixed: dict[_Layout, _FixedRanges] = {}

    def range_of(self, name: str) -> tuple[str, float, float] | None:
        """(pattern, lo, hi) of the first pattern ``name`` matches, or None."""
        try:
            return self._memo[name]
        except KeyError:
            found = next(((p, lo, hi) for p, rx, lo, hi in self._patterns if rx.match(name)),
                         None)
            if len(self._memo) < _MEMO_MAX:
                self._memo[name] = found
            return found

    def __call__(self, x: dict[str, float], layout: _Layout | None = None,
                 set_from_snapshot: list[str] | None = None) -> dict[str, float]:
        """Clip ``x`` in place. With the ``layout`` that built ``x``, its fixed inputs go
        through precomputed ranges and only the rest (context) is looked up; given also
        the fixed inputs ``set_from_snapshot``, only those and the rates are checked when
        every other fixed input holds its unseen value and that is in range."""
        start = 0
        if layout is not None:
            fixed = self._fixed.get(layout)
            if fixed is None:
                fixed = self._fixed[layout] = self._fixed_ranges(layout)
            names = (itertools.chain(set_from_snapshot, layout.rate_names)
                     if set_from_snapshot is not None and fixed.unseen_in_range else fixed.ranges)
            ranges = fixed.ranges
            for name in names:
                found = ranges.get(name)
                if found is not None:
                    pattern, lo, hi = found
                    value = x[name]
                    if not lo <= value <= hi:
                        x[name] = hi if value > hi else lo
                        if self.on_clip is not None:
                            self.on_clip(pattern)
            start = len(layout.template)
            if start == len(x):
                return x
        memo = self._memo
        for name, value in itertools.islice(x.items(), start, None):
            found = memo.get(name, _UNSEEN)
            if found is _UNSEEN:
                found = self.range_of(name)
            if found is not None and not found[1] <= value <= found[2]:
                x[name] = found[2] if value > found[2] else found[1]
                if self.on_clip is not None:
                    self.on_clip(found[0])
        return x

    def _fixed_ranges(self, layout: _Layout) -> _FixedRanges:
        ranges = {name: found for name in layout.template
                  if (found := self.range_of(name)) is not None}
        in_range = all(lo <= layout.template[name] <= hi for name, (_, lo, hi) in ranges.items())
        return _FixedRanges(ranges, in_range)


class _FixedRanges(NamedTuple):
    """A layout's fixed inputs with a range: name → (pattern, lo, hi); and whether each
    one's unseen value (the layout's template) is inside its range."""

    ranges: dict[str, tuple[str, float, float]]
    unseen_in_range: bool


_DEFAULT_CLIP = Clip(DEFAULT_CLIP)


class Featurizer:
    """:func:`featurize` with one configuration: what the scorer and the learner share."""

    def __init__(self, half_lives: tuple[int, ...], event_types: tuple[str, ...],
                 clip: Clip = _DEFAULT_CLIP,
                 context_keys: tuple[str, ...] = ALL_CONTEXT_KEYS) -> None:
        self.half_lives = half_lives
        self.event_types = event_types
        self.clip = clip
        self.context_keys = context_keys

    @classmethod
    def from_settings(cls, settings: Settings, clipped=None) -> Featurizer:
        """From ``settings``; ``clipped``, a Prometheus counter with a ``pattern`` label
        (:func:`learnloop.metrics.features_clipped`), counts every value clipped."""
        on_clip = None if clipped is None else (lambda pattern: clipped.labels(pattern).inc())
        return cls(settings.half_lives_s, settings.event_types,
                   Clip(settings.feature_clip, on_clip), settings.context_keys)

    def __call__(self, snapshot: dict[str, float], ts: float, context: dict) -> dict[str, float]:
        return featurize(snapshot, ts, context, self.half_lives, self.event_types,
                         clip=self.clip, context_keys=self.context_keys)


def featurize(
    snapshot: dict[str, float], ts: float, context: dict, half_lives: tuple[int, ...],
    event_types: tuple[str, ...], clip: Clip = _DEFAULT_CLIP,
    context_keys: tuple[str, ...] = ALL_CONTEXT_KEYS,
) -> dict[str, float]:
    """The model input for an exposure at event time ``ts`` with its ``context``, from its
    point-in-time feature snapshot (see :mod:`learnloop.features`), clipped."""
    layout = _layout(tuple(half_lives), tuple(event_types))
    # zeros are kept: to a scaled linear model "no clicks" must not look like "an
    # average number of clicks"; a type never seen counts as MAX_AGE_S old
    x = layout.template.copy()
    counts, lasts = layout.counts, layout.lasts
    set_from_snapshot = []
    for key, value in snapshot.items():
        name = counts.get(key)
        if name is not None:
            x[name] = math.log1p(value)
            set_from_snapshot.append(name)
            continue
        name = lasts.get(key)
        if name is not None:
            x[name] = min(max(ts - value, 0.0), MAX_AGE_S) / 3600.0
            set_from_snapshot.append(name)
    get = snapshot.get
    for name, clicks, impressions in layout.rates:
        x[name] = smoothed_ctr(get(clicks, 0.0), get(impressions, 0.0))
    if context:
        _add_context(x, context, _named_keys(context_keys))
    return clip(x, layout, set_from_snapshot)


class _Layout:
    """Where each snapshot field goes in ``x``, for one (half-lives, event types)."""

    def __init__(self, half_lives: tuple[int, ...], event_types: tuple[str, ...]) -> None:
        longest = max(half_lives)
        self.template: dict[str, float] = {}  # every input, in order, at its "unseen" value
        self.counts: dict[str, str] = {}  # snapshot field → input (log-scaled count)
        self.lasts: dict[str, str] = {}  # snapshot field → input (age in hours)
        self.rates: list[tuple[str, str, str]] = []  # input, clicks field, impressions field
        for prefix in _PREFIXES:
            for kind in event_types:
                for hl in half_lives:
                    name = f"{prefix}_{kind}_{hl}"
                    self.template[name] = 0.0
                    self.counts[f"{prefix}.{kind}|{hl}"] = name
                name = f"{prefix}_age_{kind}_h"
                self.template[name] = MAX_AGE_S / 3600.0
                self.lasts[f"{prefix}.last|{kind}"] = name
            name = f"{prefix}_ctr"
            self.template[name] = smoothed_ctr(0.0, 0.0)
            self.rates.append((name, f"{prefix}.click|{longest}", f"{prefix}.impression|{longest}"))
        self.rate_names = tuple(name for name, _, _ in self.rates)


@functools.cache
def _layout(half_lives: tuple[int, ...], event_types: tuple[str, ...]) -> _Layout:
    return _Layout(half_lives, event_types)


def _add_context(x: dict[str, float], context: dict, named: Callable[[str], bool]) -> None:
    """Context inputs: a string is one hashed indicator, a number its value."""
    for key, value in context.items():
        if isinstance(value, str):
            bucket = zlib.crc32(f"{key}={value}".encode()) % CONTEXT_BUCKETS
            name = f"ctx_{key}_{bucket}" if named(key) else f"ctx_other_{bucket}"
            x[name] = 1.0
        elif named(key):
            x[f"ctx_{key}"] = float(value)
        else:
            name = f"ctx_other_num_{zlib.crc32(key.encode()) % CONTEXT_BUCKETS}"
            x[name] = x.get(name, 0.0) + float(value)


@functools.cache
def _named_keys(patterns: tuple[str, ...]) -> Callable[[str], bool]:
    """Whether a context key gets inputs named after it (matches one of ``patterns``)."""
    if patterns == ALL_CONTEXT_KEYS:
        return lambda _key: True
    rx = re.compile("|".join(translate(p) for p in patterns) or "(?!)")
    return lambda key: rx.match(key) is not None
