"""The learner: every model, the baseline included, on every labeled example.

For each example from the examples topic (in partition order, several to a message:
:mod:`learnloop.examples`): rebuild ``x`` from the exposure's point-in-time snapshot,
then for every model bound to the example's objective, predict first (progressive
validation), then learn. State — models, metrics, consumed offsets and the highest
source (partition, offset, seq) learned — is checkpointed, signed, to Redis every N
examples or T seconds. On start the learner resumes from its newest valid checkpoint
and seeks to the offsets it holds; examples re-sent by an interactions consumer after a
crash are recognised by their source and skipped, so every example is learned exactly
once.

Drift detectors watch every model's loss, each objective's positive rate and a bounded
set of inputs; an alert goes to the drift-alerts topic, a Redis stream and Prometheus,
and triggers the model's response (alert only, reset, or a challenger that is promoted
automatically once it beats the drifted model).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass, field

import orjson
import redis
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import ConsumerRebalanceListener
from prometheus_client import CollectorRegistry

import models
from learnloop import examples
from learnloop.alerts import AlertSink
from learnloop.checkpoints import CheckpointStore
from learnloop.connect import consumer_options, kafka_security
from learnloop.drift import Alert, DriftMonitor
from learnloop.evaluation import ProgressiveScore, lift
from learnloop.featurize import Featurizer
from learnloop.metrics import DriftMetrics, LearnerMetrics
from learnloop.reader import metrics_key
from learnloop.responses import promote_ready, respond
from learnloop.settings import Settings
from learnloop.usercap import UserCap
from models.base import OnlineModel

log = logging.getLogger("learnloop.learner")
NAME = "learner"


@dataclass
class LearnerState:
    """Everything a checkpoint holds."""

    models: dict[str, OnlineModel]
    scores: dict[str, ProgressiveScore]
    drift: DriftMonitor
    recent_window: int
    kinds: dict[str, str] = field(default_factory=dict)  # model → registry name
    objectives: dict[str, str] = field(default_factory=dict)  # model → objective
    challengers: dict[str, dict] = field(default_factory=dict)  # drift challengers
    consumed: dict[int, int] = field(default_factory=dict)  # examples partition → offset
    learned: dict[int, tuple[int, int]] = field(default_factory=dict)  # source → (offset, seq)
    examples: int = 0  # not duplicates (capped included)
    skipped: int = 0
    capped: int = 0  # held back by the per-user cap
    user_cap: UserCap | None = None
    #: order-independent fingerprint of the examples learned (sum of their hashes, mod
    #: 2**64): two learners that learned the same examples, each once, have the same one
    digest: int = 0

    @classmethod
    def fresh(cls, settings: Settings) -> LearnerState:
        state = cls({}, {}, DriftMonitor(settings.drift_detector, settings.drift_params,
                                         settings.drift_cooldown_s,
                                         settings.drift_max_features),
                     settings.recent_window)
        for name in settings.models:
            state.add_model(name, name, settings.objective_of(name))
        state.user_cap = UserCap(settings.max_examples_per_user, settings.user_cap_window_s)
        return state

    def add_model(self, name: str, kind: str, objective: str, after_drift: bool = False) -> None:
        """A fresh model of registry ``kind`` learning ``objective``, evaluated from now
        (``after_drift``: the variant a drift response starts, see ``models``)."""
        self.models[name] = (models.build_after_drift if after_drift else models.build)(kind)
        self.scores[name] = ProgressiveScore(self.recent_window)
        self.kinds[name] = kind
        self.objectives[name] = objective

    def kind_of(self, name: str) -> str:
        return self.kinds[name]

    def objective_of(self, name: str) -> str:
        return self.objectives[name]


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
            if name not in self.state.models:
                self.state.add_model(name, name, settings.objective_of(name))
        self.state.user_cap = UserCap.resume(self.state.user_cap, settings.max_examples_per_user,
                                             settings.user_cap_window_s)
        self.featurize = Featurizer.from_settings(settings, self.metrics.clipped)
        self.drift_metrics = DriftMetrics(registry)
        self.producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                                      client_id=f"learnloop-{NAME}", **kafka_security(settings))
        self.alerts = AlertSink(client, self.producer, settings.topic_drift_alerts,
                                self.drift_metrics, settings.drift_hold_s,
                                settings.drift_stream_max)
        self.since_checkpoint = 0
        self.last_checkpoint = time.monotonic()
        # staleness counts from the last checkpoint (or now): a learner that restarts
        # into silence must not read as fresh forever
        self.last_example_at: float = loaded.published_at if loaded else time.time()
        self.newest_label_ts: float | None = None
        self.consumer = KafkaConsumer(**consumer_options(settings, settings.learner_group, NAME))
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
                    for record in records:  # up to hundreds of examples each
                        self.learn_record(tp.partition, record.offset, record.value)
                        self.maybe_checkpoint()
                self.maybe_checkpoint()  # when due by time, after an idle poll too
                self.update_staleness()
                self.alerts.expire()
            self.checkpoint()
        finally:
            self.consumer.close(autocommit=False)
            self.producer.close(timeout=5)

    def learn_record(self, partition: int, offset: int, raw: bytes) -> None:
        """Every example of one message of the examples topic (:mod:`learnloop.examples`),
        in order; the alerts of the n-th say ``{partition}/{offset}`` and, after the
        first, ``.{n}``."""
        self.state.consumed[partition] = offset
        for n, example in enumerate(examples.unpack(raw)):
            self.learn(example, f"{partition}/{offset}.{n}" if n else f"{partition}/{offset}")

    def learn(self, example: dict, where: str) -> None:
        """Skip an example whose source was learned; else learn it (:func:`learn_example`),
        then publish and respond to the drift alerts it raised."""
        source_partition, source_offset, seq = example["source"]
        done = self.state.learned.get(source_partition)
        if done is not None and (source_offset, seq) <= done:
            self.state.skipped += 1
            self.metrics.duplicates.inc()
            return
        self.state.learned[source_partition] = (source_offset, seq)
        label_ts = float(example["label_ts"])
        alerts = learn_and_respond(self.state, self.featurize, example, where, self.metrics,
                                   self.settings)
        if alerts is not None:
            for alert in alerts:
                self.alerts.publish(alert)
            self.metrics.label_delay_by[
                example["objective"], "positive" if example["label"] == 1 else "negative",
            ].observe(label_ts - float(example["exposure_ts"]))
        self.since_checkpoint += 1
        self.last_example_at = time.time()
        self.newest_label_ts = max(label_ts, self.newest_label_ts or label_ts)

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
        # only now does a checkpoint hold the challengers, so scorers can load them
        self.drift_metrics.promotions.inc(len(promote_ready(self.state, self.redis,
                                                            self.settings)))

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
        now = time.time()
        self.metrics.staleness.set(now - self.last_example_at)
        if self.newest_label_ts is not None:
            self.metrics.topic_event_age.labels(self.settings.topic_examples).set(
                now - self.newest_label_ts)


def fingerprint(example: dict) -> int:
    """A 64-bit hash of an example's identity and label (see ``LearnerState.digest``)."""
    identity = orjson.dumps([example["source"], example["objective"], example["label"]])
    return int.from_bytes(hashlib.blake2b(identity, digest_size=8).digest(), "big")


