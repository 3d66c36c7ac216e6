"""kafka-python's default partitioner with each key's hash remembered.

The default partitioner hashes a key with murmur2 in pure Python on every send (~5% of
the interactions consumer's main thread: one keyed score per exposure). Users recur
(Zipf), so their hashes are kept — at most ``limit``, forgotten all at once when full.
The partition is the one kafka-python (and the Java client) would choose.

>>> from kafka.partitioner.default import DefaultPartitioner
>>> class Cluster:
...     def topics(self): return {"scores"}
...     def partitions_for_topic(self, topic): return {0, 1, 2, 3}
...     def available_partitions_for_topic(self, topic): return {0, 1, 2, 3}
>>> keys = [f"u{n}".encode() for n in range(50)]
>>> remembered = [KeyHashPartitioner().partition("scores", k, k, None, None, Cluster())
...               for k in keys]
>>> remembered == [DefaultPartitioner().partition("scores", k, k, None, None, Cluster())
...                for k in keys]
True
"""

from __future__ import annotations

from kafka.partitioner.default import DefaultPartitioner, murmur2


class KeyHashPartitioner(DefaultPartitioner):
    """:class:`DefaultPartitioner`, remembering up to ``limit`` keys' hashes."""

    def __init__(self, limit: int = 65_536) -> None:
        self.limit = limit
        self.hashes: dict[bytes, int] = {}

    def partition(self, topic, key, serialized_key, value, serialized_value, cluster):
        partitions = cluster.partitions_for_topic(topic) if serialized_key is not None else None
        if not partitions:  # no key, or a topic without metadata: the default's way
            return super().partition(topic, key, serialized_key, value, serialized_value,
                                     cluster)
        hashed = self.hashes.get(serialized_key)
        if hashed is None:
            if len(self.hashes) >= self.limit:
                self.hashes.clear()
            hashed = self.hashes[serialized_key] = murmur2(serialized_key) & 0x7FFFFFFF
        return sorted(partitions)[hashed % len(partitions)]
