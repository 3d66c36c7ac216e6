"""Every Prometheus metric learnloop exports, built on an injected registry.

Labels never carry user or item ids: only partitions, reasons and model names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


def _registered(registry: CollectorRegistry, name: str):
    """The collector already registered as ``name`` (metrics shared by the consumers of
    one process are registered once), or None."""
    return registry._names_to_collectors.get(name)  # noqa: SLF001 - no public lookup


def topic_event_age(registry: CollectorRegistry) -> Gauge:
    """Per topic: wall clock minus the newest event time seen (shared by all consumers
    of one process, so it is registered once)."""
    name = "learnloop_topic_last_event_age_seconds"
    return _registered(registry, name) or Gauge(
        name, "Wall clock minus the newest event time seen on a topic.", ["topic"],
        registry=registry)


def features_clipped(registry: CollectorRegistry) -> Counter:
    """Model inputs clipped into their configured range, by the range's pattern (a
    configured, bounded set: never a feature name, which products can invent). Counted by
    each consumer that builds inputs: the scorer per exposure, the learner per example."""
    name = "learnloop_features_clipped"
    return _registered(registry, name) or Counter(
        name, "Model input values clipped into their configured range, by pattern.",
        ["pattern"], registry=registry)


def nonfinite_predictions(registry: CollectorRegistry) -> Counter:
    """Predictions that were NaN or infinite (a model broken by its inputs): neither
    served, evaluated nor learned from, so one bad model cannot crash-loop a consumer."""
    name = "learnloop_model_nonfinite_predictions"
    return _registered(registry, name) or Counter(
        name, "Predictions that were NaN or infinite, skipped, by model.",
        ["model"], registry=registry)


class InteractionsMetrics:
    """Metrics of the interactions consumer."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.events = Counter(
            "learnloop_events_processed", "Events applied to the features (valid, not duplicate).",
            registry=registry,
        )
        self.rejected = Counter(
            "learnloop_events_rejected", "Messages sent to the dead-letter topic, by reason.",
            ["reason"], registry=registry,
        )
        self.duplicates = Counter(
            "learnloop_events_duplicate", "Events dropped because their event_id was seen.",
            registry=registry,
        )
        self.replayed = Counter(
            "learnloop_events_replayed", "Records at or below the watermark (applied before).",
            registry=registry,
        )
        self.scores = Counter(
            "learnloop_scores_published", "Scores written to Redis and the scores topic.",
            ["model"], registry=registry,
        )
        self.batch_seconds = Histogram(
            "learnloop_batch_seconds", "Wall time to process one polled batch.",
            buckets=_BATCH_BUCKETS, registry=registry,
        )
        self.lag_offsets = Gauge(
            "learnloop_consumer_lag_offsets", "High watermark minus position, per partition.",
            ["topic", "partition"], registry=registry,
        )
        self.lag_seconds = Gauge(
            "learnloop_consumer_lag_seconds",
            "Wall clock minus the newest applied event time, per partition.",
            ["topic", "partition"], registry=registry,
        )
        self.examples = Counter(
            "learnloop_examples_published", "Labeled examples sent to the examples topic.",
            ["label"], registry=registry,
        )
        self.unattributed = Counter(
            "learnloop_feedback_unattributed", "Feedback that joined no pending exposure.",
            ["objective", "reason"], registry=registry,
        )
        self.commit_failures = Counter(
            "learnloop_commit_failures", "Kafka offset commits that failed (lag hint only).",
            registry=registry,
        )
        self.redis_regressions = Counter(
            "learnloop_redis_regressions",
            "Batches refused because Redis' watermark went back (lost writes); replayed.",
            registry=registry,
        )
        self.feature_age = Histogram(
            "learnloop_feature_age_seconds",
            "At scoring: exposure time minus the newest event in its user/item features.",
            ["entity"], registry=registry,
            buckets=(1, 10, 60, 300, 900, 3600, 21600, 86400, 604800, 2592000),
        )
        self.topic_event_age = topic_event_age(registry)
        self.clipped = features_clipped(registry)
        self.nonfinite = nonfinite_predictions(registry)


