"""EventDecoder and Event, no servers: what is accepted, and the exact reason for what is not."""

from __future__ import annotations

import math

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from learnloop.events import Event, EventDecoder, Rejection
from learnloop.settings import DEFAULT_EVENT_TYPES

NOW = 1_767_225_600.0  # 2026-01-01T00:00:00Z
MAX_BYTES, MAX_CONTEXT, SKEW = 1024, 4, 300
decoder = EventDecoder(DEFAULT_EVENT_TYPES, MAX_BYTES, MAX_CONTEXT, SKEW)


def body(**changes: object) -> dict:
    """A valid event as a dict; ``changes`` override fields, a value of ``...`` drops one."""
    base = {"event_id": "e1", "ts": NOW, "user_id": "u1", "item_id": "i1", "type": "click"}
    base.update(changes)
    return {k: v for k, v in base.items() if v is not ...}


def decode(raw: bytes | dict | None) -> Event | Rejection:
    return decoder.decode(orjson.dumps(raw) if isinstance(raw, dict) else raw, NOW)


def reason(raw: bytes | dict | None) -> str:
    result = decode(raw)
    assert isinstance(result, Rejection), f"expected a rejection, got {result!r}"
    assert result.reason in EventDecoder.REASONS and result.detail
    return result.reason


@pytest.mark.parametrize("ts", [
    NOW, int(NOW), "2026-01-01T00:00:00Z", "2026-01-01T00:00:00+00:00",
    "2026-01-01T01:00:00+01:00", "2025-12-31T19:00:00.000-05:00",
])
def test_rfc3339_and_epoch_ts_give_the_same_float(ts):
    event = decode(body(ts=ts))
    assert isinstance(event, Event)
    assert event.ts == NOW and type(event.ts) is float


def test_valid_event_keeps_every_field():
    event = decode(body(type="rating", value=4.5, exposure_id="x1",
                        context={"device": "ios", "pos": 3, "ad": True, "w": 0.5}))
    assert isinstance(event, Event)
    assert (event.event_id, event.user_id, event.item_id) == ("e1", "u1", "i1")
    assert event.type == "rating"
    assert event.value == 4.5 and event.exposure_id == "x1"
    assert event.context == {"device": "ios", "pos": 3, "ad": True, "w": 0.5}


def test_fractional_rfc3339_matches_fractional_epoch():
    assert decode(body(ts="2026-01-01T00:00:00.25Z")).ts == decode(body(ts=NOW + 0.25)).ts


@pytest.mark.parametrize("raw, expected", [
    (b'{"pad": "' + b"x" * MAX_BYTES + b'"}', "too_large"),
    (b'{"event_id": "\xff\xfe"}', "not_utf8"),
    (b"\xc3\x28 not json", "not_utf8"),
    (b'{"event_id": "e1",', "invalid_json"),
    (b"", "invalid_json"),
    (None, "invalid_json"),  # a tombstone
    (b'[{"event_id": "e1"}]', "not_an_object"),
    (b'"e1"', "not_an_object"),
    (b"42", "not_an_object"),
    (orjson.dumps(body(user_id=...)), "invalid_event"),       # missing field
    (orjson.dumps(body(ts=...)), "invalid_event"),            # missing ts
    (orjson.dumps(body(user_id=17)), "invalid_event"),        # wrong type
    (orjson.dumps(body(value="lots")), "invalid_event"),      # wrong type
    (orjson.dumps(body(value="4.5")), "invalid_event"),       # strict: no number in a string
    (orjson.dumps(body(value=True)), "invalid_event"),        # strict: a bool is not a number
    (orjson.dumps(body(value=1.5e15)), "invalid_event"),      # its decayed sums must stay finite
    (orjson.dumps(body(user_id="u\x00")), "invalid_event"),   # control characters in an id
    (orjson.dumps(body(event_id="e\x1b[2J")), "invalid_event"),
    (orjson.dumps(body(item_id="i\x85")), "invalid_event"),   # C1 control (NEL)
    (orjson.dumps(body(ts=True)), "invalid_event"),           # bool is not a time
    (orjson.dumps(body(user_id="has space")), "invalid_event"),
    (orjson.dumps(body(item_id="a:b")), "invalid_event"),     # ':' would break key layout
    (orjson.dumps(body(type="teleport")), "unknown_type"),
    (orjson.dumps(body(context={f"k{n}": n for n in range(MAX_CONTEXT + 1)})),
     "too_many_context_keys"),
    (orjson.dumps(body(ts=NOW + SKEW + 60)), "clock_skew"),
    (orjson.dumps(body(ts="2026-01-01T00:06:00Z")), "clock_skew"),
    (b'{"event_id":"e1","ts":1767225600,"user_id":"u1","type":"rating","value":NaN}',
     "invalid_json"),  # JSON has no NaN; orjson refuses it (and 1e999) while parsing
    (orjson.dumps(body(value=1e308))[:-1] + b',"context":{"w":1e999}}', "invalid_json"),
    (orjson.dumps(body(ts=NOW * 1000)), "invalid_event"),     # milliseconds
    (orjson.dumps(body(ts=-1)), "invalid_event"),
    (orjson.dumps(body(ts="2026-01-01T00:00:00")), "invalid_event"),  # naive
    (orjson.dumps(body(ts="yesterday")), "invalid_event"),
    (orjson.dumps(body(source="web")), "invalid_event"),      # unknown extra field
    (orjson.dumps(body(context={"nested": {"a": 1}})), "invalid_event"),
])
def test_rejection_reason(raw, expected):
    assert reason(raw) == expected


