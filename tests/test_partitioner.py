"""The remembering partitioner picks kafka-python's default partition for every key,
whatever the partition count, and keeps a bounded memory."""

from __future__ import annotations

from kafka.partitioner.default import DefaultPartitioner

from learnloop.partitioner import KeyHashPartitioner


class Cluster:
    def __init__(self, partitions: int) -> None:
        self.partitions = set(range(partitions))

    def topics(self):
        return {"t"}

    def partitions_for_topic(self, topic):
        return self.partitions if topic == "t" else None

    def available_partitions_for_topic(self, topic):
        return self.partitions


def test_the_same_partition_as_the_default_as_the_topic_grows_and_the_memory_is_bounded():
    remembering, default = KeyHashPartitioner(limit=100), DefaultPartitioner()
    keys = [f"user-{n % 300}".encode() for n in range(3000)]  # recurring keys
    for partitions in (1, 4, 7, 12):
        cluster = Cluster(partitions)
        got = [remembering.partition("t", k, k, None, None, cluster) for k in keys]
        assert got == [default.partition("t", k, k, None, None, cluster) for k in keys]
        assert len(set(got)) == partitions
        assert 0 < len(remembering.hashes) <= 100


def test_no_key_goes_to_an_available_partition_and_is_not_remembered():
    remembering = KeyHashPartitioner()
    picked = {remembering.partition("t", None, None, b"v", b"v", Cluster(4)) for _ in range(200)}
    assert picked <= {0, 1, 2, 3} and len(picked) > 1
    assert remembering.hashes == {}
