"""Dead letters: a rejected message, its reason, its origin and its original bytes.

Each dead letter is one JSON object on the dead-letter topic, keyed like the original:

    {"reason": "invalid_json", "detail": "...", "consumer": "interactions",
     "origin": {"topic": "interactions", "partition": 3, "offset": 1207, "timestamp_ms": ...},
     "key_b64": "...", "value_b64": "..."}
"""

from __future__ import annotations

import base64

import orjson

from learnloop.events import Rejection


def dead_letter(record, rejection: Rejection, consumer: str) -> bytes:
    """Encode a kafka-python ``ConsumerRecord`` and why it was rejected."""

    def b64(raw: bytes | None) -> str | None:
        return None if raw is None else base64.b64encode(raw).decode("ascii")

    return orjson.dumps({
        "reason": rejection.reason,
        "detail": rejection.detail[:1000],
        "consumer": consumer,
        "origin": {
            "topic": record.topic, "partition": record.partition,
            "offset": record.offset, "timestamp_ms": record.timestamp,
        },
        "key_b64": b64(record.key),
        "value_b64": b64(record.value),
    })


def original_value(letter: dict) -> bytes | None:
    """The original message bytes carried by a decoded dead letter."""
    raw = letter.get("value_b64")
    return None if raw is None else base64.b64decode(raw)
