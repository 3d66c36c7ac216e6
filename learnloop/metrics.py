"""Every Prometheus metric learnloop exports, built on an injected registry.

Labels never carry user or item ids: only partitions, reasons and model names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

_BATCH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


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


def serve(registry: CollectorRegistry, host: str, port: int) -> int:
    """Expose ``/metrics`` on ``host:port`` (port 0 picks a free one); return the port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return server.server_port
