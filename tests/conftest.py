"""Fixtures: one real Tansu broker and redis-server for the session; fresh topics per test."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator

import orjson
import pytest
import redis
from kafka import KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from learnloop import examples
from learnloop.connect import ensure_topics, redis_client
from learnloop.embedded import EmbeddedStack
from learnloop.settings import Settings, load_settings


@pytest.fixture(scope="session")
def stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack() as embedded:
        yield embedded


@pytest.fixture
def redis_conn(stack: EmbeddedStack) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()
    yield client
    client.close()


def make_settings(stack: EmbeddedStack, **overrides: object) -> Settings:
    """Settings reaching the session stack, with topics and group unique to one test."""
    tag = uuid.uuid4().hex[:8]
    values = {
        "kafka_bootstrap": stack.kafka_bootstrap,
        "redis_url": SecretStr(stack.redis_url),
        "topic_interactions": f"{tag}-interactions",
        "topic_scores": f"{tag}-scores",
        "topic_dead_letters": f"{tag}-dead-letters",
        "topic_examples": f"{tag}-examples",
        "topic_drift_alerts": f"{tag}-drift-alerts",
        "consumer_group": f"{tag}-group",
        "learner_group": f"{tag}-learner",
        "partitions": 2,
        "metrics_port": 0,
        "max_poll_interval_ms": 3000,
        "session_timeout_ms": 6000,
        "poll_timeout_ms": 50,
        "checkpoint_key": SecretStr("test-checkpoint-key"),
        "model_reload_s": 0.2,
        "checkpoint_every_s": 0.5,
        **overrides,
    }
    settings = load_settings(**values)
    ensure_topics(settings)
    return settings


@pytest.fixture
def settings(stack: EmbeddedStack, redis_conn: redis.Redis) -> Settings:
    return make_settings(stack)


@pytest.fixture
def producer(stack: EmbeddedStack) -> Iterator[KafkaProducer]:
    """A plain kafka-python producer: raw bytes, nothing of learnloop's."""
    plain = KafkaProducer(bootstrap_servers=stack.kafka_bootstrap)
    yield plain
    plain.close()


class Running:
    """A learnloop consumer (anything with ``run(stop)``) on a background thread, with its
    own metrics registry; ``close()`` stops it and fails the test if it crashed."""

    def __init__(self, worker, registry: CollectorRegistry) -> None:
        self.worker = worker
        self.registry = registry
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run(self.stop)
        except BaseException as exc:  # surfaced by the test through .error
            self.error = exc

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(20)
        name = type(self.worker).__name__
        assert not self.thread.is_alive(), f"{name} did not stop"
        assert self.error is None, f"{name} crashed: {self.error!r}"


class RunningConsumer(Running):
    """An interactions consumer on a background thread, stopped at teardown."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        from consumers.interactions import InteractionsConsumer

        registry = CollectorRegistry()
        super().__init__(InteractionsConsumer(settings, client, registry), registry)

    @property
    def consumer(self):
        return self.worker


@pytest.fixture
def start_consumer(redis_conn: redis.Redis) -> Iterator[Callable[[Settings], RunningConsumer]]:
    running: list[RunningConsumer] = []

    def start(settings: Settings) -> RunningConsumer:
        client = redis_client(settings)  # as in production: retries with backoff
        running.append(RunningConsumer(settings, client))
        return running[-1]

    yield start
    for consumer in running:
        consumer.close()


def wait_for(condition: Callable[[], object], timeout_s: float = 30.0,
             what: str | Callable[[], str] = "") -> object:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``
    (``what`` says what was awaited; a callable is asked at that moment)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.02)
    what = what() if callable(what) else what
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what or condition}")


def read_topic(bootstrap: str, topic: str, expected: int, timeout_s: float = 20.0) -> list:
    """Read ``expected`` records from ``topic`` (all partitions, from the start)."""
    records = []
    for record in _records(bootstrap, topic, timeout_s):
        records.append(record)
        if len(records) >= expected:
            break
    return records


def read_examples(bootstrap: str, topic: str, expected: int,
                  timeout_s: float = 20.0) -> list[tuple[int, dict]]:
    """(partition, example) of the first ``expected`` examples on the examples ``topic``
    (several to a message: :mod:`learnloop.examples`)."""
    found = []
    for record in _records(bootstrap, topic, timeout_s):
        found += [(record.partition, example) for example in examples.unpack(record.value)]
        if len(found) >= expected:
            break
    return found


def _records(bootstrap: str, topic: str, timeout_s: float) -> Iterator:
    """``topic``'s records, all partitions from the start, until none came for ``timeout_s``."""
    reader = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
        enable_auto_commit=False, group_id=None, consumer_timeout_ms=int(timeout_s * 1000),
    )
    try:
        yield from reader
    finally:
        reader.close()


def event(n: int, type_: str = "impression", user: str = "u1", item: str = "i1",
          ts: float = 1_767_225_600.0, **extra: object) -> bytes:
    """Raw JSON bytes of a valid event, as a product would publish it."""
    body = {"event_id": f"e{n}", "ts": ts + n, "user_id": user, "item_id": item,
            "type": type_, **extra}
    return orjson.dumps(body)
