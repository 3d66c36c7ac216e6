"""A small simulated product: users and items with latent tastes, impressions and clicks.

Clicks follow impressions after a random delay (event time), with a known probability,
so the stream looks like a product's: sparse, delayed, popularity-skewed feedback.

>>> sim = Simulator(users=50, items=20, seed=7)
>>> first = list(sim.events(100))
>>> first == list(Simulator(users=50, items=20, seed=7).events(100))
True
>>> {e["type"] for e in first} <= {"impression", "click"}
True
>>> all(a["ts"] <= b["ts"] for a, b in zip(first, first[1:]))
True
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator

DIMENSIONS = 4


class Simulator:
    """Generates events in event-time order from a known ground-truth click model."""

    def __init__(
        self, users: int, items: int, seed: int = 0, start_ts: float = 1_767_225_600.0,
        seconds_between_impressions: float = 0.05, mean_click_delay_s: float = 20.0,
    ) -> None:
        self.users = users
        self.items = items
        self.seed = seed
        self.start_ts = start_ts
        self.seconds_between_impressions = seconds_between_impressions
        self.mean_click_delay_s = mean_click_delay_s
        rng = random.Random(seed)
        self._taste = [[rng.gauss(0, 1) for _ in range(DIMENSIONS)] for _ in range(users)]
        self._profile = [[rng.gauss(0, 1) for _ in range(DIMENSIONS)] for _ in range(items)]
        self._appeal = [rng.gauss(-3.0, 1.0) for _ in range(items)]
        # Zipf-like activity: a few users and items account for most traffic.
        self._user_weights = _zipf_cumulative(users)
        self._item_weights = _zipf_cumulative(items)

    def click_probability(self, user: int, item: int, position: int) -> float:
        """The ground truth: P(click | impression of ``item`` to ``user`` at ``position``)."""
        affinity = sum(a * b for a, b in zip(self._taste[user], self._profile[item], strict=True))
        logit = self._appeal[item] + 0.8 * affinity - 0.3 * position
        return 1.0 / (1.0 + math.exp(-logit))

    def events(self, impressions: int) -> Iterator[dict]:
        """``impressions`` impressions and their clicks, as event dicts in time order."""
        rng = random.Random(self.seed + 1)
        pending: list[tuple[float, int, dict]] = []
        ts = self.start_ts
        for n in range(impressions):
            ts += rng.expovariate(1.0 / self.seconds_between_impressions)
            while pending and pending[0][0] <= ts:
                yield heapq.heappop(pending)[2]
            user = rng.choices(range(self.users), cum_weights=self._user_weights)[0]
            item = rng.choices(range(self.items), cum_weights=self._item_weights)[0]
            position = rng.randrange(10)
            exposure = {
                "event_id": f"imp-{self.seed}-{n}", "ts": round(ts, 3), "user_id": f"u{user}",
                "item_id": f"i{item}", "type": "impression", "context": {"position": position},
            }
            yield exposure
            if rng.random() < self.click_probability(user, item, position):
                click_ts = round(ts + rng.expovariate(1.0 / self.mean_click_delay_s), 3)
                click = {
                    "event_id": f"clk-{self.seed}-{n}", "ts": click_ts, "user_id": f"u{user}",
                    "item_id": f"i{item}", "type": "click", "exposure_id": exposure["event_id"],
                }
                heapq.heappush(pending, (click_ts, n, click))
        while pending:
            yield heapq.heappop(pending)[2]


def _zipf_cumulative(n: int, exponent: float = 1.1) -> list[float]:
    total = 0.0
    cumulative = []
    for rank in range(1, n + 1):
        total += 1.0 / rank**exponent
        cumulative.append(total)
    return cumulative
