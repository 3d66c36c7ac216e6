"""Publishing drift alerts: the drift-alerts topic, a bounded Redis stream, Prometheus.

Each alert has an id (model, signal, where it was detected); it is published once even
if a restarted learner detects it again while replaying from its last checkpoint.
"""

from __future__ import annotations

import time

import orjson
import redis
from kafka import KafkaProducer

from learnloop.drift import Alert
from learnloop.metrics import DriftMetrics

STREAM = "drift:alerts"
_SENT_TTL_S = 30 * 86_400


class AlertSink:
    """Sends each alert once, and holds its Prometheus gauge up for ``hold_s`` seconds."""

    def __init__(self, client: redis.Redis, producer: KafkaProducer, topic: str,
                 metrics: DriftMetrics, hold_s: float, stream_max: int) -> None:
        self.client = client
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.hold_s = hold_s
        self.stream_max = stream_max
        self.active_until: dict[tuple[str, str], float] = {}

    def publish(self, alert: Alert) -> bool:
        """Publish ``alert`` unless it already was; True if it went out now.

        The "sent" marker is written last: a crash in between repeats the alert after
        the restart rather than losing it.
        """
        marker = f"drift:sent:{alert.alert_id}"
        if self.client.exists(marker):
            return False
        body = alert.as_dict()
        self.producer.send(self.topic, key=alert.model.encode(),
                           value=orjson.dumps(body)).get(timeout=30)
        self.client.xadd(STREAM, {k: str(v) for k, v in body.items()},
                         maxlen=self.stream_max, approximate=True)
        self.client.set(marker, 1, ex=_SENT_TTL_S)
        self.metrics.alerts.labels(alert.model, alert.signal).inc()
        self.metrics.active.labels(alert.model, alert.signal).set(1)
        self.active_until[(alert.model, alert.signal)] = time.monotonic() + self.hold_s
        return True

    def expire(self) -> None:
        """Lower the gauges whose hold time is over."""
        now = time.monotonic()
        for key, until in list(self.active_until.items()):
            if now >= until:
                self.metrics.active.labels(*key).set(0)
                del self.active_until[key]


def recent_alerts(client: redis.Redis, count: int = 20) -> list[dict]:
    """The newest alerts from the Redis stream, newest first."""
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in client.xrevrange(STREAM, count=count)]
