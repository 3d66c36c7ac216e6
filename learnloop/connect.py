"""Reaching Kafka and Redis: clients from settings, reachability checks, explicit topics."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator

import redis
from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError
from pydantic import SecretStr
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from learnloop.embedded import EmbeddedStack
from learnloop.errors import ConfigError, ServiceUnreachable, TopicMismatch
from learnloop.settings import Settings


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings.redis_url``, checked with PING (fails fast), that
    then rides out outages: every command retries with exponential backoff for about
    ``redis_retry_s`` seconds. learnloop's writes are idempotent, so a retry after a
    lost reply changes nothing."""
    if settings.redis_url is None:
        raise ConfigError("LEARNLOOP_REDIS_URL is not set")
    url = settings.redis_url.get_secret_value()
    _check_redis(redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=30))
    retries = max(1, int(settings.redis_retry_s / 2))  # backoff caps at 2 s a try
    return redis.Redis.from_url(
        url, socket_connect_timeout=5, socket_timeout=30,
        retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def _check_redis(client: redis.Redis) -> None:
    """Reachable, and not configured to evict keys it must keep."""
    try:
        client.ping()
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError:
        policy = ""  # CONFIG may be disabled (managed Redis): nothing to check
    except redis.RedisError as exc:
        where = client.connection_pool.connection_kwargs
        raise ServiceUnreachable(
            f"Redis at {where.get('host')}:{where.get('port')} does not answer: "
            f"{type(exc).__name__}"
        ) from None
    if policy.startswith("allkeys-"):
        raise ConfigError(
            f"Redis maxmemory-policy is {policy!r}: it could evict a watermark and break "
            "exactly-once; use noeviction (or a volatile-* policy)"
        )
    client.close()


def admin_client(settings: Settings) -> KafkaAdminClient:
    """A Kafka admin client for ``settings.kafka_bootstrap``, or a clear error."""
    if settings.kafka_bootstrap is None:
        raise ConfigError("LEARNLOOP_KAFKA_BOOTSTRAP is not set")
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000,
            client_id="learnloop-admin",
        )
    except KafkaError as exc:
        raise ServiceUnreachable(
            f"Kafka at {settings.kafka_bootstrap} does not answer: {type(exc).__name__}"
        ) from None


def consumer_options(settings: Settings, group: str, name: str) -> dict:
    """kafka-python consumer settings every learnloop consumer shares."""
    return {
        "bootstrap_servers": settings.kafka_bootstrap, "group_id": group,
        "client_id": f"learnloop-{name}", "enable_auto_commit": False,
        "auto_offset_reset": "earliest", "max_poll_records": settings.max_poll_records,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(settings.session_timeout_ms // 4, 500),
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
    }


def partition_counts(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition count of each existing topic among ``topics``."""
    existing = set(admin.list_topics())
    wanted = [t for t in topics if t in existing]
    if not wanted:
        return {}
    return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(wanted)}


def ensure_topics(settings: Settings) -> dict[str, int]:
    """Create learnloop's topics if missing; fail clearly if one has the wrong partitions.

    Auto-creation is never relied on: it differs between brokers and would create
    topics with the broker's default partition count.
    """
    admin = admin_client(settings)
    try:
        topics = list(settings.topic_names())
        counts = partition_counts(admin, topics)
        missing = [t for t in topics if t not in counts]
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a peer created it meanwhile
                admin.create_topics(
                    [NewTopic(t, settings.partitions, 1) for t in missing], timeout_ms=10_000
                )
            counts = partition_counts(admin, topics)
        wrong = {t: n for t, n in counts.items() if n != settings.partitions}
        if wrong:
            raise TopicMismatch(
                f"topics {wrong} exist with a partition count other than the configured "
                f"LEARNLOOP_PARTITIONS={settings.partitions}; fix the setting or the topics"
            )
        return counts
    finally:
        admin.close()


@contextlib.contextmanager
def running_stack(settings: Settings) -> Iterator[Settings]:
    """Yield settings that reach a live Kafka and Redis with learnloop's topics in place.

    With neither configured, an :class:`EmbeddedStack` is started and stopped on exit.
    With both configured, they are checked and used. One without the other is an error.
    """
    if settings.embedded:
        with EmbeddedStack() as stack:
            live = settings.model_copy(update=_stack_values(stack, settings))
            ensure_topics(live)
            yield live
        return
    if settings.kafka_bootstrap is None or settings.redis_url is None:
        raise ConfigError(
            "set both LEARNLOOP_KAFKA_BOOTSTRAP and LEARNLOOP_REDIS_URL, "
            "or neither to use the embedded stack"
        )
    redis_client(settings).close()
    ensure_topics(settings)
    yield settings


def _stack_values(stack: EmbeddedStack, settings: Settings) -> dict:
    key = settings.checkpoint_key or SecretStr(secrets.token_hex(32))
    return {"kafka_bootstrap": stack.kafka_bootstrap, "redis_url": SecretStr(stack.redis_url),
            "checkpoint_key": key}
