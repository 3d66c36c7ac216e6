"""Redis killed and restarted mid-stream: consumers pause, retry with backoff, lose nothing."""

from __future__ import annotations

import signal
import subprocess

import pytest
import redis
from pydantic import SecretStr

from learnloop.embedded import _die_with_parent, free_port, redis_server_binary
from learnloop.features import watermark_key
from learnloop.scoring import scored_watermark_key
from tests.conftest import event, make_settings, wait_for
from tests.effects import assert_same_effects, redis_state

N = 400


class OwnRedis:
    """A redis-server with AOF (fsync always) on a fixed port and dir, restartable."""

    def __init__(self, workdir) -> None:
        self.port, self.workdir = free_port(), workdir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.workdir), "--appendonly", "yes", "--appendfsync", "always",
             "--save", ""],
            stdout=subprocess.DEVNULL, preexec_fn=_die_with_parent,
        )
        client = redis.Redis(port=self.port)
        wait_for(lambda: _answers(client), 10, "redis-server to answer")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"


def _answers(client: redis.Redis) -> bool:
    try:
        return client.ping()
    except redis.ConnectionError:
        return False


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()


def publish(producer, topic: str, start: int, stop: int) -> None:
    """Events ``start`` … ``stop`` - 1 of 7 users and 5 items, keyed by user."""
    for n in range(start, stop):
        user = f"u{n % 7}"
        producer.send(topic, key=user.encode(), value=event(n, user=user, item=f"i{n % 5}"))
    producer.flush()


def applied(client: redis.Redis) -> int:
    """Events applied so far (0 while Redis is down)."""
    try:
        return int(client.hget("stats:interactions", "events") or 0)
    except redis.ConnectionError:
        return 0


def test_a_redis_restart_mid_stream_loses_and_doubles_nothing(stack, own_redis, producer,
                                                              start_consumer):
    settings = make_settings(stack, redis_url=SecretStr(own_redis.url), redis_retry_s=30)
    client = redis.Redis.from_url(own_redis.url)
    running = start_consumer(settings)
    topic = settings.topic_interactions

    publish(producer, topic, 0, N // 2)
    wait_for(lambda: applied(client) >= N // 4, what="a first part applied")
    own_redis.kill()
    publish(producer, topic, N // 2, N)  # arrives while Redis is down
    own_redis.start()
    wait_for(lambda: applied(client) == N, 60, f"all {N} events applied")
    stats = {k.decode(): int(v) for k, v in client.hgetall("stats:interactions").items()}
    assert stats["events"] == stats["exposures"] == N
    assert stats.get("duplicates", 0) == 0
    pairs = len({(n % 7, n % 5) for n in range(N)})  # scores land just after the features
    wait_for(lambda: len(list(client.scan_iter(match=f"score:{settings.champion}:*"))) == pairs,
             30, f"a score for each of the {pairs} user-item pairs")
    assert running.error is None and running.thread.is_alive()

    # the oracle: the same events, undisturbed, into another database of the same server
    oracle = make_settings(stack, topic_interactions=settings.topic_interactions,
                           redis_url=SecretStr(own_redis.url[:-1] + "1"))
    oracle_client = redis.Redis.from_url(oracle.redis_url.get_secret_value())
    start_consumer(oracle)
    wait_for(lambda: applied(oracle_client) == N, 60, "the oracle run")
    wait_for(lambda: redis_state(oracle_client).keys() == redis_state(client).keys(), 30,
             "the oracle's scores")
    assert_same_effects(redis_state(oracle_client), redis_state(client), exact_items=False)


def test_a_redis_that_lost_writes_is_refused_and_replayed(stack, redis_conn, producer,
                                                          start_consumer):
    settings = make_settings(stack)
    running = start_consumer(settings)
    topic = settings.topic_interactions

    def scored_as_applied() -> bool:
        return all(redis_conn.get(scored_watermark_key(topic, p)) ==
                   redis_conn.get(watermark_key(topic, p)) is not None
                   for p in range(settings.partitions))

    publish(producer, topic, 0, N // 2)
    wait_for(lambda: applied(redis_conn) == N // 2 and scored_as_applied(), 60,
             "the first half applied")
    redis_conn.flushdb()  # Redis came back empty (no persistence): every write lost
    publish(producer, topic, N // 2, N)
    wait_for(lambda: applied(redis_conn) == N, 60, lambda: "everything applied again, once: "
             f"{redis_conn.hgetall('stats:interactions')}")
    assert running.sample("learnloop_redis_regressions_total") >= 1
    stats = {k.decode(): int(v) for k, v in redis_conn.hgetall("stats:interactions").items()}
    assert stats["events"] == stats["exposures"] == N and stats.get("duplicates", 0) == 0
