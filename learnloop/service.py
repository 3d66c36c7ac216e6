"""Running a consumer as a long-lived process: metrics endpoint, signals, clean stop."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry

from learnloop.connect import redis_client
from learnloop.metrics import serve
from learnloop.settings import Settings

log = logging.getLogger("learnloop")


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` so the loop finishes its batch and leaves the group."""

    def handler(signum: int, _frame: object) -> None:
        log.info("received %s, stopping after the current batch", signal.Signals(signum).name)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, handler)


def run_interactions(settings: Settings, stop: threading.Event,
                     on_ready: Callable[[int], None] | None = None) -> None:
    """Serve ``/metrics`` and run one interactions consumer until ``stop`` is set."""
    from consumers.interactions import InteractionsConsumer

    registry = CollectorRegistry()
    port = serve(registry, settings.metrics_host, settings.metrics_port)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    consumer = InteractionsConsumer(settings, redis_client(settings), registry)
    if on_ready:
        on_ready(port)
    consumer.run(stop)
