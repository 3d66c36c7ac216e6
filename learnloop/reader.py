"""Reading scores back from Redis — the same keys ``redis-cli`` sees.

:class:`ScoreReader` is what ``learnloop score``, ``top`` and ``explain`` and the Python
client (:mod:`learnloop.client`) share: the served champion's scores unless a model is named.
"""

from __future__ import annotations

import time

import orjson
import redis

from learnloop.explain import Explanation, explain_score
from learnloop.features import FeatureStore
from learnloop.scoring import Score, score_key, top_key
from learnloop.serving import current_champion
from learnloop.settings import Settings


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


class ScoreReader:
    """Scores, top items and explanations of one Redis; the served champion by default."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.settings = settings

    def model(self, model: str | None = None) -> str:
        """``model``, else the model served now (the last promotion, else the settings')."""
        return model or current_champion(self.client, self.settings)

    def score(self, user: str, item: str | None = None, model: str | None = None) -> Score | None:
        """The latest score of ``user`` (for ``item``), or None."""
        fields = read_score(self.client, self.model(model), user, item)
        if fields is None:
            return None
        return Score(
            fields["model"], fields["version"], user, item, fields["score"], fields["event_id"],
            fields["ts"], fields["source"], [tuple(part) for part in fields["explain"]],
            fields["scored_at"],
        )

    def top(self, user: str, k: int = 10, model: str | None = None) -> list[tuple[str, float]]:
        """The ``k`` best-scored items of ``user``, best first."""
        return read_top(self.client, self.model(model), user, k)

    def explain(self, user: str, item: str | None = None, model: str | None = None,
                at: float | None = None) -> Explanation | None:
        """Why ``user`` (and ``item``) got its latest score, feature ages measured at ``at``
        (now by default); None without a score."""
        score = self.score(user, item, model)
        if score is None:
            return None
        features = FeatureStore(self.client, self.settings).read(user, item)
        return explain_score(score, features, time.time() if at is None else at)
