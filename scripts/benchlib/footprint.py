"""What learnloop keeps in Redis: bytes per active user, per pending exposure, per key family.

- per active user: ``INFO memory`` used_memory after a run minus before it (an empty
  Redis), divided by the distinct users of the run's events — everything learnloop
  stores, charged to the users that caused it;
- per pending exposure: ``MEMORY USAGE`` of sampled ``pend:{objective}:{id}`` keys and of
  the ``snap:{id}`` of the same exposures, plus their share of the ``pendu:`` / ``due:``
  sorted sets (MEMORY USAGE / ZCARD);
- per key family (``fu``, ``snap``, ``seen``, …): RANDOMKEY samples with MEMORY USAGE,
  scaled to DBSIZE — where the bytes go.
"""

from __future__ import annotations

from collections import defaultdict

import redis

from benchlib.stats import median


def redis_used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def family(key: bytes) -> str:
    return key.split(b":", 1)[0].decode(errors="replace")


def key_families(client: redis.Redis, samples: int) -> dict:
    """Estimated keys and bytes per key family, from ``samples`` random keys."""
    size = client.dbsize()
    if not size:
        return {}
    pipe = client.pipeline(transaction=False)
    for _ in range(samples):
        pipe.randomkey()
    keys = [k for k in pipe.execute() if k is not None]
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
    usage = pipe.execute()
    by_family: dict[str, list[int]] = defaultdict(list)
    for key, used in zip(keys, usage, strict=True):
        if used is not None:
            by_family[family(key)].append(int(used))
    sampled = sum(len(v) for v in by_family.values())
    out = {}
    for name, sizes in sorted(by_family.items(), key=lambda kv: -sum(kv[1])):
        share = len(sizes) / sampled
        mean = sum(sizes) / len(sizes)
        out[name] = {"est_keys": round(size * share), "mean_bytes": round(mean),
                     "est_bytes": round(size * share * mean), "sampled": len(sizes)}
    return out


def _scan(client: redis.Redis, pattern: str, limit: int) -> list[bytes]:
    found = []
    for key in client.scan_iter(match=pattern, count=1000):
        found.append(key)
        if len(found) >= limit:
            break
    return found


def _per_member(client: redis.Redis, keys: list[bytes]) -> float | None:
    pipe = client.pipeline(transaction=False)
    for key in keys:
        pipe.memory_usage(key, samples=0)
        pipe.zcard(key)
    flat = pipe.execute()
    pairs = [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2) if flat[i] and flat[i + 1]]
    return sum(u for u, _ in pairs) / sum(n for _, n in pairs) if pairs else None


def pending_exposure(client: redis.Redis, sample: int) -> dict:
    """Bytes one pending exposure costs: its pend and snap keys and index entries."""
    pend_keys = _scan(client, "pend:*", sample)
    pending = sum(client.zcard(k) for k in _scan(client, "due:*", 10_000))
    if not pend_keys:
        return {"pending_exposures": pending}
    snap_keys = [b"snap:" + k.split(b":", 2)[2] for k in pend_keys]
    pipe = client.pipeline(transaction=False)
    for key in pend_keys + snap_keys:
        pipe.memory_usage(key, samples=0)
    usage = pipe.execute()
    pend = [u for u in usage[:len(pend_keys)] if u]
    snap = [u for u in usage[len(pend_keys):] if u]
    pendu = _per_member(client, _scan(client, "pendu:*", sample)) or 0.0
    due = _per_member(client, _scan(client, "due:*", 100)) or 0.0
    mean_pend = sum(pend) / len(pend)
    mean_snap = sum(snap) / len(snap) if snap else 0.0
    return {
        "pending_exposures": pending, "sampled": len(pend_keys),
        "pend_key_bytes": round(mean_pend), "snap_key_bytes": round(mean_snap),
        "snap_key_bytes_median": round(median(snap)) if snap else 0,
        "pendu_entry_bytes": round(pendu, 1), "due_entry_bytes": round(due, 1),
        "bytes": round(mean_pend + mean_snap + pendu + due),
    }


def measure(client: redis.Redis, used_before: int, users: int, events: int,
            samples: int) -> dict:
    """Redis footprint after a run that started from ``used_before`` bytes."""
    used = redis_used_memory(client)
    delta = used - used_before
    families = key_families(client, samples)
    return {
        "redis_used_memory_bytes": used, "redis_used_memory_delta_bytes": delta,
        "active_users": users, "events": events, "dbsize": client.dbsize(),
        "bytes_per_active_user": round(delta / users, 1),
        "bytes_per_event": round(delta / events, 1),
        "per_user_by_family": {name: round(f["est_bytes"] / users, 1)
                               for name, f in families.items()},
        "key_families": families,
        "pending_exposure": pending_exposure(client, min(samples, 500)),
    }


def rss_summary(samples: list[tuple[float, int, int]], tolerance: float = 0.10) -> dict:
    """Is the consumer's RSS flat over the last half of the run (within ±tolerance of
    the last half's median)?"""
    if len(samples) < 4:
        return {"samples": len(samples), "flat": None}
    start, end = samples[0][0], samples[-1][0]
    last_half = [rss for t, _, rss in samples if t >= (start + end) / 2]
    mid = median(last_half)
    low, high = min(last_half), max(last_half)
    mib = 2**20
    return {
        "samples": len(samples), "every_s": round((end - start) / (len(samples) - 1), 2),
        "first_mib": round(samples[0][2] / mib, 1), "peak_mib": round(max(
            r for *_, r in samples) / mib, 1), "last_mib": round(samples[-1][2] / mib, 1),
        "last_half_median_mib": round(mid / mib, 1), "last_half_min_mib": round(low / mib, 1),
        "last_half_max_mib": round(high / mib, 1),
        "last_half_spread_pct": round(max(high / mid - 1, 1 - low / mid) * 100, 2),
        "last_half_change_pct": round((last_half[-1] / last_half[0] - 1) * 100, 2),
        "flat": high <= mid * (1 + tolerance) and low >= mid * (1 - tolerance),
        "series_mib": [[round(t - start, 1), n, round(r / mib, 1)]
                       for t, n, r in samples[::max(1, len(samples) // 200)]],
    }