def test_skew_within_limit_is_accepted_and_skew_needs_now():
    assert isinstance(decode(body(ts=NOW + SKEW - 1)), Event)
    far_future = orjson.dumps(body(ts=NOW + 10 * SKEW))
    assert isinstance(decoder.decode(far_future), Event)  # no ``now``: no skew check


@pytest.mark.parametrize("changes", [
    {"value": -1e15}, {"value": 7}, {"user_id": "{u}|x.y*"}, {"item_id": "élément-用户-😀"},
    {"context": {"a.b|c{d}": 1e300, "": "x"}},
])
def test_odd_but_valid_fields_are_accepted(changes):
    assert isinstance(decode(body(**changes)), Event)


def test_context_key_limit_is_inclusive():
    assert isinstance(decode(body(context={f"k{n}": n for n in range(MAX_CONTEXT)})), Event)


def test_size_limit_is_inclusive():
    raw = orjson.dumps(body())
    raw += b" " * (MAX_BYTES - len(raw))  # JSON whitespace: still a valid event
    assert len(raw) == MAX_BYTES and isinstance(decode(raw), Event)
    assert reason(raw + b" ") == "too_large"


@pytest.mark.parametrize("field, bad", [("value", math.nan), ("value", math.inf),
                                        ("context", {"w": -math.inf}), ("ts", math.nan)])
def test_event_model_rejects_non_finite_numbers(field, bad):
    """NaN/inf cannot arrive through orjson, but the model refuses them on its own too."""
    with pytest.raises(ValidationError):
        Event.model_validate(body(**{field: bad}))


def test_event_is_frozen():
    event = decode(body())
    with pytest.raises(ValidationError):
        event.user_id = "someone-else"


def test_pre_epoch_rfc3339_is_rejected_like_negative_epoch_seconds():
    """The same instant must get the same verdict whichever way ``ts`` is written."""
    assert reason(body(ts=-1)) == "invalid_event"
    assert reason(body(ts="1969-12-31T23:59:59Z")) == "invalid_event"


json_scalars = (st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
                | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20))
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
event_like = st.fixed_dictionaries({}, optional={
    "event_id": st.sampled_from(["e1", "", "a b", 7]) | json_values,
    "ts": st.sampled_from([NOW, "2026-01-01T00:00:00Z", "0001-01-01T00:00:00+14:00",
                           "9999-12-31T23:59:59-14:00", 1e300, -0.0]) | json_values,
    "user_id": st.sampled_from(["u1", "x" * 129]) | json_values,
    "type": st.sampled_from(DEFAULT_EVENT_TYPES) | json_values,
    "item_id": json_values, "value": json_values, "exposure_id": json_values,
    "context": st.dictionaries(st.text(max_size=70), json_values, max_size=6) | json_values,
})


def _total(raw: bytes | None) -> None:
    result = decoder.decode(raw, NOW)
    assert isinstance(result, Event | Rejection)
    if isinstance(result, Rejection):
        assert result.reason in EventDecoder.REASONS


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2 * MAX_BYTES) | st.none())
def test_decode_never_raises_on_arbitrary_bytes(raw):
    _total(raw)


@settings(max_examples=300, deadline=None)
@given(event_like | json_values)
def test_decode_never_raises_on_arbitrary_json(obj):
    _total(orjson.dumps(obj))
