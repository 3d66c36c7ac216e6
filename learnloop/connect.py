"""Reaching Kafka and Redis: clients from settings, reachability checks, explicit topics.

Every Redis connection is made by :func:`redis_client` and every kafka-python client is
built with :func:`kafka_security`, so credentials and TLS are configured in one place.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
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
from learnloop.errors import AccessDenied, ConfigError, ServiceUnreachable, TopicMismatch
from learnloop.settings import Settings

log = logging.getLogger("learnloop.connect")

#: The key families learnloop reads and writes, and the commands it sends (its Lua
#: scripts' commands included: Redis checks those against the ACL too). CONFIG is left
#: out on purpose: CONFIG GET can read ``requirepass``. See :func:`redis_acl_rules`.
REDIS_KEY_PATTERNS = (
    "wm:*", "etw:*", "stats:*", "outbox:*",  # watermarks, counters, example outboxes
    "fu:*", "fi:*", "fui:*", "snap:*", "dedup:*",  # features, snapshots, de-duplication
    "seen:*",  # de-duplication markers of versions before dedup:, read while they last
    "pend:*", "pendu:*", "due:*",  # the join's pending exposures
    "score:*", "top:*", "ckpt:*", "model:*",  # scores, checkpoints, model metrics
    "serving", "serving:*", "drift:*",  # champion, promotions, drift alerts
)
REDIS_COMMANDS = (
    "ping", "select", "get", "set", "incrby", "del", "exists", "expire", "scan",
    "hget", "hset", "hsetnx", "hdel", "hgetall", "hincrby",
    "rpush", "lpos", "lrange", "ltrim",
    "zadd", "zrem", "zrevrange", "zrangebyscore", "zrevrangebyscore", "zremrangebyrank",
    "xadd", "xrevrange", "multi", "exec", "discard",
    "evalsha", "script|load", "script|exists",
)


def redis_acl_rules() -> list[str]:
    """ACL rules for learnloop's Redis user: its key patterns and commands, nothing else
    (``ACL SETUSER <user> on ><password> <rules>``)."""
    return [*(f"~{pattern}" for pattern in REDIS_KEY_PATTERNS), "resetchannels", "-@all",
            *(f"+{command}" for command in REDIS_COMMANDS)]


def redis_tls(settings: Settings) -> dict[str, str]:
    """redis-py's TLS options: the CA file and client certificate and key that are set."""
    files = {"ssl_ca_certs": settings.redis_ssl_ca_certs,
             "ssl_certfile": settings.redis_ssl_certfile,
             "ssl_keyfile": settings.redis_ssl_keyfile}
    return {name: str(path) for name, path in files.items() if path is not None}


