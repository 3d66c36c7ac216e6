"""`learnloop status` and `learnloop drift` against the real stack."""

from __future__ import annotations

import re

from kafka import KafkaProducer
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from learnloop.alerts import AlertSink
from learnloop.cli import app
from learnloop.drift import Alert
from learnloop.metrics import DriftMetrics
from tests.conftest import event, wait_for

runner = CliRunner()


def _env(settings) -> dict[str, str]:
    return {**settings.env(), "COLUMNS": "200"}


def test_status_shows_lag_per_partition_and_what_is_served(settings, producer, start_consumer,
                                                            redis_conn):
    for n in range(6):
        producer.send(settings.topic_interactions, key=f"u{n}".encode(),
                      value=event(n, user=f"u{n}"))
    producer.flush()
    before = runner.invoke(app, ["status"], env=_env(settings))
    assert before.exit_code == 0, before.output
    lags = [int(m) for m in re.findall(r"lag (\d+) messages", before.stdout)]
    assert len(lags) == settings.partitions and sum(lags) == 6  # nothing consumed yet
    start_consumer(settings)
    wait_for(lambda: redis_conn.hget("stats:interactions", "events") == b"6")
    after = runner.invoke(app, ["status"], env=_env(settings)).stdout
    assert re.findall(r"lag (\d+) messages", after) == ["0"] * settings.partitions
    assert f"serving {settings.champion}" in after


def test_drift_lists_published_alerts_newest_first(settings, redis_conn):
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    sink = AlertSink(redis_conn, producer, settings.topic_drift_alerts,
                     DriftMetrics(CollectorRegistry()), hold_s=1, stream_max=100)
    for n, signal in enumerate(("concept", "label")):
        sink.publish(Alert("logreg", signal, "ADWIN", 1_767_225_600.0 + n, f"0/{n}", 0.1, 0.4))
    producer.close()
    shown = runner.invoke(app, ["drift"], env=_env(settings)).stdout
    rows = [line for line in shown.splitlines() if "ADWIN" in line]
    assert len(rows) == 2 and "label" in rows[0] and "concept" in rows[1]
    assert "0.1000" in rows[0] and "0.4000" in rows[0]
