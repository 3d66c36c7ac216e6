"""Scores: what the champion said about an exposure, written to Redis and the scores topic.

Redis layout (plain commands are the read API):

- ``score:{model}:{user}:{item}`` (``score:{model}:{user}`` without item) — hash with
  ``score``, ``model``, ``version``, ``ts`` (event time), ``event_id``, ``scored_at``,
  ``source`` (topic/partition/offset) and ``explain`` (JSON list of the top contributions
  as ``[feature, contribution, value]``: the model input's name, its signed contribution
  — see :meth:`models.base.OnlineModel.explain_one` — and its value in the model input).
- ``top:{model}:{user}`` — sorted set item → score, the ``top_k`` highest kept.
- ``wm:scores:{topic}:{partition}`` — last offset whose scores are written.

The ``scores`` topic is at-least-once: after a crash a score may be published twice.
Each message carries its source ``topic/partition/offset``; readers de-duplicate on it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources

import orjson
import redis

from learnloop.events import Event
from learnloop.features import scored_watermark_key
from learnloop.settings import Settings
from models.base import Features, OnlineModel

_SCRIPT = resources.files("learnloop").joinpath("write_scores.lua").read_text()


def score_key(model: str, user: str, item: str | None) -> str:
    """Redis key of the latest score of ``user`` (for ``item``) by ``model``."""
    return f"score:{model}:{user}:{item}" if item else f"score:{model}:{user}"


def top_key(model: str, user: str) -> str:
    """Redis key of the sorted set of ``user``'s best-scored items by ``model``."""
    return f"top:{model}:{user}"


@dataclass(frozen=True, slots=True)
class Score:
    """One served score, with where it came from and why."""

    model: str
    version: str
    user_id: str
    item_id: str | None
    score: float
    event_id: str
    ts: float
    source: str
    explain: list[tuple[str, float, float | None]]  # feature, contribution, input value
    scored_at: float


class Scorer:
    """Scores exposures with one model."""

    def __init__(self, model: OnlineModel, version: str) -> None:
        self.model = model
        self.version = version

    def score(self, event: Event, x: Features, source: str) -> Score:
        """Score one exposure from its model input ``x``."""
        value = float(self.model.predict_one(x))
        explain = [(name, round(c, 6), _rounded(x.get(name)))
                   for name, c in self.model.explain_one(x)]
        return Score(
            self.model.name, self.version, event.user_id, event.item_id, value,
            event.event_id, event.ts, source, explain, time.time(),
        )


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


class ScoreWriter:
    """Writes a partition's batch of scores and its scored watermark in one Lua call."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.ttl = settings.score_ttl_s
        self.top_k = settings.top_k
        self.pending = [f"pend:{name}:" for name in settings.objectives]
        self.script = client.register_script(_SCRIPT)

    def queue(self, client, topic: str, partition: int, scores: list[tuple[int, Score]],
              last_offset: int) -> None:
        """Queue on ``client`` (a pipeline) the Lua call that stores ``scores`` (each with
        its source offset) and marks ``last_offset`` of the partition as scored; scores
        at or below the scored watermark are not written. The script is called by its
        SHA (no SCRIPT EXISTS per pipeline): the caller loads :attr:`script` first, and
        again when Redis answers NOSCRIPT."""
        payload = [self.ttl, self.top_k, last_offset, self.pending,
                   [self._wire(offset, score) for offset, score in scores]]
        client.evalsha(self.script.sha, 1, scored_watermark_key(topic, partition),
                       orjson.dumps(payload))

    @staticmethod
    def _wire(offset: int, score: Score) -> list:
        """One score as the script reads it (see write_scores.lua): an array."""
        return [
            offset, score_key(score.model, score.user_id, score.item_id),
            top_key(score.model, score.user_id) if score.item_id else "", score.item_id or "",
            repr(score.score), score.model, score.version, repr(score.ts), score.event_id,
            score.source, repr(score.scored_at), orjson.dumps(score.explain).decode(),
        ]


def score_message(score: Score) -> bytes:
    """The JSON published to the scores topic for ``score``."""
    return orjson.dumps(score)  # orjson serialises dataclasses itself, ~10x faster than asdict
