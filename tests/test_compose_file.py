"""Static checks on docker-compose.yml and the Prometheus config it mounts.
(The alert rules and Grafana's provisioning are checked in test_monitoring.py.)

No Docker engine needed: the files are parsed with PyYAML. If ``docker-compose``
is on PATH, one extra test asks it to validate the file too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from learnloop.embedded import REDIS_TUNING

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
CONSUMER_CMD = ["run", "interactions"]
METRICS_PORT = 9464


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _env(service: dict) -> dict[str, str]:
    """Compose allows environment as a mapping or as a list of KEY=VALUE."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(c) for c in cmd]


def _consumers(services: dict) -> dict[str, dict]:
    return {n: s for n, s in services.items() if _command(s) == CONSUMER_CMD}


def _learnloop_services(services: dict) -> dict[str, dict]:
    """Every service running a learnloop consumer (``learnloop run …``)."""
    return {n: s for n, s in services.items() if _command(s)[:1] == ["run"]}


def test_one_learner_with_a_required_checkpoint_key(services):
    learners = {n: s for n, s in services.items() if _command(s) == ["run", "learner"]}
    assert len(learners) == 1, sorted(learners)
    for svc in _learnloop_services(services).values():
        assert _env(svc)["LEARNLOOP_CHECKPOINT_KEY"].startswith("${LEARNLOOP_CHECKPOINT_KEY:?")


def test_kafka_kraft_without_auto_topic_creation(services):
    env = _env(services["kafka"])
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "false"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert "healthcheck" in services["kafka"]


def test_redis_uses_aof_and_never_evicts_all_keys(services):
    cmd = _command(services["redis"])
    assert cmd[0] == "redis-server"
    assert cmd[cmd.index("--appendonly") + 1] == "yes"
    policy = cmd[cmd.index("--maxmemory-policy") + 1]
    assert not policy.startswith("allkeys-"), policy
    assert "healthcheck" in services["redis"]
    for name, value in zip(REDIS_TUNING[::2], REDIS_TUNING[1::2], strict=True):
        assert cmd[cmd.index(name) + 1] == value, name  # as the embedded stack's Redis


def test_two_consumers_wired_to_kafka_and_redis(services):
    consumers = _consumers(services)
    assert len(consumers) == 2, sorted(consumers)
    for name, svc in consumers.items():
        env = _env(svc)
        assert env.get("LEARNLOOP_KAFKA_BOOTSTRAP"), name
        assert env.get("LEARNLOOP_REDIS_URL", "").startswith("redis://"), name
        assert env.get("LEARNLOOP_METRICS_HOST") == "0.0.0.0", name
        assert env.get("LEARNLOOP_METRICS_PORT") == str(METRICS_PORT), name
        deps = svc.get("depends_on")
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep in ("kafka", "redis"):
            assert deps[dep]["condition"] == "service_healthy", (name, dep)


def test_prometheus_scrapes_every_learnloop_service(services):
    mounts = [v for v in services["prometheus"]["volumes"] if isinstance(v, str)]
    config = next(m for m in mounts if m.split(":")[1] == "/etc/prometheus/prometheus.yml")
    path = ROOT / config.split(":")[0]
    assert path.is_file(), path

    prom = yaml.safe_load(path.read_text())
    default_interval = prom.get("global", {}).get("scrape_interval", "1m")
    targets: set[str] = set()
    for job in prom["scrape_configs"]:
        assert job.get("scrape_interval", default_interval) == "15s", job["job_name"]
        for static in job.get("static_configs", []):
            targets.update(static["targets"])
    for name in _learnloop_services(services):
        assert f"{name}:{METRICS_PORT}" in targets, (name, sorted(targets))


def _bind_mounts(service: dict) -> dict[str, Path]:
    """Container path -> host path of a service's bind mounts (``./host:/container[:ro]``)."""
    mounts = {}
    for volume in service.get("volumes", []):
        host, container, *_mode = volume.split(":")
        if host.startswith("."):
            mounts[container] = (ROOT / host).resolve()
    return mounts


def test_prometheus_mounts_its_rule_files(services):
    """rule_files resolve relative to the config's directory inside the container."""
    mounts = _bind_mounts(services["prometheus"])
    config = "/etc/prometheus/prometheus.yml"
    rule_files = yaml.safe_load(mounts[config].read_text()).get("rule_files") or []
    assert rule_files, "prometheus.yml loads no alert rules"
    for rule_file in rule_files:
        in_container = str(Path(config).parent / rule_file)
        assert in_container in mounts, f"{rule_file} is not mounted at {in_container}"
        assert mounts[in_container].is_file(), mounts[in_container]


def test_grafana_next_to_prometheus(services):
    grafana = services["grafana"]
    image, _, tag = grafana["image"].partition(":")
    assert image == "grafana/grafana" and tag and tag != "latest", grafana["image"]
    deps = grafana.get("depends_on")
    assert "prometheus" in deps, deps  # a list or a mapping of conditions
    assert "3000:3000" in [str(p) for p in grafana["ports"]]
    mounts = _bind_mounts(grafana)
    assert "/etc/grafana/provisioning" in mounts, sorted(mounts)
    for volume in grafana["volumes"]:
        if volume.startswith("."):
            assert volume.endswith(":ro"), volume


def test_docker_compose_config_is_valid():
    if shutil.which("docker-compose") is None:
        pytest.skip("docker-compose not on PATH")
    def config(**env: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), "config", "-q"],
            capture_output=True, text=True, timeout=60, env={**os.environ, **env},
        )

    result = config(LEARNLOOP_CHECKPOINT_KEY="a-secret")
    assert result.returncode == 0, result.stderr
    missing = config()  # the checkpoint key is required, never defaulted
    assert missing.returncode != 0 and "checkpoint key" in missing.stderr
