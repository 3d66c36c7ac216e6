"""Locked doors: Kafka SASL / TLS options on every client, a loopback-only metrics
endpoint whose labels carry no ids or values, and no secret in logs, errors or CLI output."""

from __future__ import annotations

import ast
import logging
import socket
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from consumers.learner import Learner
from learnloop.checkpoints import checkpoint_store
from learnloop.connect import admin_client, consumer_options, kafka_security, redis_client
from learnloop.errors import ConfigError, ServiceUnreachable
from learnloop.metrics import serve
from learnloop.settings import load_settings
from tests.conftest import Running, event, make_settings, wait_for

ROOT = Path(__file__).resolve().parent.parent
SASL_PASSWORD = "sasl-Pw-9d41c0"
REDIS_PASSWORD = "redis-Pw-4be7a2"
CHECKPOINT_KEY = "ckpt-Key-e5a0c3"
SECRETS = (SASL_PASSWORD, REDIS_PASSWORD, CHECKPOINT_KEY)


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets in output: {leaked}"


# -- Kafka SASL and TLS: options --------------------------------------------------------------

def test_kafka_security_options_are_kafka_pythons_and_reach_consumers(tmp_path):
    files = {name: tmp_path / f"{name}.pem" for name in ("ca", "cert", "key")}
    for path in files.values():
        path.write_text("-----BEGIN CERTIFICATE-----\n")
    settings = load_settings(
        kafka_security_protocol="SASL_SSL", kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="svc-learnloop", kafka_sasl_password=SASL_PASSWORD,
        kafka_ssl_cafile=files["ca"], kafka_ssl_certfile=files["cert"],
        kafka_ssl_keyfile=files["key"])
    options = kafka_security(settings)
    assert options == {
        "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc-learnloop", "sasl_plain_password": SASL_PASSWORD,
        "ssl_cafile": str(files["ca"]), "ssl_certfile": str(files["cert"]),
        "ssl_keyfile": str(files["key"])}
    for client in (KafkaProducer, KafkaConsumer, KafkaAdminClient):
        assert set(options) <= set(client.DEFAULT_CONFIG), client.__name__
    assert consumer_options(settings, "group", "name").items() >= options.items()
    assert kafka_security(load_settings()) == {"security_protocol": "PLAINTEXT"}
    assert SASL_PASSWORD not in repr(settings)


@pytest.mark.parametrize("overrides, message", [
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN",
      "kafka_sasl_password": SASL_PASSWORD}, "SASL_SSL needs kafka_sasl_username"),
    ({"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "svc",
      "kafka_sasl_password": SASL_PASSWORD}, "needs kafka_sasl_mechanism"),
    ({"kafka_sasl_mechanism": "SCRAM-SHA-256", "kafka_sasl_username": "svc",
      "kafka_sasl_password": SASL_PASSWORD}, "need kafka_security_protocol SASL_PLAINTEXT"),
    ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "GSSAPI",
      "kafka_sasl_username": "svc", "kafka_sasl_password": SASL_PASSWORD},
     "kafka_sasl_mechanism: Input should be"),
    ({"kafka_ssl_cafile": __file__}, "need kafka_security_protocol SSL or SASL_SSL"),
    ({"kafka_security_protocol": "SSL", "kafka_ssl_cafile": "/no/such/ca.pem"},
     "kafka_ssl_cafile: Path does not point to a file"),
    ({"redis_url": f"redis://:{REDIS_PASSWORD}@db:6379/0", "redis_ssl_ca_certs": __file__},
     "need a rediss:// redis_url"),
])
def test_inconsistent_security_settings_are_refused_without_their_values(overrides, message):
    with pytest.raises(ConfigError, match=message) as caught:
        load_settings(checkpoint_key=CHECKPOINT_KEY, **overrides)
    assert_no_secret(str(caught.value))