def learn_and_respond(state: LearnerState, featurize: Featurizer, example: dict, where: str,
                      metrics: LearnerMetrics, settings: Settings) -> list[Alert] | None:
    """One new example, as the learner takes it: into the digest, learned
    (:func:`learn_example`), each alert answered with its model's drift response, counted.
    Returns the alerts (None when the user cap held the example back)."""
    state.digest = (state.digest + fingerprint(example)) % 2**64
    alerts = learn_example(state, featurize, example, where, metrics)
    for alert in alerts or ():
        respond(state, alert, settings)
    state.examples += 1
    return alerts


def learn_example(state: LearnerState, featurize: Featurizer, example: dict, where: str,
                  metrics: LearnerMetrics) -> list[Alert] | None:
    """Predict, then learn, with every model bound to the example's objective, and feed
    the drift detectors: the alerts raised. None when the user cap held the example back
    (counted; no model, metric or detector sees it)."""
    label_ts = float(example["label_ts"])
    if not state.user_cap.admit(example["source"][0], example["user_id"], label_ts):
        state.capped += 1
        metrics.capped.inc()
        return None
    # the snapshot's numbers as the scorer took them (JSON ints stay ints: same floats)
    x = featurize(example["features"], float(example["exposure_ts"]),
                  example.get("context") or {})
    y = example["label"] == 1
    objective, drift = example["objective"], state.drift
    alerts = drift.observe_label(objective, y, label_ts, where)
    alerts += drift.observe_features(objective, x, label_ts, where)
    for name in [m for m, o in state.objectives.items() if o == objective]:
        model = state.models[name]
        p = model.predict_one(x)
        if not math.isfinite(p):
            metrics.nonfinite.labels(name).inc()
            log.error("%s predicted %r: skipped (reset the model)", name, p)
            continue
        loss = state.scores[name].update(y, p)
        for challenger in state.challengers.values():
            if challenger["parent"] == name and not challenger["done"]:
                challenger["parent_score"].update(y, p)
        model.learn_one(x, y)
        metrics.learned_by[name].inc()
        alerts += drift.observe_loss(name, loss, label_ts, where)
    return alerts


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
