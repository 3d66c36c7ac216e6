"""From a point-in-time feature snapshot and an event to the model's input ``x``.

Counts are log-scaled (zeros included), rates are smoothed, ages are capped, and
context strings are hashed into a fixed number of buckets, so the input space stays
bounded whatever ids and values products send.
"""

from __future__ import annotations

import math
import zlib

#: Prior for smoothed click-through rates: (clicks + PRIOR_CLICKS) / (impr + PRIOR_IMPRESSIONS).
PRIOR_CLICKS = 1.0
PRIOR_IMPRESSIONS = 20.0
#: Ages are capped here (and "never seen" counts as this old).
MAX_AGE_S = 30 * 86_400
#: Context string values are hashed into this many buckets per key.
CONTEXT_BUCKETS = 32
_PREFIXES = ("u", "i", "ui")


def smoothed_ctr(clicks: float, impressions: float) -> float:
    """Click-through rate pulled towards the prior when there is little evidence."""
    return (clicks + PRIOR_CLICKS) / (impressions + PRIOR_IMPRESSIONS)


def featurize(
    snapshot: dict[str, float], ts: float, context: dict, half_lives: tuple[int, ...],
    event_types: tuple[str, ...],
) -> dict[str, float]:
    """The model input for an exposure at event time ``ts`` with its ``context``, from its
    point-in-time feature snapshot (see :mod:`learnloop.features`)."""
    x: dict[str, float] = {}
    longest = max(half_lives)
    for prefix in _PREFIXES:
        for kind in event_types:
            for hl in half_lives:
                # zeros are kept: to a scaled linear model "no clicks" must not look
                # like "an average number of clicks"
                x[f"{prefix}_{kind}_{hl}"] = math.log1p(snapshot.get(f"{prefix}.{kind}|{hl}", 0.0))
            last = snapshot.get(f"{prefix}.last|{kind}")
            age = MAX_AGE_S if last is None else min(max(ts - last, 0.0), MAX_AGE_S)
            x[f"{prefix}_age_{kind}_h"] = age / 3600.0
        x[f"{prefix}_ctr"] = smoothed_ctr(
            snapshot.get(f"{prefix}.click|{longest}", 0.0),
            snapshot.get(f"{prefix}.impression|{longest}", 0.0),
        )
    for key, value in context.items():
        if isinstance(value, str):
            bucket = zlib.crc32(f"{key}={value}".encode()) % CONTEXT_BUCKETS
            x[f"ctx_{key}_{bucket}"] = 1.0
        else:
            x[f"ctx_{key}"] = float(value)
    return x
