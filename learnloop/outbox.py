"""The example outbox of a partition: written by the batch script, drained to Kafka.

Trimming drops every entry up to and including the last one sent, found by its bytes
(``LPOS``): entries are unique (each carries its source partition, offset and seq) and
leave only from the head, in order, so when the last one sent is gone, everything before
it went with it and a retried trim (after a lost reply from Redis) removes nothing.
Finding it by a byte comparison, not by decoding each entry's source in Lua, costs Redis
~0.4 µs per entry instead of ~20 (an entry holds the whole snapshot, ~800 bytes).
"""

from __future__ import annotations

import redis

from learnloop.features import outbox_key

_TRIM = """
local last = redis.call('LPOS', KEYS[1], ARGV[1])
if not last then return 0 end
redis.call('LTRIM', KEYS[1], last + 1, -1)
return last + 1
"""


class Outbox:
    """One interactions partition's pending examples."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self.script = client.register_script(_TRIM)

    def pending(self, topic: str, partition: int) -> list[bytes]:
        """Examples not yet confirmed sent, oldest first."""
        return self.client.lrange(outbox_key(topic, partition), 0, -1)

    def trim_through(self, topic: str, partition: int, last: bytes) -> int:
        """Drop every example up to and including ``last``: how many were dropped."""
        return int(self.script(keys=[outbox_key(topic, partition)], args=[last]))

    def queue_trim(self, pipe, topic: str, partition: int, last: bytes) -> None:
        """:meth:`trim_through` queued on a pipeline, by SHA (the caller loads
        :attr:`script` first, and again on NOSCRIPT)."""
        pipe.evalsha(self.script.sha, 1, outbox_key(topic, partition), last)
