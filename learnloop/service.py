"""Running a consumer as a long-lived process: metrics endpoint, signals, clean stop."""

from __future__ import annotations

import logging
import signal
import threading

from prometheus_client import CollectorRegistry

from learnloop.connect import kafka_crcs_in_c, redis_client
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


def build_consumer(name: str, settings: Settings, registry: CollectorRegistry):
    """One of learnloop's consumers by name: ``interactions`` or ``learner``."""
    client = redis_client(settings)
    if name == "interactions":
        from consumers.interactions import InteractionsConsumer

        return InteractionsConsumer(settings, client, registry)
    if name == "learner":
        from consumers.learner import Learner
        from learnloop.checkpoints import checkpoint_store

        return Learner(settings, client, registry, checkpoint_store(settings, client))
    raise ValueError(f"no consumer named {name!r}")


def warn_if_crcs_in_python() -> None:
    """Say so in the log when kafka-python would check record CRCs in pure Python."""
    if not kafka_crcs_in_c():
        log.warning("kafka-python checks record CRCs in pure Python (about twice the "
                    "consumer's CPU): install learnloop's dependencies, or pip install crc32c")


def run_consumers(names: list[str], settings: Settings, stop: threading.Event) -> None:
    """Serve one ``/metrics`` and run the named consumers (threads) until ``stop`` is set."""
    warn_if_crcs_in_python()
    registry = CollectorRegistry()
    port = serve(registry, settings.metrics_host, settings.metrics_port)
    log.info("metrics on http://%s:%d/metrics", settings.metrics_host, port)
    consumers = [build_consumer(name, settings, registry) for name in names]
    errors: list[BaseException] = []

    def run(consumer) -> None:
        try:
            consumer.run(stop)
        except BaseException as exc:
            errors.append(exc)
            log.exception("consumer failed")
            stop.set()

    threads = [threading.Thread(target=run, args=(c,), daemon=True) for c in consumers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
