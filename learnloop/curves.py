"""Learning curves of a running learner, beside the oracle's, for the demo's view and chart.

Models: their ``model:metrics:*`` hashes in Redis (what the learner publishes at each
checkpoint), sampled as (examples, recent log loss). Oracle: an :class:`ExampleTap`
reads the examples topic from the start — the very examples the learner learns —
and has an :class:`~learnloop.oracle.Oracle` score each one. Both count examples in
label-time order, so a moment in event time (the drift, an alert) has one place on the
examples axis: the number of examples labeled before it.
"""

from __future__ import annotations

import bisect
import threading

import redis
from kafka import KafkaConsumer, TopicPartition

from learnloop import examples
from learnloop.connect import kafka_security
from learnloop.oracle import Oracle
from learnloop.reader import read_model_metrics
from learnloop.settings import Settings

Curve = list[tuple[int, float]]


class ExampleTap:
    """The examples topic, read beside the learner: each example is scored by ``oracle``;
    the oracle's recent log loss is kept every ``every`` examples it scored."""

    def __init__(self, settings: Settings, oracle: Oracle, every: int = 50) -> None:
        self.oracle = oracle
        self.every = every
        self.curve: Curve = []
        self.read = 0  # examples read, duplicates included
        self._label_times: list[float] = []
        self.consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap,
                                      enable_auto_commit=False, client_id="learnloop-demo-tap",
                                      **kafka_security(settings))
        topic = settings.topic_examples
        partitions = [TopicPartition(topic, p) for p in range(settings.partitions)]
        self.consumer.assign(partitions)
        self.consumer.seek_to_beginning(*partitions)

    @property
    def examples(self) -> int:
        """Examples the oracle scored (the ones the learner's models learn)."""
        return self.oracle.score.examples

    def poll(self, timeout_ms: int = 0) -> None:
        """Score what arrived since the last call."""
        batches = self.consumer.poll(timeout_ms=timeout_ms, max_records=10_000)
        for records in batches.values():
            for example in examples.of(records):
                self.read += 1
                if self.oracle.observe(example):
                    bisect.insort(self._label_times, float(example["label_ts"]))
                    if self.examples % self.every == 0:
                        self.curve.append((self.examples, self.report()["recent_logloss"]))

    def report(self) -> dict[str, float]:
        return self.oracle.report()

    def position(self, event_time: float) -> int:
        """Where ``event_time`` falls on the examples axis: examples labeled before it."""
        return bisect.bisect_left(self._label_times, event_time)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


class ModelCurves:
    """Each model's (examples, recent log loss), a point each time its metrics moved.

    :meth:`start` samples Redis every ``every_s`` seconds on a background thread — more
    often than the learner checkpoints, so every checkpoint's figures are caught whatever
    the rest of the process is busy with; :meth:`sample` reads on demand.
    """

    def __init__(self, client: redis.Redis, models: tuple[str, ...], every_s: float = 0.1):
        self.client = client
        self.models = models
        self.every_s = every_s
        self.points: dict[str, Curve] = {name: [] for name in models}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="curves", daemon=True)

    def sample(self) -> dict[str, dict[str, float]]:
        """Read every model's metrics, keep a point where they moved; return them."""
        latest = {name: read_model_metrics(self.client, name) for name in self.models}
        with self._lock:
            for name, metrics in latest.items():
                curve = self.points[name]
                examples = int(metrics.get("examples", 0))
                if examples and (not curve or curve[-1][0] < examples):
                    curve.append((examples, metrics["recent_logloss"]))
        return latest

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _follow(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()
