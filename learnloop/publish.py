"""Publishing events: validate JSON lines before they reach Kafka, keyed by user id."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from kafka import KafkaProducer

from learnloop.connect import kafka_security
from learnloop.events import Event, EventDecoder, Rejection
from learnloop.partitioner import KeyHashPartitioner
from learnloop.settings import Settings


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line that is not a valid event, with its 1-based line number."""

    line: int
    reason: str
    detail: str


def validate_lines(
    lines: Iterable[bytes], decoder: EventDecoder
) -> Iterator[tuple[int, Event | BadLine]]:
    """Each non-blank line as an :class:`Event`, or as a :class:`BadLine` saying why not."""
    for number, raw in enumerate(lines, start=1):
        raw = raw.strip()
        if not raw:
            continue
        decoded = decoder.decode(raw)
        if isinstance(decoded, Rejection):
            yield number, BadLine(number, decoded.reason, decoded.detail)
        else:
            yield number, decoded


def encode(event: Event) -> bytes:
    """The wire form of an event (one JSON object, ``ts`` in epoch seconds)."""
    return event.model_dump_json(exclude_none=True).encode()


class Publisher:
    """A small producer for products: ``publish(event)``; messages keyed by ``user_id``."""

    def __init__(self, settings: Settings, **producer_options: object) -> None:
        self.topic = settings.topic_interactions
        self.producer = KafkaProducer(
            bootstrap_servers=settings.kafka_bootstrap, acks="all", linger_ms=5,
            partitioner=KeyHashPartitioner(), client_id="learnloop-publisher",
            **kafka_security(settings), **producer_options,
        )

    def publish(self, event: Event) -> None:
        """Queue one validated event (call :meth:`flush` to wait for delivery)."""
        self.producer.send(self.topic, key=event.user_id.encode(), value=encode(event))

    def flush(self) -> None:
        self.producer.flush()

    def close(self) -> None:
        self.producer.flush()
        self.producer.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
