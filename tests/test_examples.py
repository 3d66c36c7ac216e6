"""Examples go to Kafka several to a message: every example once, in order, each message
under the size limit (an entry over it alone)."""

from __future__ import annotations

import orjson

from learnloop import examples


def entry(n: int, size: int) -> bytes:
    return orjson.dumps({"label": n % 2, "source": [0, n, 0], "pad": "x" * size})


def test_pack_cuts_at_the_size_limit_and_unpacks_to_the_same_entries_in_order(monkeypatch):
    monkeypatch.setattr(examples, "MAX_MESSAGE_BYTES", 1000)
    entries = [entry(n, 150) for n in range(20)] + [entry(20, 2000)] + [entry(21, 10)]

    messages = examples.pack(entries)

    assert [orjson.dumps(e) for m in messages for e in examples.unpack(m)] == entries
    assert all(len(m) <= 1000 for m in messages if m.count(b'"source"') > 1)
    alone = [m for m in messages if b"x" * 2000 in m]
    assert len(alone) == 1 and alone[0].count(b'"source"') == 1
    assert 6 <= len(messages) <= 8  # ~5 entries of ~190 bytes a message, not one each
    assert examples.pack([]) == []


def test_is_positive_reads_the_label_prefix_and_parses_an_older_entry():
    assert examples.is_positive(b'{"label":1,"x":0}')
    assert not examples.is_positive(b'{"label":0,"x":1}')
    assert examples.is_positive(b'{"x":0,"label":1}')
    assert not examples.is_positive(b'{"x":1,"label":0}')
