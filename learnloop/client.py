"""A Python client for products: publish events, read scores, top items and explanations.

Events are validated with the interactions consumer's own decoder before anything is
sent, so an event the client accepts is one the consumer applies (not a dead letter).
Reads go to the served champion's scores unless a model is named. Kafka and Redis are
reached on first use: an invalid event raises before any connection is made.

>>> client = Client(kafka_bootstrap="127.0.0.1:9", redis_url="redis://127.0.0.1:9/0")
>>> client.publish({"event_id": "e1", "ts": 1767225600, "user_id": "u1", "type": "teleport"})
Traceback (most recent call last):
...
learnloop.errors.InvalidEvent: unknown_type: type 'teleport' is not one of the event types
>>> client.publish({"event_id": "e2", "ts": 1767225600, "type": "click"})
Traceback (most recent call last):
...
learnloop.errors.InvalidEvent: invalid_event: user_id: Field required
>>> client.close()

Against a running learnloop (``learnloop up`` prints the two addresses)::

    >>> with Client() as client:  # doctest: +SKIP
    ...     client.publish({"event_id": "imp-1", "ts": "2026-11-22T10:00:00Z",
    ...                     "user_id": "u1", "item_id": "i9", "type": "impression"})
    ...     client.flush()
    ...     client.top("u1", k=3)
    [('i9', 0.05)]
"""

from __future__ import annotations

import time

import orjson

from learnloop.connect import redis_client
from learnloop.errors import ConfigError, InvalidEvent
from learnloop.events import Event, EventDecoder, Rejection
from learnloop.explain import Explanation
from learnloop.publish import Publisher, encode
from learnloop.reader import ScoreReader
from learnloop.scoring import Score
from learnloop.settings import Settings, load_settings


class Client:
    """Publishes events and reads what learnloop made of them.

    ``settings`` default to the ``LEARNLOOP_*`` environment; ``kafka_bootstrap`` and
    ``redis_url`` override its addresses.
    """

    def __init__(self, settings: Settings | None = None, *, kafka_bootstrap: str | None = None,
                 redis_url: str | None = None) -> None:
        overrides = {k: v for k, v in {"kafka_bootstrap": kafka_bootstrap,
                                       "redis_url": redis_url}.items() if v is not None}
        if settings is None:
            settings = load_settings(**overrides)
        elif overrides:
            settings = load_settings(**{**settings.model_dump(), **overrides})
        self.settings = settings
        self.decoder = EventDecoder.from_settings(settings)
        self._publisher: Publisher | None = None
        self._reader: ScoreReader | None = None

    def validate(self, event: dict | Event) -> Event:
        """``event`` as the consumer would decode it, or :class:`InvalidEvent` saying why."""
        try:
            raw = encode(event) if isinstance(event, Event) else orjson.dumps(event)
        except TypeError as exc:  # a value JSON cannot hold
            raise InvalidEvent("invalid_json", str(exc)) from None
        decoded = self.decoder.decode(raw, now=time.time())
        if isinstance(decoded, Rejection):
            raise InvalidEvent(decoded.reason, decoded.detail)
        return decoded

    def publish(self, event: dict | Event) -> None:
        """Validate ``event`` and queue it, keyed by ``user_id`` (:meth:`flush` waits)."""
        valid = self.validate(event)
        self._producer().publish(valid)

    def flush(self) -> None:
        """Wait until every queued event is acknowledged by the broker."""
        if self._publisher is not None:
            self._publisher.flush()

    def score(self, user: str, item: str | None = None, model: str | None = None) -> Score | None:
        """The latest score of ``user`` for ``item`` (by the served champion), or None."""
        return self._scores().score(user, item, model)

    def top(self, user: str, k: int = 10, model: str | None = None) -> list[tuple[str, float]]:
        """``user``'s ``k`` best-scored items as ``(item, score)``, best first."""
        return self._scores().top(user, k, model)

    def explain(self, user: str, item: str | None = None,
                model: str | None = None) -> Explanation | None:
        """Why ``user`` got its latest score for ``item``: top contributions with input
        values and feature ages; None without a score."""
        return self._scores().explain(user, item, model)

    def close(self) -> None:
        """Flush queued events and close the connections."""
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._reader is not None:
            self._reader.client.close()
            self._reader = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _producer(self) -> Publisher:
        if self._publisher is None:
            if self.settings.kafka_bootstrap is None:
                raise ConfigError("LEARNLOOP_KAFKA_BOOTSTRAP is not set (see `learnloop up`)")
            self._publisher = Publisher(self.settings)
        return self._publisher

    def _scores(self) -> ScoreReader:
        if self._reader is None:
            self._reader = ScoreReader(redis_client(self.settings), self.settings)
        return self._reader

