"""The example outbox of a partition: written by the batch script, drained to Kafka.

Trimming is by source (partition, offset, seq), not by count, so a retried trim (after
a lost reply from Redis) can never drop an example that was not sent.
"""

from __future__ import annotations

import orjson
import redis

from learnloop.features import outbox_key

_TRIM = """
local offset, seq = tonumber(ARGV[1]), tonumber(ARGV[2])
local removed = 0
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head then break end
  local source = cjson.decode(head).source
  if source[2] > offset or (source[2] == offset and source[3] > seq) then break end
  redis.call('LPOP', KEYS[1])
  removed = removed + 1
end
return removed
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
        """Drop every example up to and including ``last`` (by its source)."""
        _, offset, seq = orjson.loads(last)["source"]
        return int(self.script(keys=[outbox_key(topic, partition)], args=[offset, seq]))

    def queue_trim(self, pipe, topic: str, partition: int, last: bytes) -> None:
        """:meth:`trim_through` queued on a pipeline, by SHA (the caller loads
        :attr:`script` first, and again on NOSCRIPT)."""
        _, offset, seq = orjson.loads(last)["source"]
        pipe.evalsha(self.script.sha, 1, outbox_key(topic, partition), offset, seq)
