"""Hostile and broken interaction messages: generators by category, and a hand-picked corpus.

Each category turns a valid event body into bad bytes and names the dead-letter reason
they must get, drawing every choice from a ``random.Random`` — a seeded one to build
10,000 messages for the end-to-end test, or hypothesis' ``st.randoms()`` for the
property tests (which then also shrink the choices). Reasons that depend on a size
(``too_large``) are worked out from the byte count and the limits, never from the decoder.

:data:`CORPUS` holds messages picked by hand; a reason of ``None`` means the message is
odd but valid, and must be applied.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson

from learnloop.events import MAX_VALUE, EventDecoder
from learnloop.settings import DEFAULT_EVENT_TYPES

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z, before the wall clock
ID_FIELDS = ("event_id", "user_id", "item_id", "exposure_id")
REQUIRED = ("event_id", "ts", "user_id", "type")
_SLOT = "@@slot@@"  # a string to splice a raw JSON token in place of


@dataclass(frozen=True)
class Limits:
    """What the decoder under test enforces."""

    max_bytes: int = 4096
    max_context_keys: int = 32
    max_clock_skew_s: int = 300
    event_types: tuple[str, ...] = DEFAULT_EVENT_TYPES

    def decoder(self) -> EventDecoder:
        return EventDecoder(self.event_types, self.max_bytes, self.max_context_keys,
                            self.max_clock_skew_s)


LIMITS = Limits()
Mutation = Callable[[random.Random, dict, Limits, float], tuple[bytes | None, str]]


# -- helpers ----------------------------------------------------------------------------------

def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def epoch(ts: float | str) -> float:
    """Epoch seconds of a valid ``ts`` as products write it (a number or RFC 3339)."""
    return datetime.fromisoformat(ts).timestamp() if isinstance(ts, str) else float(ts)


def random_body(rng: random.Random, n: int, limits: Limits = LIMITS) -> dict:
    """A valid event with a random mix of optional fields (ts within a day of T0)."""
    ts = T0 + round(rng.uniform(0, 86_400), 3)
    body = {"event_id": f"h{n}", "ts": rfc3339(ts) if rng.random() < 0.2 else ts,
            "user_id": f"u{rng.randrange(100)}", "type": rng.choice(limits.event_types)}
    if rng.random() < 0.7:
        body["item_id"] = f"i{rng.randrange(50)}"
    if rng.random() < 0.3:
        body["value"] = round(rng.uniform(-1000, 1000), 3)
    if rng.random() < 0.2:
        body["exposure_id"] = f"x{rng.randrange(1000)}"
    scalars = (rng.randrange(10), rng.random(), rng.random() < 0.5, "ios", "café ✓")
    body["context"] = {f"k{j}": rng.choice(scalars)
                       for j in range(rng.randint(0, min(3, limits.max_context_keys)))}
    return body


def dumps(obj: object) -> bytes:
    return orjson.dumps(obj)


def splice(body: dict, field: str, token: bytes) -> bytes:
    """``body`` as JSON with the raw ``token`` as the value of ``field`` (``context.k`` for a
    context value): how to write what orjson will not (NaN, 1e999)."""
    changed = dict(body)
    if field.startswith("context."):
        changed["context"] = {**body.get("context", {}), field[8:]: _SLOT}
    else:
        changed[field] = _SLOT
    return dumps(changed).replace(f'"{_SLOT}"'.encode(), token, 1)


def sized(raw: bytes, limits: Limits, reason: str) -> tuple[bytes, str]:
    """``reason``, unless the message is over the size limit (checked first)."""
    return raw, "too_large" if len(raw) > limits.max_bytes else reason


def utf8_or(raw: bytes, reason: str) -> str:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not_utf8"
    return reason


def letters(rng: random.Random, size: int) -> str:
    """``size`` random letters and digits (from a child generator: one draw from ``rng``,
    however long the string — hypothesis' randoms record every draw)."""
    bulk = random.Random(rng.getrandbits(32))
    return "".join(bulk.choices(string.ascii_letters + string.digits, k=size))


# -- categories -------------------------------------------------------------------------------

def truncated(rng, body, limits, now):
    raw = dumps(body)
    cut = raw[:rng.randrange(len(raw))]  # a proper prefix of an object is never JSON
    return cut, utf8_or(cut, "invalid_json")


_SYNTAX = (
    lambda raw: raw.replace(b'"', b"'"),                # single quotes
    lambda raw: raw[:-1] + b",}",                       # trailing comma
    lambda raw: raw + raw,                              # two documents
    lambda raw: raw + b" x",                            # trailing garbage
    lambda raw: b"\xef\xbb\xbf" + raw,                  # UTF-8 byte order mark
    lambda raw: raw.replace(b'"event_id"', b"event_id", 1),  # unquoted key
    lambda raw: b"/* c */" + raw,                       # comment
    lambda raw: raw.replace(b'"user_id":"', b'"user_id":"\x00', 1),  # raw NUL in a string
    lambda raw: raw.replace(b'"user_id":"', b'"user_id":"\n', 1),    # raw newline in a string
    lambda raw: raw.replace(b'"user_id":"', b'"user_id":"\\x41', 1),  # invalid escape
    lambda raw: raw.replace(b'"user_id":"', b'"user_id":"\\ud800', 1),  # lone surrogate
    lambda raw: raw[:-1],                               # unclosed object
)


def broken_syntax(rng, body, limits, now):
    return sized(rng.choice(_SYNTAX)(dumps(body)), limits, "invalid_json")


_NOT_UTF8 = (b"\x80", b"\xbf", b"\xc0\xaf", b"\xc1\xbf", b"\xe0\x80\xaf", b"\xed\xa0\x80",
             b"\xed\xbf\xbf", b"\xf4\x90\x80\x80", b"\xf5\x80\x80\x80", b"\xfe", b"\xff",
             b"\xe2\x82", b"\xf0\x9f\x98")


def not_utf8(rng, body, limits, now):
    raw = dumps(body)
    if rng.random() < 0.1:
        return sized(raw.decode().encode(rng.choice(["utf-16", "utf-32"])), limits, "not_utf8")
    ascii_at = [k for k in range(1, len(raw)) if raw[k - 1] < 0x80 and raw[k] < 0x80]
    at = rng.choice(ascii_at)
    return sized(raw[:at] + rng.choice(_NOT_UTF8) + raw[at:], limits, "not_utf8")


def deep_nesting(rng, body, limits, now):
    """Deeper than orjson's 1024 levels: refused while parsing, never by recursion."""
    depth = rng.randint(1025, 3 * limits.max_bytes // 2)
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    nest = opener * depth + b"1" + closer * depth
    raw = nest if rng.random() < 0.3 else splice(body, rng.choice(["context.k", "extra"]), nest)
    return sized(raw, limits, "invalid_json")


def nested_values(rng, body, limits, now):
    """Structures where scalars belong (a context value, an id, ts, value) or a new field."""
    depth = rng.randint(1, 50)
    nest: object = rng.choice([1, "x", None])
    for _ in range(depth):
        nest = [nest] if rng.random() < 0.5 else {"a": nest}
    field = rng.choice(["context.k", "user_id", "ts", "value", "item_id", "extra"])
    return sized(splice(body, field, dumps(nest)), limits, "invalid_event")


_STRING_LIMITS = {"event_id": 128, "user_id": 128, "item_id": 128, "exposure_id": 128,
                  "type": 64, "context key": 64, "context value": 256}


def huge_string(rng, body, limits, now):
    field = rng.choice(sorted(_STRING_LIMITS))
    size = _STRING_LIMITS[field] + 1
    if rng.random() < 0.5:
        size = rng.randint(size, 4 * limits.max_bytes)
    text = letters(rng, size)
    changed = dict(body)
    if field == "context key":
        changed["context"] = {**body.get("context", {}), text: 1}
    elif field == "context value":
        changed["context"] = {**body.get("context", {}), "k": text}
    else:
        changed[field] = text
    return sized(dumps(changed), limits, "invalid_event")


def too_many_context_keys(rng, body, limits, now):
    count = rng.randint(limits.max_context_keys + 1, limits.max_context_keys + 300)
    context = {f"c{j}": j for j in range(count)}
    return sized(dumps({**body, "context": context}), limits, "too_many_context_keys")


_WRONG = {
    "event_id": [17, 1.5, True, None, ["e1"], {"id": "e1"}],
    "user_id": [17, -0.0, False, None, ["u1"], {"id": "u1"}],
    "type": [1, True, None, ["click"], {"t": "click"}],
    "item_id": [17, True, ["i1"], {}],
    "exposure_id": [17, False, ["x"], {}],
    "ts": [True, None, [T0], {"s": T0}, "1767225600", "yesterday", "", "NaN",
           "2026-13-01T00:00:00Z", "2026-01-01T25:00:00Z", "2026-01-01T00:00:00+25:00"],
    "value": ["4.5", True, False, [1.0], {"v": 1}, "Infinity"],
    "context": [[], ["a", 1], "device=ios", 3, True, None],
    "context.k": [None, [], {}],
}


def wrong_type(rng, body, limits, now):
    field = rng.choice(sorted(_WRONG))
    return sized(splice(body, field, dumps(rng.choice(_WRONG[field]))), limits, "invalid_event")


def missing_field(rng, body, limits, now):
    gone = rng.choice(REQUIRED)
    return sized(dumps({k: v for k, v in body.items() if k != gone}), limits, "invalid_event")


def extra_field(rng, body, limits, now):
    name = rng.choice(["__proto__", "constructor", "eventId", "Event_ID", "ts ", "",
                       "context.k", "user", letters(rng, 8)])
    value = rng.choice([1, "x", None, True, [], {}])
    return sized(dumps({**body, name: value}), limits, "invalid_event")


_BAD_IDS = ("", " ", "a b", "a:b", ":", "a\nb", "a\tb", "a\rb", "a\x00b", "a\x1b[2Jb", "\x7f",
            "a\x85b", "a\x9fb", "a\u00a0b", "a\u2028b", "a\u3000b", "a\fb")


def bad_id(rng, body, limits, now):
    field = rng.choice(ID_FIELDS)
    bad = rng.choice(_BAD_IDS)
    if bad and rng.random() < 0.5:  # hidden inside an otherwise fine id
        bad = f"{letters(rng, rng.randint(0, 20))}{bad}{letters(rng, rng.randint(0, 20))}"
    return sized(dumps({**body, field: bad}), limits, "invalid_event")


_NON_FINITE = (b"NaN", b"-NaN", b"nan", b"Infinity", b"-Infinity", b"inf", b"1e999", b"-1e999",
               b"1e400", b"1" + b"0" * 400, b"-" + b"9" * 400, b"1.5e+309")


def non_finite(rng, body, limits, now):
    field = rng.choice(["ts", "value", "context.k"])
    return sized(splice(body, field, rng.choice(_NON_FINITE)), limits, "invalid_json")


def out_of_range(rng, body, limits, now):
    """Finite numbers no event can hold: huge values, negative or millisecond times."""
    sign = rng.choice([1, -1])
    field, value = rng.choice([
        ("value", sign * rng.uniform(MAX_VALUE * 1.000001, 1e308)),
        ("value", sign * 2**63), ("value", 2**64 - 1),
        ("ts", -rng.uniform(1e-3, 1e9)), ("ts", rng.uniform(1e11 * 1.000001, 1e15)),
        ("ts", 2**63), ("ts", "1969-12-31T23:59:59Z"), ("ts", "0001-01-01T00:00:00+00:00"),
        ("ts", "9999-12-31T23:59:59Z"),
    ])
    return sized(dumps({**body, field: value}), limits, "invalid_event")


def clock_skew(rng, body, limits, now):
    """At least an hour beyond the allowed skew (the test may decode it a while later)."""
    ts = now + limits.max_clock_skew_s + rng.uniform(3600, 1e9)
    return sized(dumps({**body, "ts": rfc3339(ts) if rng.random() < 0.3 else ts}),
                 limits, "clock_skew")


def unknown_type(rng, body, limits, now):
    base = rng.choice(limits.event_types)
    kind = rng.choice([base.upper(), base.capitalize(), f"{base} ", f" {base}", f"{base}s",
                       f"{base}\u200b", f"{base}\x00", "teleport", letters(rng, 64)])
    return sized(dumps({**body, "type": kind}), limits, "unknown_type")


def not_an_object(rng, body, limits, now):
    raw = rng.choice([dumps([body]), dumps(dumps(body).decode()), b"42", b"-0", b"1.5e3",
                      b"true", b"false", b"null", b"[]", b'""', b" [ ] "])
    return sized(raw, limits, "not_an_object")


def too_large(rng, body, limits, now):
    raw = dumps(body)
    over = rng.randint(1, limits.max_bytes)
    if rng.random() < 0.5:  # JSON whitespace: valid but for its size
        return raw + b" " * (limits.max_bytes - len(raw) + over), "too_large"
    return dumps({**body, "context": {"pad": "x" * (limits.max_bytes + over)}}), "too_large"


def tombstone(rng, body, limits, now):
    return None, "invalid_json"


CATEGORIES: dict[str, Mutation] = {f.__name__: f for f in (
    truncated, broken_syntax, not_utf8, deep_nesting, nested_values, huge_string,
    too_many_context_keys, wrong_type, missing_field, extra_field, bad_id, non_finite,
    out_of_range, clock_skew, unknown_type, not_an_object, too_large, tombstone,
)}


# -- the corpus -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A hand-picked message and its reason under :data:`LIMITS` (None: valid)."""

    name: str
    raw: bytes
    reason: str | None


def _event(n: int, **changes: object) -> bytes:
    body = {"event_id": f"c{n}", "ts": T0, "user_id": f"cu{n}", "item_id": f"ci{n}",
            "type": "impression", **changes}
    return dumps({k: v for k, v in body.items() if v is not ...})


_OK = _event(0)
CORPUS: tuple[Case, ...] = (
    Case("bom", b"\xef\xbb\xbf" + _OK, "invalid_json"),
    Case("overlong_slash", _OK.replace(b'"cu0"', b'"cu\xc0\xaf"'), "not_utf8"),
    Case("utf8_encoded_surrogate", _OK.replace(b'"cu0"', b'"cu\xed\xa0\x80"'), "not_utf8"),
    Case("escaped_lone_surrogate", _OK.replace(b'"cu0"', b'"cu\\ud800"'), "invalid_json"),
    Case("escaped_reversed_pair", _OK.replace(b'"cu0"', b'"\\udc00\\ud800"'), "invalid_json"),
    Case("utf16", _OK.decode().encode("utf-16"), "not_utf8"),
    Case("latin1", _event(1, context={"city": "Zürich"}).decode().encode("latin-1"),
         "not_utf8"),
    Case("value_1e999", _OK[:-1] + b',"value":1e999}', "invalid_json"),
    Case("ts_1e999", _OK.replace(b"1767225600.0", b"1e999"), "invalid_json"),
    Case("int_beyond_float", _OK[:-1] + b',"value":1' + b"0" * 400 + b"}", "invalid_json"),
    Case("int_beyond_u64", _OK[:-1] + b',"value":18446744073709551616}', "invalid_event"),
    Case("nan_literal", _OK[:-1] + b',"value":NaN}', "invalid_json"),
    Case("infinity_in_context", _OK[:-1] + b',"context":{"w":-Infinity}}', "invalid_json"),
    Case("array_of_the_event", b"[" + _OK + b"]", "not_an_object"),
    Case("event_as_a_string", dumps(_OK.decode()), "not_an_object"),
    Case("empty", b"", "invalid_json"),
    Case("whitespace_only", b" \n\t ", "invalid_json"),
    Case("raw_nul_in_string", _OK.replace(b'"cu0"', b'"cu\x000"'), "invalid_json"),
    Case("escaped_nul_in_user_id", _OK.replace(b'"cu0"', b'"cu\\u00000"'), "invalid_event"),
    Case("escape_sequence_in_item_id", _OK.replace(b'"ci0"', b'"\\u001b[2Jci"'),
         "invalid_event"),
    Case("deep_10k_arrays", b"[" * 10_000 + b"]" * 10_000, "too_large"),
    Case("deep_1500_in_context", _OK[:-1] + b',"context":{"k":' + b"[" * 1500
         + b"]" * 1500 + b"}}", "invalid_json"),
    Case("user_id_with_colon", _event(2, user_id="cu:2"), "invalid_event"),
    Case("user_id_with_newline", _event(3, user_id="cu\n3"), "invalid_event"),
    Case("user_id_with_nbsp", _event(4, user_id="cu\u00a04"), "invalid_event"),
    Case("user_id_129_chars", _event(5, user_id="u" * 129), "invalid_event"),
    Case("ts_as_numeric_string", _event(6, ts="1767225600"), "invalid_event"),
    Case("ts_naive", _event(7, ts="2026-01-01T00:00:00"), "invalid_event"),
    Case("ts_in_milliseconds", _event(8, ts=T0 * 1000), "invalid_event"),
    Case("value_as_string", _event(9, value="4.5"), "invalid_event"),
    Case("value_as_bool", _event(10, value=True), "invalid_event"),
    Case("value_1e300", _event(11, value=1e300), "invalid_event"),
    Case("context_as_list", _event(12, context=[["k", 1]]), "invalid_event"),
    Case("context_33_keys", _event(13, context={f"k{j}": j for j in range(33)}),
         "too_many_context_keys"),
    Case("type_with_trailing_nul", _event(14, type="impression\x00"), "unknown_type"),
    Case("type_homoglyph", _event(15, type="impressіon"), "unknown_type"),  # Cyrillic і
    Case("proto_field", _event(16, __proto__={"admin": True}), "invalid_event"),
    Case("missing_type", _event(17, type=...), "invalid_event"),
    # odd but valid: applied like any event
    Case("user_id_braces", _event(100, user_id="{cu100}", item_id="{ci}|x.y*"), None),
    Case("user_id_glob_and_pipes", _event(101, user_id="cu*?[101]|a.b"), None),
    Case("user_id_unicode", _event(102, user_id="用户-ü-😀", item_id="élément"), None),
    Case("event_id_with_marker_chars", _event(103, event_id="c103@wm<1|x"), None),
    Case("context_keys_dots_pipes_braces",
         _event(104, context={"a.b": 1, "a|b": "x", "{c}": True, "": 0.5, "__proto__": 2}),
         None),
    Case("context_huge_but_finite", _event(105, context={"w": 1e300, "n": -1e300,
                                                         "u64": 2**64 - 1}), None),
    Case("context_subnormal", _event(106, context={"w": 5e-324, "z": -0.0}), None),
    Case("value_at_the_bound", _event(107, type="purchase", value=-MAX_VALUE), None),
    Case("ts_rfc3339_offset", _event(108, ts="2026-01-01T05:30:00+05:30"), None),
    Case("duplicate_json_keys_last_wins",
         _event(109)[:-1] + b',"type":"add_to_cart"}', None),
    Case("padded_with_whitespace", b"\n\t " + _event(110) + b" \r\n", None),
    Case("ts_negative_zero", _event(111).replace(b"1767225600.0", b"-0"), None),
)
