"""The learner: every model, the baseline included, on every labeled example.

For each example from the examples topic (in partition order): rebuild ``x`` from the
exposure's point-in-time snapshot, then for every model bound to the example's
objective, predict first (progressive validation), then learn. State — models, metrics,
consumed offsets and the highest source (partition, offset, seq) learned — is
checkpointed, signed, to Redis every N examples or T seconds. On start the learner
resumes from its newest valid checkpoint and seeks to the offsets it holds; examples
re-sent by an interactions consumer after a crash are recognised by their source and
skipped, so every example is learned exactly once.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import orjson
import redis
from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from prometheus_client import CollectorRegistry

import models
from learnloop.checkpoints import CheckpointStore
from learnloop.evaluation import ProgressiveScore, lift
from learnloop.featurize import featurize
from learnloop.metrics import LearnerMetrics
from learnloop.reader import metrics_key
from learnloop.settings import Settings
from models.base import OnlineModel

log = logging.getLogger("learnloop.learner")
NAME = "learner"


@dataclass
class LearnerState:
    """Everything a checkpoint holds."""

    models: dict[str, OnlineModel]
    scores: dict[str, ProgressiveScore]
    consumed: dict[int, int] = field(default_factory=dict)  # examples partition → offset
    learned: dict[int, tuple[int, int]] = field(default_factory=dict)  # source → (offset, seq)
    examples: int = 0
    skipped: int = 0

    @classmethod
    def fresh(cls, settings: Settings) -> LearnerState:
        return cls(
            models={name: models.build(name) for name in settings.models},
            scores={name: ProgressiveScore(settings.recent_window) for name in settings.models},
        )


class Learner:
    """Consumes examples, evaluates and trains every model, checkpoints."""

    def __init__(self, settings: Settings, client: redis.Redis, registry: CollectorRegistry,
                 checkpoints: CheckpointStore) -> None:
        self.settings = settings
        self.redis = client
        self.metrics = LearnerMetrics(registry)
        self.checkpoints = checkpoints
        loaded = checkpoints.load_newest_valid()
        self.state = loaded.state if loaded else LearnerState.fresh(settings)
        self.version = loaded.version if loaded else 0
        for name in settings.models:  # a model added to the settings starts fresh
            self.state.models.setdefault(name, models.build(name))
            self.state.scores.setdefault(name, ProgressiveScore(settings.recent_window))
        self.by_objective = {
            objective: [m for m in settings.models if settings.objective_of(m) == objective]
            for objective in settings.objectives
        }
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.last_example_at: float | None = None
        self.consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap, group_id=settings.learner_group,
            client_id=f"learnloop-{NAME}", enable_auto_commit=False,
            auto_offset_reset="earliest", max_poll_records=settings.max_poll_records,
            max_poll_interval_ms=settings.max_poll_interval_ms,
            session_timeout_ms=settings.session_timeout_ms,
            fetch_max_wait_ms=settings.fetch_max_wait_ms,
        )
        log.info("learner starts from checkpoint %d (%d examples)", self.version,
                 self.state.examples)

    def run(self, stop: threading.Event) -> None:
        """Learn until ``stop`` is set; checkpoint on the way out."""
        self.consumer.subscribe([self.settings.topic_examples], listener=_Resume(self))
        try:
            while not stop.is_set():
                batch = self.consumer.poll(timeout_ms=self.settings.poll_timeout_ms,
                                           max_records=self.settings.max_poll_records)
                for tp, records in batch.items():
                    for record in records:
                        self.learn_record(tp.partition, record.offset, record.value)
                self.maybe_checkpoint()
                self.update_staleness()
            self.checkpoint()
        finally:
            self.consumer.close(autocommit=False)

    def learn_record(self, partition: int, offset: int, raw: bytes) -> None:
        """Predict, then learn, for every model bound to the example's objective."""
        self.state.consumed[partition] = offset
        example = orjson.loads(raw)
        source_partition, source_offset, seq = example["source"]
        done = self.state.learned.get(source_partition)
        if done is not None and (source_offset, seq) <= done:
            self.state.skipped += 1
            self.metrics.duplicates.inc()
            return
        self.state.learned[source_partition] = (source_offset, seq)
        exposure_ts = float(example["exposure_ts"])
        snapshot = {k: float(v) for k, v in example["features"].items()}
        x = featurize(snapshot, exposure_ts, example.get("context") or {},
                      self.settings.half_lives_s, self.settings.event_types)
        y = example["label"] == 1
        for name in self.by_objective.get(example["objective"], ()):
            model = self.state.models[name]
            self.state.scores[name].update(y, model.predict_one(x))
            model.learn_one(x, y)
            self.metrics.learned.labels(name).inc()
        self.metrics.label_delay.labels(example["objective"], "positive" if y else "negative") \
            .observe(float(example["label_ts"]) - exposure_ts)
        self.state.examples += 1
        self.since_checkpoint += 1
        self.last_example_at = time.time()

    def maybe_checkpoint(self) -> None:
        due = time.monotonic() - self.last_checkpoint >= self.settings.checkpoint_every_s
        if self.since_checkpoint >= self.settings.checkpoint_every_examples or (
            due and self.since_checkpoint
        ):
            self.checkpoint()

    def checkpoint(self) -> None:
        """Sign and store the state, then publish the metrics it holds."""
        if not self.since_checkpoint and self.version:
            return
        self.version = self.checkpoints.save(self.state, {
            "examples": self.state.examples, "consumed": self.state.consumed,
        })
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        self.metrics.checkpoint_version.set(self.version)
        self.publish_metrics()

    def publish_metrics(self) -> None:
        """Each model's progressive metrics and lift over the baseline: Prometheus + Redis."""
        reports = {name: score.report() for name, score in self.state.scores.items()}
        baseline = reports.get(self.settings.baseline, {})
        pipe = self.redis.pipeline(transaction=False)
        for name, report in reports.items():
            report["lift"] = lift(report, baseline)
            report["recent_lift"] = lift(report, baseline, "recent_")
            report["version"] = self.version
            report["updated_at"] = time.time()
            self.metrics.publish(name, report)
            pipe.hset(metrics_key(name), mapping={k: repr(float(v)) for k, v in report.items()})
        pipe.execute()

    def update_staleness(self) -> None:
        if self.last_example_at is not None:
            self.metrics.staleness.set(time.time() - self.last_example_at)


class _Resume(ConsumerRebalanceListener):
    """Resume each examples partition after the offset the checkpoint consumed."""

    def __init__(self, owner: Learner) -> None:
        self.owner = owner

    def on_partitions_revoked(self, revoked):
        pass

    def on_partitions_assigned(self, assigned):
        for tp in assigned:
            offset = self.owner.state.consumed.get(tp.partition)
            if offset is None:
                self.owner.consumer.seek_to_beginning(tp)
            else:
                self.owner.consumer.seek(TopicPartition(tp.topic, tp.partition), offset + 1)