class LabelCache(dict):
    """A labelled metric's children by label values (a tuple, or one value), each looked
    up once: ``labels()`` takes a lock and checks its arguments, too dear per example.

    >>> registry = CollectorRegistry()
    >>> seen = LabelCache(Counter("seen", "Seen.", ["model", "label"], registry=registry))
    >>> seen["logreg", "positive"].inc(); seen["logreg", "positive"].inc(2)
    >>> registry.get_sample_value("seen_total", {"model": "logreg", "label": "positive"})
    3.0
    >>> seen["logreg", "positive"] is seen.metric.labels("logreg", "positive")
    True
    """

    def __init__(self, metric) -> None:
        super().__init__()
        self.metric = metric

    def __missing__(self, key):
        child = self[key] = self.metric.labels(*key) if isinstance(key, tuple) \
            else self.metric.labels(key)
        return child


class LearnerMetrics:
    """Metrics of the learner: progressive quality per model, label delay, staleness."""

    QUALITY = ("logloss", "roc_auc", "accuracy", "positive_rate", "lift")

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.learned = Counter(
            "learnloop_model_examples", "Examples each model predicted then learned.",
            ["model"], registry=registry,
        )
        self.duplicates = Counter(
            "learnloop_examples_duplicate", "Examples skipped: their source was learned.",
            registry=registry,
        )
        self.quality = {
            name: Gauge(f"learnloop_model_{name}", f"Progressive {name} of each model.",
                        ["model", "window"], registry=registry)
            for name in self.QUALITY
        }
        self.label_delay = Histogram(
            "learnloop_label_delay_seconds", "Label event time minus exposure event time.",
            ["objective", "label"], registry=registry,
            buckets=(1, 5, 15, 30, 60, 300, 900, 1800, 3600, 21600, 86400, 604800),
        )
        self.learned_by = LabelCache(self.learned)  # [model]
        self.label_delay_by = LabelCache(self.label_delay)  # [(objective, label)]
        self.staleness = Gauge(
            "learnloop_learner_staleness_seconds", "Seconds since the last example was learned.",
            registry=registry,
        )
        self.checkpoint_version = Gauge(
            "learnloop_checkpoint_version", "Newest checkpoint version written.",
            registry=registry,
        )
        self.topic_event_age = topic_event_age(registry)
        self.clipped = features_clipped(registry)
        self.nonfinite = nonfinite_predictions(registry)
        self.capped = Counter(
            "learnloop_examples_capped",
            "Examples held back by the per-user cap: neither learned nor evaluated.",
            registry=registry,
        )

    def publish(self, model: str, report: dict[str, float]) -> None:
        """Set every quality gauge of ``model`` from its report."""
        for name, gauge in self.quality.items():
            gauge.labels(model, "all").set(report[name])
            gauge.labels(model, "recent").set(report[f"recent_{name}"])


class DriftMetrics:
    """Drift alerts: a counter, and a gauge held at 1 for a while after each alert."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.alerts = Counter(
            "learnloop_drift_alerts", "Drift alerts by model (or objective) and signal.",
            ["model", "signal"], registry=registry,
        )
        self.active = Gauge(
            "learnloop_drift_active", "1 while a drift alert is within its hold time.",
            ["model", "signal"], registry=registry,
        )
        self.promotions = Counter(
            "learnloop_auto_promotions", "Drift challengers promoted automatically.",
            registry=registry,
        )


class ServingMetrics:
    """What a scorer serves, and how old it is."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.version = Gauge(
            "learnloop_served_model_version", "Checkpoint version of the served champion.",
            ["model"], registry=registry,
        )
        self.age = Gauge(
            "learnloop_served_model_age_seconds",
            "Seconds since the served model version was published.", ["model"],
            registry=registry,
        )
        self.refused = Counter(
            "learnloop_checkpoints_refused", "Checkpoints whose signature did not verify.",
            registry=registry,
        )

    def forget(self, model: str) -> None:
        """A swapped-out champion is no longer served: drop its series."""
        for gauge in (self.version, self.age):
            try:
                gauge.remove(model)
            except KeyError:
                pass


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Expose ``/metrics`` on ``host:port`` (port 0 picks a free one); return the port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_port
