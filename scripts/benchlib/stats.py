"""Small statistics helpers (no numpy: the numbers are few)."""

from __future__ import annotations

import statistics
from collections.abc import Sequence


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), linear between closest ranks."""
    ordered = sorted(values)
    if not ordered:
        raise ValueError("no values")
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(seconds: Sequence[float]) -> dict:
    """p50/p95/p99/max of durations given in seconds, in milliseconds."""
    return {"n": len(seconds),
            **{f"p{q}_ms": round(percentile(seconds, q) * 1000, 2) for q in (50, 95, 99)},
            "max_ms": round(max(seconds) * 1000, 2)}


def summary_s(seconds: Sequence[float]) -> dict:
    """p50/p95/p99/max of durations, in seconds."""
    return {"n": len(seconds),
            **{f"p{q}_s": round(percentile(seconds, q), 3) for q in (50, 95, 99)},
            "max_s": round(max(seconds), 3)}
