"""Static checks on the monitoring stack: Prometheus alert rules and Grafana provisioning.

No Docker engine and no Prometheus server: ``promtool`` (Debian's ``prometheus`` package,
installed by scripts/ensure-tools.sh) checks the config, the rules and runs the rules'
unit tests (deploy/prometheus/alerts.test.yml). Without promtool those tests are skipped.

Every ``learnloop_*`` metric an alert or a dashboard queries must be one learnloop
exports: the names are read from the quoted strings of learnloop/metrics.py, with the
suffixes prometheus_client adds (``_total`` for counters, ``_bucket``/``_sum``/``_count``
for histograms).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
PROMETHEUS_DIR = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS_DIR / "alerts.yml"
ALERTS_TEST = PROMETHEUS_DIR / "alerts.test.yml"
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "learnloop.json"
METRICS_PY = ROOT / "learnloop" / "metrics.py"
COMPOSE = ROOT / "docker-compose.yml"

# What prometheus_client exposes for a metric named NAME, by type (``_created`` is the
# creation time it adds to counters and histograms).
SUFFIXES = {
    "Counter": ("_total", "_created"),
    "Gauge": ("",),
    "Histogram": ("_bucket", "_sum", "_count", "_created"),
    "Summary": ("", "_sum", "_count", "_created"),
}
ANY_SUFFIX = tuple(sorted({s for suffixes in SUFFIXES.values() for s in suffixes}))

# The drift metrics are being added to learnloop/metrics.py (DriftMetrics) by the drift
# work; until they are there, count them as defined so the alerts and the dashboard can
# already use them. Remove once metrics.py always has them.
PENDING_METRICS = {"learnloop_drift_active": "Gauge", "learnloop_drift_alerts": "Counter"}

METRIC_IN_EXPR = re.compile(r"\blearnloop_[A-Za-z0-9_:]+")


# --- which metrics learnloop defines -----------------------------------------------------

_TYPES = "Counter|Gauge|Histogram|Summary"
# Counter("name", ...), Gauge(f"prefix_{x}", ...) or Gauge(variable, ...)
_CONSTRUCTOR = re.compile(rf"\b({_TYPES})\(\s*(?:(f?)\"([^\"]*)\"|([A-Za-z_]\w*))")
_QUOTED = re.compile(r"(f?)\"(learnloop_[^\"]*)\"")
_PLACEHOLDER = re.compile(r"\{(\w+)\}")


def _expand(template: str, source: str) -> str:
    """A regex for an f-string name: ``{name}`` becomes the values of the tuple that
    ``for name in (self.)TUPLE`` iterates over (or any word, if that is not found)."""
    pattern, last = "", 0
    for placeholder in _PLACEHOLDER.finditer(template):
        pattern += re.escape(template[last:placeholder.start()])
        loop = re.search(rf"\bfor {placeholder.group(1)} in (?:self\.)?(\w+)", source)
        values = None
        if loop:
            tuple_def = re.search(rf"\b{loop.group(1)}\s*=\s*\(([^)]*)\)", source)
            if tuple_def:
                values = re.findall(r"\"(\w+)\"", tuple_def.group(1))
        pattern += f"(?:{'|'.join(map(re.escape, values))})" if values else r"\w+"
        last = placeholder.end()
    return pattern + re.escape(template[last:])


def defined_metrics(source: str) -> dict[str, str]:
    """Name pattern (a regex) -> metric type, for every quoted ``learnloop_…`` string in
    ``source``; the type is ``"?"`` when no Counter/Gauge/… call could be tied to it."""
    typed: dict[str, str] = {}
    for kind, fstring, literal, variable in _CONSTRUCTOR.findall(source):
        if variable:  # name = "learnloop_…" then Gauge(name, …)
            assigned = re.search(rf"\b{variable}\s*=\s*\"(learnloop_\w+)\"", source)
            if assigned:
                typed[re.escape(assigned.group(1))] = kind
        elif literal.startswith("learnloop_"):
            typed[_expand(literal, source) if fstring else re.escape(literal)] = kind
    names: dict[str, str] = {}
    for fstring, literal in _QUOTED.findall(source):
        pattern = _expand(literal, source) if fstring else re.escape(literal)
        names[pattern] = typed.get(pattern, "?")
    for name, kind in PENDING_METRICS.items():
        names.setdefault(re.escape(name), kind)
    return names


def series_pattern(names: dict[str, str]) -> re.Pattern[str]:
    """One regex matching every series name the defined metrics expose."""
    alternatives = []
    for pattern, kind in names.items():
        suffixes = SUFFIXES.get(kind, ANY_SUFFIX)
        alternatives.append(f"{pattern}(?:{'|'.join(map(re.escape, suffixes))})")
    return re.compile(f"(?:{'|'.join(alternatives)})")


@pytest.fixture(scope="module")
def exported() -> re.Pattern[str]:
    return series_pattern(defined_metrics(METRICS_PY.read_text()))


def test_metric_names_are_read_from_metrics_py(exported):
    """The extractor itself: types and suffixes of metrics the README documents."""
    for series in ("learnloop_events_processed_total", "learnloop_events_rejected_total",
                   "learnloop_consumer_lag_offsets", "learnloop_label_delay_seconds_bucket",
                   "learnloop_model_logloss", "learnloop_model_lift",
                   "learnloop_learner_staleness_seconds", "learnloop_served_model_age_seconds",
                   "learnloop_drift_active", "learnloop_drift_alerts_total"):
        assert exported.fullmatch(series), series
    for wrong in ("learnloop_events_processed",          # a counter without _total
                  "learnloop_consumer_lag_offsets_total",  # a gauge with it
                  "learnloop_label_delay_seconds",        # a histogram's bare name
                  "learnloop_model_nonsense", "learnloop_drift_active_total"):
        assert not exported.fullmatch(wrong), wrong


# --- the expressions the rules and the dashboard query -----------------------------------

def _load_rules() -> list[dict]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def _dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def _dashboard_queries(node: object, where: str = "dashboard") -> list[tuple[str, str]]:
    """(where, PromQL) for every query of the dashboard: panel targets, annotations and
    template variables (keys expr, query, definition)."""
    found: list[tuple[str, str]] = []
    if isinstance(node, dict):
        title = node.get("title") or node.get("name") or where
        for key, value in node.items():
            if key in ("expr", "query", "definition") and isinstance(value, str):
                found.append((f"{title}: {key}", value))
            else:
                found.extend(_dashboard_queries(value, str(title)))
    elif isinstance(node, list):
        for item in node:
            found.extend(_dashboard_queries(item, where))
    return found


def _rule_queries() -> list[tuple[str, str]]:
    """(where, text) for every rule's expr and annotation (templates can query too)."""
    found = []
    for rule in _load_rules():
        name = rule.get("alert") or rule.get("record")
        found.append((f"{name}: expr", rule["expr"]))
        for key, text in (rule.get("annotations") or {}).items():
            found.append((f"{name}: {key}", text))
    return found