def _project_calls() -> list[tuple[str, ast.Call]]:
    """Every call in learnloop's own code: the package, consumers, models and scripts."""
    calls = []
    for folder in ("learnloop", "consumers", "models", "scripts"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            where = str(path.relative_to(ROOT))
            calls += [(where, node) for node in ast.walk(tree) if isinstance(node, ast.Call)]
    return calls


def _called(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def test_every_kafka_client_in_the_project_is_built_with_the_security_options():
    clients = [(where, call) for where, call in _project_calls()
               if _called(call) in {"KafkaProducer", "KafkaConsumer", "KafkaAdminClient"}]
    unsecured = [f"{where}:{call.lineno}" for where, call in clients
                 if not any(kw.arg is None and isinstance(kw.value, ast.Call)
                            and _called(kw.value) in {"kafka_security", "consumer_options"}
                            for kw in call.keywords)]
    assert len(clients) >= 10  # the scan does find them
    assert not unsecured, f"built without **kafka_security(settings): {unsecured}"


def test_every_redis_connection_in_the_project_is_made_by_redis_client():
    direct = [f"{where}:{call.lineno}" for where, call in _project_calls()
              if where != "learnloop/connect.py"
              and _called(call) in {"Redis", "StrictRedis", "from_url", "ConnectionPool"}]
    assert not direct, f"Redis connections outside connect.redis_client: {direct}"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_against_the_embedded_plaintext_broker_fails_clearly_in_bounded_time(
        stack, caplog, mechanism):
    """The embedded broker runs without authentication: it answers the SASL handshake
    with UNSUPPORTED_SASL_MECHANISM (proof the options reached kafka-python and it spoke
    SASL). learnloop gives up after the timeout with the identity it used — never the
    password, not even in kafka-python's DEBUG log (which prints it, so it is capped)."""
    caplog.set_level(logging.DEBUG)
    settings = load_settings(
        kafka_bootstrap=stack.kafka_bootstrap, kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism=mechanism, kafka_sasl_username="svc-learnloop",
        kafka_sasl_password=SASL_PASSWORD)
    started = time.monotonic()
    with pytest.raises(ServiceUnreachable, match=f"SASL {mechanism} as 'svc-learnloop'") as e:
        admin_client(settings, timeout_ms=2000)
    assert time.monotonic() - started < 10
    assert "UnsupportedSaslMechanism" in caplog.text
    assert_no_secret(str(e.value) + caplog.text)


# -- metrics ------------------------------------------------------------------------------------

def _listening_on(port: int) -> set[str]:
    """IPv4 addresses with a listening TCP socket on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def _non_loopback_address() -> str | None:
    """This machine's IPv4 address on its default route (no packet is sent), if any."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.254", 9))
            address = probe.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


def _reachable(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=2).close()
        return True
    except OSError:
        return False


def test_metrics_endpoint_listens_on_loopback_only_by_default():
    host = load_settings().metrics_host
    port = serve(CollectorRegistry(), host, 0)
    assert _listening_on(port) == {"127.0.0.1"}
    assert urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).status == 200
    address = _non_loopback_address()
    if address is None:
        return  # no other interface to try from; the bound address was checked above
    assert not _reachable(address, port)
    exposed, _thread = start_http_server(0, addr="0.0.0.0", registry=CollectorRegistry())
    try:  # the same check sees a server bound to every interface
        assert _reachable(address, exposed.server_port)
    finally:
        exposed.shutdown()
        exposed.server_close()


def _scrape(*registries: CollectorRegistry) -> tuple[str, set]:
    """The exposition text of ``registries`` and its series (name and labels)."""
    text = "".join(generate_latest(registry).decode() for registry in registries)
    series = {(sample.name, tuple(sorted(sample.labels.items())))
              for family in text_string_to_metric_families(text) for sample in family.samples}
    return text, series


def _send_users(producer, settings, first: int, last: int) -> None:
    """An impression with distinctive ids and context, and its click, per user."""
    for n in range(first, last):
        user, item = f"user-SECRET-{n}", f"item-SECRET-{n}"
        context = {"price": 4242.4242, "tag": f"ctx-SECRET-{n}"}
        producer.send(settings.topic_interactions, key=user.encode(),
                      value=event(2 * n, user=user, item=item, context=context))
        producer.send(settings.topic_interactions, key=user.encode(),
                      value=event(2 * n + 1, "click", user, item, exposure_id=f"e{2 * n}"))
    producer.flush()


def _settle(consumer: Running, learner: Running, store, settings, users: int) -> None:
    """Every event applied, every click learned and checkpointed, the checkpoint served
    and its model metrics out."""
    wait_for(lambda: consumer.sample("learnloop_events_processed_total") == 2 * users,
             what=f"{2 * users} events applied")
    wait_for(lambda: store.meta(store.latest_version() or 0).get("examples") == users,
             what=f"a checkpoint of {users} examples")
    version = store.latest_version()
    wait_for(lambda: consumer.sample("learnloop_served_model_version",
                                     model=settings.champion) >= version,
             what=f"the scorer to serve checkpoint {version}")
    wait_for(lambda: all(learner.registry.get_sample_value(
        "learnloop_model_logloss", {"model": model, "window": "all"}) is not None
        for model in settings.models), what="the model metrics of that checkpoint")


def test_scrape_shows_no_id_or_value_and_series_do_not_grow_with_users(
        stack, redis_conn, producer, start_consumer):
    """Label values come from configuration only (topics, partitions, models, objectives,
    reasons, buckets), so 10x the users gives exactly the same series. Drift detectors
    are made deaf here: an alert adds its own (model, signal) series, bounded by models x
    (2 + drift_max_features), whatever the number of users."""
    settings = make_settings(stack, drift_detector="PageHinkley",
                             drift_params={"threshold": 1e12})
    consumer = start_consumer(settings)
    client = redis_client(settings)
    registry, store = CollectorRegistry(), checkpoint_store(settings, client)
    learner = Running(Learner(settings, client, registry, store), registry)
    try:
        _send_users(producer, settings, 0, 20)
        _settle(consumer, learner, store, settings, 20)
        text_20, series_20 = _scrape(consumer.registry, registry)
        _send_users(producer, settings, 20, 200)
        _settle(consumer, learner, store, settings, 200)
        text_200, series_200 = _scrape(consumer.registry, registry)
    finally:
        learner.close()
    assert series_200 == series_20  # 10x the users, not one series more
    names = {name for name, _labels in series_20}
    assert {"learnloop_consumer_lag_offsets", "learnloop_model_logloss"} <= names  # both read
    values = {value for _name, labels in series_200 for _label, value in labels}
    event_ids = {f"e{n}" for n in range(400)}
    assert not [v for v in values if "SECRET" in v or "4242" in v or v in event_ids]
    assert "SECRET" not in text_20 + text_200 and "4242.4242" not in text_20 + text_200
    assert any(name == "learnloop_features_clipped_total" for name, _ in series_200)  # 4242
