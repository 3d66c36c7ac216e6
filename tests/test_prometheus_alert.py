"""A real Prometheus scrapes a running learnloop; an injected drift fires the alert rule.

Debian's ``prometheus`` server (installed by scripts/ensure-tools.sh) evaluates the
production rule file, with only the drift rule's ``for:`` shortened so the test does
not wait a minute; its expression and labels are the production ones.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import urllib.request
from pathlib import Path

import orjson
import pytest
import yaml

from learnloop.embedded import _die_with_parent, free_port
from learnloop.objective import FeedbackRule, Objective
from learnloop.service import run_consumers
from tests.conftest import make_settings, wait_for

RULES = Path(__file__).resolve().parents[1] / "deploy" / "prometheus" / "alerts.yml"
T0 = 1_767_225_600.0


def rules_with_short_drift_wait(path: Path) -> None:
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == "LearnloopDriftDetected":
                rule["for"] = "0s"
    path.write_text(yaml.safe_dump(rules))


def start_prometheus(workdir: Path, target_port: int) -> tuple[subprocess.Popen, int]:
    rules_with_short_drift_wait(workdir / "alerts.yml")
    (workdir / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [{"job_name": "learnloop-learner",
                            "static_configs": [{"targets": [f"127.0.0.1:{target_port}"]}]}],
    }))
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("prometheus"), f"--config.file={workdir / 'prometheus.yml'}",
         f"--storage.tsdb.path={workdir / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=_die_with_parent,
    )
    return server, port


def firing(prometheus_port: int, alertname: str) -> list[dict]:
    url = f"http://127.0.0.1:{prometheus_port}/api/v1/alerts"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            alerts = json.load(response)["data"]["alerts"]
    except OSError:
        return []
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def shifting_clicks(producer, topic: str, n: int, shift_at: int) -> None:
    """Impressions a second apart; clicked 5% of the time, then 60% after ``shift_at``."""
    for i in range(n):
        user = f"u{i % 8}"
        impression = {"event_id": f"imp{i}", "ts": T0 + i, "user_id": user,
                      "item_id": f"i{i % 5}", "type": "impression"}
        producer.send(topic, key=user.encode(), value=orjson.dumps(impression))
        if (i % 20 == 0) if i < shift_at else (i % 10 < 6):
            click = {**impression, "event_id": f"clk{i}", "type": "click", "ts": T0 + i + 0.5,
                     "exposure_id": f"imp{i}"}
            producer.send(topic, key=user.encode(), value=orjson.dumps(click))
    producer.flush()


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="Debian's prometheus missing")
def test_injected_drift_fires_the_alert_rule_in_a_real_prometheus(stack, redis_conn, producer,
                                                                   tmp_path):
    metrics_port = free_port()
    settings = make_settings(stack, metrics_port=metrics_port, drift_hold_s=600, objectives={
        "clicks": Objective(feedback={"click": FeedbackRule(window_s=5)},
                            allowed_lateness_s=0)})
    stop = threading.Event()
    loop = threading.Thread(target=run_consumers, args=(["interactions", "learner"], settings,
                                                        stop), daemon=True)
    loop.start()
    server, prometheus_port = start_prometheus(tmp_path, metrics_port)
    try:
        assert not firing(prometheus_port, "LearnloopDriftDetected")
        shifting_clicks(producer, settings.topic_interactions, 3000, shift_at=1500)
        def label_drift() -> list[dict]:
            return [a for a in firing(prometheus_port, "LearnloopDriftDetected")
                    if a["labels"]["signal"] == "label"]

        (alert,) = wait_for(label_drift, 90, "LearnloopDriftDetected on the label rate")
        assert alert["labels"]["model"] == "objective:clicks"
        assert alert["labels"]["severity"] == "warning"
    finally:
        stop.set()
        loop.join(30)
        server.terminate()
        server.wait(10)