def test_rules_and_dashboard_use_only_exported_metrics(exported):
    queries = _rule_queries() + _dashboard_queries(_dashboard())
    used = {(where, name) for where, text in queries for name in METRIC_IN_EXPR.findall(text)}
    assert used, "no learnloop_ metric found in the rules and the dashboard?"
    unknown = sorted((where, name) for where, name in used if not exported.fullmatch(name))
    assert not unknown, f"not exported by learnloop/metrics.py: {unknown}"


# --- promtool ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not on PATH (bash scripts/ensure-tools.sh installs it)")
    return path


def _promtool(promtool: str, *args: str, cwd: Path = PROMETHEUS_DIR):
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120,
                          cwd=cwd)


def test_promtool_check_config(promtool):
    # rule_files resolve relative to prometheus.yml's directory, as in the container,
    # so the check works from anywhere and covers alerts.yml too.
    result = _promtool(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"),
                       cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "alerts.yml" in result.stdout + result.stderr, "rule_files not checked"


def test_promtool_check_rules(promtool):
    result = _promtool(promtool, "check", "rules", ALERTS.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_test_rules(promtool):
    result = _promtool(promtool, "test", "rules", ALERTS_TEST.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(promtool, tmp_path):
    """Each dashboard query, Grafana's variables filled in, as a recording rule that
    promtool parses."""
    def concrete(expr: str) -> str:
        expr = re.sub(r"\$__(rate_interval|interval|range)\b", "5m", expr)
        return re.sub(r"\$\{?\w+\}?", ".*", expr)  # template variables: in =~ matchers only

    queries = [(where, q) for where, q in _dashboard_queries(_dashboard())
               if not q.startswith("label_values(")]  # Grafana functions, not PromQL
    assert queries
    rules = [{"record": f"dashboard_query_{i}", "expr": concrete(q)}
             for i, (_where, q) in enumerate(queries)]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = _promtool(promtool, "check", "rules", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


# --- every alert is unit-tested ----------------------------------------------------------

def test_every_rule_has_a_firing_and_a_quiet_test_case():
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == [ALERTS.name]
    cases = [case for test in tests["tests"] for case in test.get("alert_rule_test", [])]
    fired = [(case["alertname"], alert.get("exp_labels") or {})
             for case in cases for alert in case.get("exp_alerts") or []]
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}

    rules = [rule for rule in _load_rules() if "alert" in rule]
    assert rules
    for rule in rules:
        # Two rules may share an alert name (two causes): a case must fire this one, i.e.
        # expect the rule's own labels (severity, cause…).
        labels = {k: str(v) for k, v in (rule.get("labels") or {}).items()}
        assert any(name == rule["alert"] and labels.items() <= {
            k: str(v) for k, v in exp.items()}.items() for name, exp in fired), (
            f"no test case in {ALERTS_TEST.name} fires {rule['alert']} {labels}")
        assert rule["alert"] in quiet, f"no case where {rule['alert']} must not fire"
        assert rule.get("for"), f"{rule['alert']}: no for: duration"
        assert {"summary", "description"} <= set(rule.get("annotations") or {}), rule["alert"]


# --- Grafana -----------------------------------------------------------------------------

def test_dashboard_json():
    dashboard = _dashboard()
    assert dashboard["uid"] and dashboard["title"]
    assert 36 <= dashboard["schemaVersion"] <= 41, dashboard["schemaVersion"]
    panels = dashboard["panels"]
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
    titles = " | ".join(panel["title"].lower() for panel in panels)
    for section in ("throughput", "lag", "staleness", "quality", "drift"):
        assert section in titles, section
    annotations = [a for a in dashboard["annotations"]["list"] if a.get("expr")]
    assert any("learnloop_drift_alerts_total" in a["expr"] for a in annotations)


def _datasource_uids(node: object) -> set[str]:
    uids: set[str] = set()
    if isinstance(node, dict):
        source = node.get("datasource")
        if isinstance(source, dict) and "uid" in source:
            uids.add(source["uid"])
        for value in node.values():
            uids |= _datasource_uids(value)
    elif isinstance(node, list):
        for item in node:
            uids |= _datasource_uids(item)
    return uids


def _grafana_mounts() -> dict[str, Path]:
    """Container path -> host path of the grafana service's bind mounts (all read-only)."""
    service = yaml.safe_load(COMPOSE.read_text())["services"]["grafana"]
    mounts = {}
    for volume in service["volumes"]:
        host, container, *mode = volume.split(":")
        if host.startswith("."):  # a bind mount, not a named volume
            assert mode == ["ro"], f"{volume}: mount provisioning read-only"
            mounts[container] = (COMPOSE.parent / host).resolve()
    return mounts


def test_grafana_provisioning_matches_compose():
    mounts = _grafana_mounts()
    provisioning = mounts["/etc/grafana/provisioning"]
    assert provisioning == (GRAFANA_DIR / "provisioning").resolve()

    # the data source every dashboard panel queries, at the compose prometheus service
    services = yaml.safe_load(COMPOSE.read_text())["services"]
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    by_uid = {source["uid"]: source for source in datasources["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus"
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert any(str(p).endswith("9090") for p in services["prometheus"]["ports"])
    assert _datasource_uids(_dashboard()) == {"prometheus"}

    # the file provider reads the folder compose mounts the dashboards into
    providers = yaml.safe_load((provisioning / "dashboards" / "learnloop.yml").read_text())
    for provider in providers["providers"]:
        assert provider["type"] == "file"
        folder = provider["options"]["path"]
        assert folder in mounts, f"{folder} is not mounted into grafana"
        assert (mounts[folder] / DASHBOARD.name).is_file(), mounts[folder]
        assert mounts[folder] == DASHBOARD.parent.resolve()

    home = services["grafana"].get("environment", {}).get(
        "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, name = home.rsplit("/", 1)
        assert (mounts[folder] / name).is_file(), home
