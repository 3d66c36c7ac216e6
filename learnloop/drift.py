"""Drift detection on the learner's stream: concept (each model's loss), label (the
positive rate of each objective) and feature (a bounded set of numeric inputs).

Detectors are River's (``river.drift``; ADWIN by default). A detection becomes an
:class:`Alert` unless the same (model, signal) alerted less than ``cooldown_s`` ago in
event time. The monitor is plain data: it is pickled into every learner checkpoint,
so a restart neither forgets a detector's window nor repeats an alert.

>>> monitor = DriftMonitor("ADWIN", {}, cooldown_s=3600, max_features=0)
>>> alerts = []
>>> for n in range(3000):
...     y = (n % 10 == 0) if n < 1500 else (n % 10 < 5)     # positive rate 0.1 → 0.5
...     alerts += monitor.observe_label("engagement", y, ts=float(n), where="0/%d" % n)
>>> [(a.signal, round(a.before, 2), a.after > 0.2) for a in alerts]
[('label', 0.11, True)]
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass, field

from river import drift

from learnloop.errors import ConfigError

DETECTORS = ("ADWIN", "KSWIN", "PageHinkley")


def make_detector(name: str, params: dict):
    """A fresh River drift detector by class name, with ``params``."""
    if name not in DETECTORS:
        raise ConfigError(f"unknown drift detector {name!r}; choose one of {DETECTORS}")
    return getattr(drift, name)(**params)


@dataclass(frozen=True)
class Alert:
    """One detected drift, as published to the drift-alerts topic and Redis stream."""

    model: str  # the model, or "objective:{name}" for label and feature drift
    signal: str  # "concept", "label" or "feature:{name}"
    detector: str
    event_time: float  # label time of the example that triggered it
    where: str  # examples partition/offset of that example's message, '.n' for its n-th
    before: float  # mean of the signal since the previous drift
    after: float  # mean of its last RECENT values, when the drift was detected

    @property
    def alert_id(self) -> str:
        return f"{self.model}|{self.signal}|{self.where}"

    def as_dict(self) -> dict:
        return {**asdict(self), "id": self.alert_id}


#: How many of the latest values make the "after" level of an alert.
RECENT = 50


class RunningMean:
    """Mean of every value since a drift: a count and a sum, which :meth:`_Watch.update`
    adds to (checkpoints written before it hold River's ``stats.Mean``; :class:`_Watch`
    converts them on load)."""

    __slots__ = ("n", "total")

    def __init__(self, n: int = 0, total: float = 0.0) -> None:
        self.n, self.total = n, total

    def revert(self, x: float) -> None:
        self.n -= 1
        self.total -= x

    def get(self) -> float:
        return self.total / self.n if self.n else 0.0


@dataclass
class _Watch:
    """One detector, the mean of its signal since the last drift, and its recent level."""

    detector: object
    mean: RunningMean = field(default_factory=RunningMean)
    recent: RecentMean = field(default_factory=lambda: RecentMean(RECENT))

    def update(self, value: float) -> bool:
        """One value of the signal; True if the detector saw a drift. (The mean and the
        recent values are updated inline: ~19 watches take every example.)"""
        detector = self.detector
        detector.update(value)
        mean = self.mean
        mean.n += 1
        mean.total += value
        self.recent.values.append(value)
        return detector.drift_detected

    def __setstate__(self, state: dict) -> None:
        mean = state["mean"]
        if not isinstance(mean, RunningMean):  # River's stats.Mean, from an older checkpoint
            state["mean"] = RunningMean(mean.n, mean.get() * mean.n)
        self.__dict__.update(state)


class RecentMean:
    """Mean of the last ``size`` values: O(1) to update, summed only when asked (at an
    alert) — every example feeds one per watched signal, so River's Rolling is too dear.

    >>> recent = RecentMean(2)
    >>> for v in (1.0, 2.0, 4.0):
    ...     recent.update(v)
    >>> recent.get()
    3.0
    """

    def __init__(self, size: int) -> None:
        self.values: deque[float] = deque(maxlen=size)

    def update(self, value: float) -> None:
        self.values.append(value)

    def get(self) -> float:
        return math.fsum(self.values) / len(self.values) if self.values else 0.0


class DriftMonitor:
    """All detectors of a learner, with cooldowns; picklable."""

    def __init__(self, detector: str, params: dict, cooldown_s: float, max_features: int):
        make_detector(detector, params)  # fail early on a bad name or parameter
        self.detector = detector
        self.params = dict(params)
        self.cooldown_s = cooldown_s
        self.max_features = max_features
        self.watches: dict[tuple[str, str], _Watch] = {}
        self.last_alert: dict[tuple[str, str], float] = {}
        self.features: list[str] = []

    def observe_loss(self, model: str, loss: float, ts: float, where: str) -> list[Alert]:
        """Concept drift: a change in ``model``'s per-example loss."""
        return self._observe(model, "concept", loss, ts, where)

    def observe_label(self, objective: str, y: bool, ts: float, where: str) -> list[Alert]:
        """Label drift: a change in the objective's positive rate."""
        return self._observe(f"objective:{objective}", "label", float(y), ts, where)

    def observe_features(self, objective: str, x: dict[str, float], ts: float,
                         where: str) -> list[Alert]:
        """Feature drift on the first ``max_features`` numeric inputs seen (a bounded set)."""
        if len(self.features) < self.max_features:
            for name in sorted(x):
                if name not in self.features and len(self.features) < self.max_features:
                    self.features.append(name)
        alerts: list[Alert] = []
        for name, key, watch in self._feature_watches(objective):
            value = x.get(name)
            if value is not None and watch.update(value):
                alerts += self._alert(key, watch, value, ts, where)
        return alerts

    def _feature_watches(self, objective: str) -> list[tuple[str, tuple[str, str], _Watch]]:
        """(input name, watch key, watch) of each watched input of ``objective``, memoized
        until the set of watched inputs grows (not pickled: rebuilt after a restart)."""
        memo = self.__dict__.setdefault("_feature_watches_memo", {})
        found = memo.get(objective)
        if found is None or len(found) != len(self.features):
            keys = [(name, (f"objective:{objective}", f"feature:{name}"))
                    for name in self.features]
            found = memo[objective] = [(name, key, self.watches.get(key)
                                        or self._new_watch(key)) for name, key in keys]
        return found

    def forget(self, model: str) -> None:
        """Drop a model's detectors (after a reset, its loss starts a new story)."""
        for key in [k for k in self.watches if k[0] == model]:
            del self.watches[key]
        self.__dict__.pop("_feature_watches_memo", None)

    def __getstate__(self) -> dict:
        """Everything but the memos (older checkpoints may hold ``_feature_memo``)."""
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_feature_")}

    def _observe(self, model: str, signal: str, value: float, ts: float,
                 where: str) -> list[Alert]:
        key = (model, signal)
        watch = self.watches.get(key) or self._new_watch(key)
        return self._alert(key, watch, value, ts, where) if watch.update(value) else []

    def _new_watch(self, key: tuple[str, str]) -> _Watch:
        watch = self.watches[key] = _Watch(make_detector(self.detector, self.params))
        return watch

    def _alert(self, key: tuple[str, str], watch: _Watch, value: float, ts: float,
               where: str) -> list[Alert]:
        """``watch`` just drifted on ``value``: an alert, unless it is cooling down."""
        watch.mean.revert(value)
        before, after = watch.mean.get(), watch.recent.get()
        watch.mean = RunningMean()
        last = self.last_alert.get(key)
        if last is not None and ts - last < self.cooldown_s:
            return []
        self.last_alert[key] = ts
        return [Alert(*key, self.detector, ts, where, before, after)]