def redis_client(settings: Settings) -> redis.Redis:
    """A Redis client for ``settings.redis_url`` (AUTH / ACL credentials in the URL, TLS
    with ``rediss://``), checked with PING (fails fast), that then rides out outages:
    every command retries with exponential backoff for about ``redis_retry_s`` seconds.
    learnloop's writes are idempotent, so a retry after a lost reply changes nothing."""
    if settings.redis_url is None:
        raise ConfigError("LEARNLOOP_REDIS_URL is not set")
    url = settings.redis_url.get_secret_value()
    options = {"socket_connect_timeout": 5, "socket_timeout": 30, **redis_tls(settings)}
    _check_redis(redis.Redis.from_url(url, **options))
    retries = max(1, int(settings.redis_retry_s / 2))  # backoff caps at 2 s a try
    return redis.Redis.from_url(
        url, **options, retry=Retry(ExponentialBackoff(cap=2.0, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
    )


def _check_redis(client: redis.Redis) -> None:
    """Reachable, credentials accepted, and not configured to evict keys it must keep."""
    kwargs = client.connection_pool.connection_kwargs
    where, password = f"{kwargs.get('host')}:{kwargs.get('port')}", kwargs.get("password")
    try:
        client.ping()
    except redis.AuthenticationError as exc:  # wrong password, unknown or disabled user
        raise AccessDenied(f"Redis at {where} refused the user and password of "
                           f"LEARNLOOP_REDIS_URL: {_reason(exc, password)}") from None
    except redis.ResponseError as exc:  # NOPERM: an ACL user that may not even PING
        raise AccessDenied(f"Redis at {where} refused PING: {_reason(exc, password)}") from None
    except redis.RedisError as exc:
        raise ServiceUnreachable(
            f"Redis at {where} does not answer: {_reason(exc, password)}") from None
    policy = _eviction_policy(client, where)
    if policy.startswith("allkeys-"):
        raise ConfigError(
            f"Redis maxmemory-policy is {policy!r}: it could evict a watermark and break "
            "exactly-once; use noeviction (or a volatile-* policy)"
        )
    client.close()


def _eviction_policy(client: redis.Redis, where: str) -> str:
    """Redis' maxmemory-policy, or "" when CONFIG GET is refused (an ACL user without it,
    a managed Redis): the check is then skipped, with a warning."""
    try:
        return client.config_get("maxmemory-policy").get("maxmemory-policy", "")
    except redis.ResponseError as exc:
        log.warning("cannot check the maxmemory-policy of Redis at %s (%s): make sure it is "
                    "noeviction or volatile-*, as an allkeys-* policy could evict a "
                    "watermark", where, _reason(exc, None))
        return ""


def _reason(exc: Exception, secret: str | None) -> str:
    """An exception's type and first line, ``secret`` masked should a library quote it."""
    text = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
    return text.replace(secret, "***") if secret else text


def kafka_security(settings: Settings) -> dict:
    """kafka-python's authentication and TLS options. Every producer, consumer and admin
    client learnloop builds gets them (``KafkaProducer(..., **kafka_security(settings))``).
    """
    _quiet_kafka_debug()
    options: dict[str, object] = {"security_protocol": settings.kafka_security_protocol}
    if settings.kafka_sasl_mechanism is not None:  # the settings ensure user and password
        options |= {"sasl_mechanism": settings.kafka_sasl_mechanism,
                    "sasl_plain_username": settings.kafka_sasl_username,
                    "sasl_plain_password": settings.kafka_sasl_password.get_secret_value()}
    files = {"ssl_cafile": settings.kafka_ssl_cafile, "ssl_certfile": settings.kafka_ssl_certfile,
             "ssl_keyfile": settings.kafka_ssl_keyfile}
    return options | {name: str(path) for name, path in files.items() if path is not None}


def _quiet_kafka_debug() -> None:
    """kafka-python logs its configuration (the SASL password in it) and the bytes it sends
    (PLAIN's password in them) at DEBUG: its loggers are kept at INFO or above."""
    kafka_log = logging.getLogger("kafka")
    if kafka_log.level < logging.INFO:  # NOTSET included
        kafka_log.setLevel(logging.INFO)


def _kafka_identity(settings: Settings) -> str:
    """How learnloop presents itself to Kafka (never the password), for error messages."""
    identity = settings.kafka_security_protocol
    if settings.kafka_sasl_mechanism is not None:
        identity += f", SASL {settings.kafka_sasl_mechanism} as {settings.kafka_sasl_username!r}"
    return identity


def admin_client(settings: Settings, timeout_ms: int = 30_000) -> KafkaAdminClient:
    """A Kafka admin client for ``settings.kafka_bootstrap``, or a clear error after
    ``timeout_ms`` (to kafka-python a refused login looks like an unreachable broker)."""
    if settings.kafka_bootstrap is None:
        raise ConfigError("LEARNLOOP_KAFKA_BOOTSTRAP is not set")
    try:
        return KafkaAdminClient(
            bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=10_000,
            bootstrap_timeout_ms=timeout_ms, client_id="learnloop-admin",
            **kafka_security(settings),
        )
    except KafkaError as exc:
        raise ServiceUnreachable(
            f"Kafka at {settings.kafka_bootstrap} does not answer ({_kafka_identity(settings)})"
            f": {type(exc).__name__}; check the address, LEARNLOOP_KAFKA_SECURITY_PROTOCOL "
            "and the SASL / TLS settings"
        ) from None


def kafka_crcs_in_c() -> bool:
    """Whether kafka-python checks and writes record CRCs with the ``crc32c`` C extension
    (a core dependency, ``kafka-python[crc32c]``); in pure Python they cost the
    interactions consumer about as much CPU again as everything else it does."""
    return importlib.util.find_spec("crc32c") is not None  # kafka-python's test too


def consumer_options(settings: Settings, group: str, name: str) -> dict:
    """kafka-python consumer settings every learnloop consumer shares."""
    return {
        **kafka_security(settings),
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
