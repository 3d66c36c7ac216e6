"""The benchmark harness runs end to end in its quick mode and reports every section.

No performance threshold is checked here: the figures depend on the machine. Only that
each section is there, with positive numbers.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[1]

#: (section path, figure) that must be a positive number.
FIGURES = [
    (("throughput", "consumer"), "events_per_s"),
    (("throughput", "learner"), "examples_per_s"),
    (("efficiency", "consumer"), "ratio"),
    (("efficiency", "learner"), "ratio"),
    (("efficiency", "consumer", "reference"), "events_per_s"),
    (("efficiency", "learner", "reference"), "examples_per_s"),
    (("throughput", "consumer", "long_run", "cpu_us_per_event"), "redis"),
    (("throughput", "consumer", "long_run", "cpu_us_per_event"), "consumers"),
    (("peer",), "ratio"),
    (("peer",), "events_per_s"),
    (("floor",), "events_per_s"),
    (("floor",), "cpu_us_per_event"),
    (("floor",), "consumer_ratio"),
    (("freshness", "event_to_score"), "p50_ms"),
    (("freshness", "event_to_score"), "p95_ms"),
    (("freshness", "event_to_score"), "p99_ms"),
    (("freshness", "label_to_serving", "click_to_serving"), "p50_s"),
    (("freshness", "label_to_serving", "click_to_serving"), "p99_s"),
    (("scaling",), "ratio"),
    (("footprint",), "bytes_per_active_user"),
    (("footprint", "pending_exposure"), "bytes"),
    (("footprint", "rss"), "last_half_median_mib"),
    (("machine",), "cores"),
]


@pytest.mark.slow
def test_quick_bench_reports_every_section(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNLOOP_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench.py"), "--quick", "--out", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = orjson.loads(out.read_bytes())

    for section in ("machine", "throughput", "efficiency", "peer", "floor", "freshness", "scaling",
                    "footprint", "targets"):
        assert section in result, f"section {section!r} missing"
    for path, figure in FIGURES:
        where = result
        for part in path:
            where = where[part]
        value = where[figure]
        assert isinstance(value, int | float) and value > 0, f"{'.'.join(path)}.{figure}={value!r}"
    assert isinstance(result["footprint"]["rss"]["flat"], bool)
    floor = result["floor"]  # every event read, one message out per exposure (not clicks)
    assert floor["events"] == result["sizes"]["floor_events"]
    assert 0 < floor["sent"] < floor["events"]
    for key in ("cpu_model", "python", "river", "redis_py", "kafka_python", "redis_server"):
        assert result["machine"][key]
    assert {row["name"] for row in result["targets"]} >= {"consumer, one process", "learner"}
    assert all(row["met"] in (True, False) for row in result["targets"])
    assert "| consumer, one process |" in done.stdout


def _redis_cost(*args: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "redis_cost.py"), *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return orjson.loads(done.stdout.splitlines()[-1])


def test_redis_cost_runs_the_consumers_redis_steps_and_measures_a_replacement_script(
        tmp_path: Path) -> None:
    real = _redis_cost("--impressions", "8000", "--users", "2000", "--items", "500")
    assert real["events"] > 8000  # the impressions and their clicks
    assert real["examples"] > 0  # windows closed: the join ran
    assert real["keys"] > 2000
    assert 0 < real["batch_script_cpu_us_per_event"] <= real["redis_cpu_us_per_event"]
    assert real["python_us_per_event"] > 0 and real["redis_bytes_per_active_user"] > 0

    # a batch script that applies nothing: no features, snapshots, scores or examples
    noop = tmp_path / "noop.lua"
    noop.write_text("redis.call('SET', KEYS[1], '0')\nreturn '[-1,[]]'\n")
    empty = _redis_cost("--impressions", "1000", "--users", "200", "--items", "50",
                        "--lua", str(noop))
    assert empty["examples"] == 0
    assert empty["keys"] <= 2  # the watermark, and the score script's
