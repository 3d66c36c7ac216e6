"""Reading scores back from Redis — the same keys ``redis-cli`` sees."""

from __future__ import annotations

import orjson
import redis

from learnloop.scoring import score_key, top_key


def metrics_key(model: str) -> str:
    """Redis hash of a model's progressive metrics, written by the learner."""
    return f"model:metrics:{model}"


def read_score(client: redis.Redis, model: str, user: str, item: str | None) -> dict | None:
    """The stored score hash of ``user`` (for ``item``), decoded, or None."""
    raw = client.hgetall(score_key(model, user, item))
    if not raw:
        return None
    fields = {k.decode(): v.decode() for k, v in raw.items()}
    for name in ("score", "ts", "scored_at"):
        fields[name] = float(fields[name])
    fields["explain"] = orjson.loads(fields["explain"])
    return fields


def read_top(client: redis.Redis, model: str, user: str, k: int = 10) -> list[tuple[str, float]]:
    """The ``k`` best-scored items of ``user`` by ``model``, best first."""
    rows = client.zrevrange(top_key(model, user), 0, k - 1, withscores=True)
    return [(item.decode(), score) for item, score in rows]


def read_model_metrics(client: redis.Redis, model: str) -> dict[str, float]:
    """The learner's latest progressive metrics of ``model`` (empty before any example)."""
    raw = client.hgetall(metrics_key(model))
    return {k.decode(): float(v) for k, v in raw.items()}
