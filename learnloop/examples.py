"""The examples topic's messages: each is a JSON array of labeled examples of one source
partition, in source order — the outbox entries of one drain, cut at
:data:`MAX_MESSAGE_BYTES`. A message that is one JSON object (written before) is one
example.

Why several per message: kafka-python costs ~40 µs of CPU to send a message and ~8 µs
to read one back, on top of the bytes; an example is ~800 bytes, so one message per
example made sending them the interactions consumer's largest cost after Redis.

>>> messages = pack([b'{"label":1}', b'{"label":0}'])
>>> messages
[b'[{"label":1},{"label":0}]']
>>> unpack(messages[0])
[{'label': 1}, {'label': 0}]
>>> unpack(b'{"label":1}')
[{'label': 1}]
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator

import orjson

#: Well under Kafka's default 1 MB message limit (an entry larger still goes alone).
MAX_MESSAGE_BYTES = 256 * 1024

_POSITIVE = b'{"label":1,'


def pack(entries: list[bytes]) -> list[bytes]:
    """Outbox entries (JSON objects, in order) as messages of at most
    :data:`MAX_MESSAGE_BYTES`."""
    cuts, size = [0], 0
    for end, entry in enumerate(entries):
        if end > cuts[-1] and size + len(entry) + 1 > MAX_MESSAGE_BYTES:
            cuts.append(end)
            size = 0
        size += len(entry) + 1
    if entries:
        cuts.append(len(entries))
    return [b"[" + b",".join(entries[a:b]) + b"]" for a, b in itertools.pairwise(cuts)]


def unpack(raw: bytes) -> list[dict]:
    """The examples of one message, in order."""
    value = orjson.loads(raw)
    return value if isinstance(value, list) else [value]


def of(records: Iterable) -> Iterator[dict]:
    """The examples of Kafka ``records`` of the examples topic, in order."""
    for record in records:
        yield from unpack(record.value)


def is_positive(entry: bytes) -> bool:
    """Whether an outbox entry is a positive example; the batch script writes the label
    first, so this reads one prefix (an entry from an older script is parsed)."""
    if entry.startswith(b'{"label":'):
        return entry.startswith(_POSITIVE)
    return orjson.loads(entry)["label"] == 1
