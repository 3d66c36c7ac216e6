"""A small simulated product: users and items with latent tastes, impressions, clicks
and purchases, from a known ground-truth model.

Clicks follow impressions after a random delay (event time), with a known probability,
so the stream looks like a product's: sparse, delayed, popularity-skewed feedback. Opt
in to more of a product's life: purchases (minutes after a click), new items over time,
and a drift at a known impression — the preferences shift.

>>> sim = Simulator(users=50, items=20, seed=7)
>>> first = list(sim.events(100))
>>> first == list(Simulator(users=50, items=20, seed=7).events(100))
True
>>> {e["type"] for e in first} <= {"impression", "click"}
True
>>> all(a["ts"] <= b["ts"] for a, b in zip(first, first[1:]))
True

The truth of every impression can be recorded, e.g. to score an oracle
(:mod:`learnloop.oracle`); a drift changes it from the drift impression on:

>>> truth = {}
>>> sim = Simulator(users=50, items=20, seed=7, drift_at=50)
>>> events = list(sim.events(100, truth=truth))
>>> first = events[0]
>>> user, item = int(first["user_id"][1:]), int(first["item_id"][1:])
>>> before = Simulator(users=50, items=20, seed=7)  # the world before any drift
>>> truth["imp-7-0"] == before.truth_of(user, item, first["context"]["position"])
True
>>> len(truth)
100
>>> sim.drift_ts == next(e["ts"] for e in events if e["event_id"] == "imp-7-50")
True
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import KW_ONLY, dataclass, field
from typing import IO

import orjson

DIMENSIONS = 4
#: Item appeal (the logit of its click rate before taste and position) is drawn from
#: N(APPEAL_MEAN, appeal_spread²); a drift mirrors it about this mean.
APPEAL_MEAN = -3.0
#: Impressions are shown at positions 0..POSITIONS-1, uniformly.
POSITIONS = 10
#: A new item is shown, instead of a catalogue pick, with this probability, uniformly
#: among the NEWEST items added last.
NEW_ITEM_SHARE = 0.1
NEWEST = 10


@dataclass(frozen=True)
class Truth:
    """The ground truth of one impression: P(click) and P(purchase | click)."""

    click: float
    purchase: float


@dataclass(eq=False)
class Simulator:
    """Generates events in event-time order from a known ground-truth model.

    P(click) = σ(appeal[item] + 0.8 · taste[user]·profile[item] − position_bias · position),
    with appeal ~ N(−3, ``appeal_spread``²) and tastes and profiles ~ N(0, 1) in 4 dimensions;
    a click comes after Exp(``mean_click_delay_s``) seconds. With ``purchase_rate`` > 0,
    a click is followed by a purchase with P = σ(logit(purchase_rate) + 0.5 · affinity)
    after Exp(``mean_purchase_delay_s``) more seconds. With ``new_item_every``, a new
    item joins every that many impressions and is shown often while new. With
    ``drift_at``, at that impression the preferences shift: every item's appeal is
    mirrored about the mean (hits become flops and flops hits) and every user's taste
    turns around. Without these options the stream is exactly the original one.
    """

    users: int
    items: int
    seed: int = 0
    start_ts: float = 1_767_225_600.0
    seconds_between_impressions: float = 0.05
    mean_click_delay_s: float = 20.0
    _: KW_ONLY
    position_bias: float = 0.3
    appeal_spread: float = 1.0
    purchase_rate: float = 0.0
    mean_purchase_delay_s: float = 600.0
    new_item_every: int | None = None
    drift_at: int | None = None
    #: event time of the drift impression, once generated
    drift_ts: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        # Zipf-like activity: a few users and items account for most traffic.
        self._user_weights = _zipf_cumulative(self.users)
        self._item_weights = _zipf_cumulative(self.items)
        self._reset()

    def _reset(self) -> None:
        """The world as it is before the first impression."""
        rng = random.Random(self.seed)
        self._taste = [[rng.gauss(0, 1) for _ in range(DIMENSIONS)] for _ in range(self.users)]
        self._profile = [[rng.gauss(0, 1) for _ in range(DIMENSIONS)] for _ in range(self.items)]
        self._appeal = [rng.gauss(APPEAL_MEAN, self.appeal_spread) for _ in range(self.items)]
        self._newcomers = random.Random(self.seed + 2)
        self.drift_ts = None

    def _affinity(self, user: int, item: int) -> float:
        return sum(a * b for a, b in zip(self._taste[user], self._profile[item], strict=True))

    def click_probability(self, user: int, item: int, position: int) -> float:
        """The ground truth: P(click | impression of ``item`` to ``user`` at ``position``)."""
        logit = (self._appeal[item] + 0.8 * self._affinity(user, item)
                 - self.position_bias * position)
        return _sigmoid(logit)

    def purchase_probability(self, user: int, item: int) -> float:
        """The ground truth: P(purchase | click of ``item`` by ``user``)."""
        if self.purchase_rate <= 0.0:
            return 0.0
        base = math.log(self.purchase_rate / (1.0 - self.purchase_rate))
        return _sigmoid(base + 0.5 * self._affinity(user, item))

    def truth_of(self, user: int, item: int, position: int) -> Truth:
        """Both probabilities of an impression, as the world is now."""
        return Truth(self.click_probability(user, item, position),
                     self.purchase_probability(user, item))

    def events(self, impressions: int, truth: dict[str, Truth] | None = None) -> Iterator[dict]:
        """``impressions`` impressions and their feedback, as event dicts in time order;
        ``truth``, if given, receives each impression's :class:`Truth` by event id."""
        self._reset()
        rng = random.Random(self.seed + 1)
        pending: list[tuple[float, int, int, dict]] = []
        ts = self.start_ts
        for n in range(impressions):
            ts += rng.expovariate(1.0 / self.seconds_between_impressions)
            while pending and pending[0][0] <= ts:
                yield heapq.heappop(pending)[3]
            if n == self.drift_at:
                self._shift()
                self.drift_ts = round(ts, 3)
            if self.new_item_every and n and n % self.new_item_every == 0:
                self._add_item()
            user = rng.choices(range(self.users), cum_weights=self._user_weights)[0]
            item = self._pick_item(rng)
            position = rng.randrange(POSITIONS)
            exposure = {
                "event_id": f"imp-{self.seed}-{n}", "ts": round(ts, 3), "user_id": f"u{user}",
                "item_id": f"i{item}", "type": "impression", "context": {"position": position},
            }
            odds = self.truth_of(user, item, position)
            if truth is not None:  # before the exposure is seen: consumers may look it up
                truth[exposure["event_id"]] = odds
            yield exposure
            if rng.random() < odds.click:
                click_ts = ts + rng.expovariate(1.0 / self.mean_click_delay_s)
                heapq.heappush(pending, self._feedback("click", exposure, n, click_ts))
                if self.purchase_rate > 0.0 and rng.random() < odds.purchase:
                    bought_ts = click_ts + rng.expovariate(1.0 / self.mean_purchase_delay_s)
                    heapq.heappush(pending, self._feedback("purchase", exposure, n, bought_ts))
        while pending:
            yield heapq.heappop(pending)[3]

    def _feedback(self, kind: str, exposure: dict, n: int, ts: float) -> tuple:
        ts = round(ts, 3)
        body = {
            "event_id": f"{'clk' if kind == 'click' else 'buy'}-{self.seed}-{n}", "ts": ts,
            "user_id": exposure["user_id"], "item_id": exposure["item_id"], "type": kind,
            "exposure_id": exposure["event_id"],
        }
        return ts, n, kind != "click", body

    def _pick_item(self, rng: random.Random) -> int:
        newest = len(self._appeal) - self.items
        if newest and self._newcomers.random() < NEW_ITEM_SHARE:
            return len(self._appeal) - 1 - self._newcomers.randrange(min(newest, NEWEST))
        return rng.choices(range(self.items), cum_weights=self._item_weights)[0]

    def _add_item(self) -> None:
        self._profile.append([self._newcomers.gauss(0, 1) for _ in range(DIMENSIONS)])
        self._appeal.append(self._newcomers.gauss(APPEAL_MEAN, self.appeal_spread))

    def _shift(self) -> None:
        """The drift: appeals mirrored about their mean, tastes turned around."""
        self._appeal = [2 * APPEAL_MEAN - a for a in self._appeal]
        self._taste = [[-t for t in taste] for taste in self._taste]


def _sigmoid(logit: float) -> float:
    return 1.0 / (1.0 + math.exp(-logit))


def _zipf_cumulative(n: int, exponent: float = 1.1) -> list[float]:
    total = 0.0
    cumulative = []
    for rank in range(1, n + 1):
        total += 1.0 / rank**exponent
        cumulative.append(total)
    return cumulative


def write_json_lines(rows: Iterable[dict], sink: IO[bytes]) -> int:
    """Write ``rows`` to ``sink``, one JSON object a line; return how many."""
    count = 0
    for row in rows:
        sink.write(orjson.dumps(row) + b"\n")
        count += 1
    return count
