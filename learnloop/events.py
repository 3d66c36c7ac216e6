"""Interaction events: the pydantic model, and decoding raw Kafka bytes into it.

Decoding happens here, in application code, so one bad message becomes a
:class:`Rejection` (bound for the dead-letter topic) instead of wedging a partition.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

if TYPE_CHECKING:
    from learnloop.settings import Settings

#: Ids become parts of Redis keys: no whitespace, no ':' (the key separator), no control
#: characters (C0, DEL, C1) — they would corrupt keys, logs and terminals.
Identifier = Annotated[str, Field(min_length=1, max_length=128,
                                  pattern=r"^[^\s:\x00-\x1f\x7f-\x9f]+$")]
ContextValue = Annotated[str, Field(max_length=256)] | bool | int | float

#: Epoch values above this are almost certainly milliseconds, not seconds (year 5138).
_MAX_EPOCH_SECONDS = 1e11
#: Largest ``value`` magnitude: decayed sums of it are kept in Redis and must stay finite.
MAX_VALUE = 1e15


def _checked_epoch(value: float) -> float:
    if not math.isfinite(value) or value < 0:
        raise ValueError("ts must be finite and not before 1970")
    if value > _MAX_EPOCH_SECONDS:
        raise ValueError("ts looks like milliseconds; send epoch seconds")
    return float(value)


class Event(BaseModel):
    """One user interaction, as a product publishes it (one JSON object per message)."""

    # strict: a JSON string or boolean is not a number ("4.5" and true are refused)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    event_id: Identifier = Field(description="Unique id; a repeated id is dropped as duplicate.")
    ts: float = Field(description="Event time: RFC 3339 string or epoch seconds.")
    user_id: Identifier
    type: Annotated[str, Field(min_length=1, max_length=64)] = Field(
        description="Event type, e.g. impression, click, purchase (see settings.event_types)."
    )
    item_id: Identifier | None = None
    value: float | None = Field(None, description="Rating, revenue, … (finite, |value| ≤ 1e15).")
    exposure_id: Identifier | None = Field(
        None, description="On feedback: the event_id of the exposure it answers."
    )
    context: dict[Annotated[str, Field(max_length=64)], ContextValue] = Field(
        default_factory=dict, description="Flat map of small scalars (device, position, …)."
    )

    @field_validator("ts", mode="before")
    @classmethod
    def _event_time(cls, value: object) -> float:
        if isinstance(value, bool):
            raise ValueError("ts must be an RFC 3339 string or epoch seconds")
        if isinstance(value, str):
            try:
                parsed = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError("ts is not an RFC 3339 timestamp") from None
            if parsed.tzinfo is None:
                raise ValueError("ts needs a timezone offset (e.g. 'Z' or '+00:00')")
            return _checked_epoch(parsed.timestamp())
        if isinstance(value, int | float):
            return _checked_epoch(value)
        raise ValueError("ts must be an RFC 3339 string or epoch seconds")

    @field_validator("value")
    @classmethod
    def _finite_value(cls, value: float | None) -> float | None:
        if value is not None and not abs(value) <= MAX_VALUE:  # NaN fails this too
            raise ValueError(f"value must be finite and at most {MAX_VALUE:g} in magnitude")
        return value

    @field_validator("context")
    @classmethod
    def _finite_context(cls, context: dict) -> dict:
        for key, value in context.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"context[{key!r}] must be finite")
        return context


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a raw message is not a usable event: a reason code and a readable detail."""

    reason: str
    detail: str


class EventDecoder:
    """Turns raw message bytes into an :class:`Event` or a :class:`Rejection`."""

    REASONS = (
        "too_large",
        "not_utf8",
        "invalid_json",
        "not_an_object",
        "invalid_event",
        "unknown_type",
        "too_many_context_keys",
        "clock_skew",
    )

    def __init__(
        self,
        event_types: tuple[str, ...],
        max_bytes: int,
        max_context_keys: int,
        max_clock_skew_s: float | None = None,
    ) -> None:
        self.event_types = frozenset(event_types)
        self.max_bytes = max_bytes
        self.max_context_keys = max_context_keys
        self.max_clock_skew_s = max_clock_skew_s

    @classmethod
    def from_settings(cls, settings: Settings) -> EventDecoder:
        """The decoder the interactions consumer uses: event types, limits, clock skew."""
        return cls(settings.event_types, settings.max_event_bytes, settings.max_context_keys,
                   settings.max_clock_skew_s)

    def decode(self, raw: bytes | None, now: float | None = None) -> Event | Rejection:
        """Decode one message value; ``now`` enables the clock-skew check."""
        if raw is None:
            return Rejection("invalid_json", "message has no value (tombstone)")
        if len(raw) > self.max_bytes:
            return Rejection("too_large", f"{len(raw)} bytes > limit {self.max_bytes}")
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return Rejection("not_utf8", "message is not valid UTF-8")
            return Rejection("invalid_json", str(exc))
        if not isinstance(obj, dict):
            return Rejection("not_an_object", f"expected a JSON object, got {type(obj).__name__}")
        context = obj.get("context")
        if isinstance(context, dict) and len(context) > self.max_context_keys:
            return Rejection(
                "too_many_context_keys", f"{len(context)} keys > limit {self.max_context_keys}"
            )
        try:
            event = Event.model_validate(obj)
        except ValidationError as exc:
            return Rejection("invalid_event", _summarize(exc))
        if event.type not in self.event_types:
            return Rejection("unknown_type", f"type {event.type!r} is not one of the event types")
        if now is not None and self.max_clock_skew_s is not None:
            if event.ts > now + self.max_clock_skew_s:
                return Rejection("clock_skew", f"ts is {event.ts - now:.0f}s in the future")
        return event


def _summarize(exc: ValidationError) -> str:
    """One line per field error, without echoing the (possibly huge) input."""
    parts = []
    for error in exc.errors(include_url=False, include_input=False)[:5]:
        where = ".".join(str(p) for p in error["loc"]) or "event"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def event_json_schema() -> dict:
    """The JSON Schema product teams can validate against on their side."""
    return Event.model_json_schema()
