"""What the events of a replay were: counts by type, bad lines, the join's outcomes.

>>> from learnloop.objective import DEFAULT_OBJECTIVES
>>> tally = Tally(DEFAULT_OBJECTIVES)
>>> for delay in (2.0, 4.0, 6.0, 60.0):
...     tally.count_example({"objective": "engagement", "label": 1, "feedback": "click",
...                          "exposure_ts": "100", "label_ts": str(100 + delay)}, True)
>>> tally.delay_quantiles()[("engagement", "click")]
{'examples': 4, 'p50': 5.0, 'p90': 43.8, 'p99': 58.38, 'max': 60.0}
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from learnloop.events import Event, Rejection
from learnloop.features import BatchResult
from learnloop.publish import BadLine

QUANTILES = {"p50": 0.5, "p90": 0.9, "p99": 0.99}


@dataclass
class Tally:
    """Counters a replay fills batch by batch and example by example."""

    objectives: dict
    records: int = 0
    by_type: Counter = field(default_factory=Counter)  # applied events per type
    bad_lines: list[BadLine] = field(default_factory=list)  # decoding and too-late rejects
    duplicates: int = 0
    unattributed: Counter = field(default_factory=Counter)  # (objective, reason) → events
    examples: Counter = field(default_factory=Counter)  # (objective, label) → examples
    capped: int = 0  # held back by the per-user cap
    delays: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    first_ts: float | None = None
    last_ts: float | None = None
    late_exposures: dict[str, int] = field(default_factory=dict)  # scored, never learned
    pending: dict[str, int] = field(default_factory=dict)  # windows still open at the end
    stats: dict[str, int] = field(default_factory=dict)  # the Lua step's own counters

    def count_batch(self, items: list[tuple[int, Event | Rejection]], result: BatchResult,
                    lines: dict[int, int]) -> None:
        """Account for one applied batch; ``lines`` maps offsets to line numbers."""
        self.records += len(items)
        skipped = set()
        for outcome in result.outcomes:
            if outcome.status == "dup":
                self.duplicates += 1
                skipped.add(outcome.offset)
            elif outcome.rejection is not None:
                skipped.add(outcome.offset)
                self._bad(lines[outcome.offset], outcome.rejection)
            elif outcome.status.startswith("unattributed:"):
                _, objective, reason = outcome.status.split(":")
                self.unattributed[(objective, reason)] += 1
        for offset, decoded in items:
            if isinstance(decoded, Rejection):
                self._bad(lines[offset], decoded)
            elif offset not in skipped:
                self.by_type[decoded.type] += 1
                self.first_ts = min(decoded.ts, self.first_ts or decoded.ts)
                self.last_ts = max(decoded.ts, self.last_ts or decoded.ts)

    def _bad(self, line: int, rejection: Rejection) -> None:
        self.bad_lines.append(BadLine(line, rejection.reason, rejection.detail))

    def count_example(self, example: dict, learned: bool) -> None:
        """One example of the join; its label delay if feedback (not a window) made it."""
        objective = example["objective"]
        self.examples[(objective, example["label"])] += 1
        self.capped += not learned
        if example["feedback"]:
            delay = float(example["label_ts"]) - float(example["exposure_ts"])
            self.delays.setdefault((objective, example["feedback"]), []).append(delay)

    def finish(self, stats: dict[str, int], pending: dict[str, int]) -> None:
        """Close the tally with the Lua step's counters and the still-pending exposures."""
        self.stats = stats
        self.pending = pending
        self.late_exposures = {o: stats.get(f"late_exposures:{o}", 0) for o in self.objectives}
        self.bad_lines.sort(key=lambda bad: bad.line)

    def rejected(self) -> Counter:
        """Bad lines per reason."""
        return Counter(bad.reason for bad in self.bad_lines)

    def delay_quantiles(self) -> dict[tuple[str, str], dict[str, float]]:
        """Per (objective, feedback type): how many labels, and delay quantiles (seconds)."""
        out = {}
        for key, delays in sorted(self.delays.items()):
            values = np.asarray(delays)
            row = {"examples": len(delays)}
            row |= {name: round(float(np.quantile(values, q)), 6) for name, q in QUANTILES.items()}
            out[key] = row | {"max": float(values.max())}
        return out
