"""The README's first command, in a short mode: the whole loop, with a drift, on the
session's stack (so Redis can be read after the demo), checked against Redis."""

from __future__ import annotations

import io
import math
import struct

import pytest
import redis
from rich.console import Console

from learnloop.alerts import recent_alerts
from learnloop.demo import BAD_EVERY, DemoResult, models_table, run_demo
from learnloop.evaluation import ProgressiveScore
from learnloop.reader import read_model_metrics
from learnloop.settings import load_settings
from tests.conftest import make_settings

slow = pytest.mark.slow
IMPRESSIONS = 3000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def short_demo(stack, tmp_path_factory) -> tuple[DemoResult, str, redis.Redis]:
    """One short demo (drift at a third of the way); its result, what it printed, Redis."""
    client = redis.Redis.from_url(stack.redis_url)
    client.flushdb()  # the demo's counters are the stack's own
    out = io.StringIO()
    result = run_demo(make_settings(stack, partitions=1), users=300, items=60,
                      impressions=IMPRESSIONS, consumers=1, drift_at=IMPRESSIONS // 3,
                      chart=tmp_path_factory.mktemp("demo") / "chart.png",
                      console=Console(file=out, width=200))
    yield result, out.getvalue(), client
    client.close()


def table_row(text: str, label: str) -> str:
    """The first line of ``text`` that starts with ``label`` (a table's row)."""
    return next(line for line in text.splitlines() if line.strip().startswith(f"{label} "))


def summary_row(printed: str, label: str) -> str:
    """The row of the final summary's table that starts with ``label``."""
    return table_row(printed[printed.index("messages in"):], label)


@slow
def test_every_message_is_accounted_for_and_every_model_learns_every_example(short_demo):
    result, printed, _ = short_demo
    progress = result.progress
    assert progress.malformed == progress.published // BAD_EVERY > 0
    assert progress.rejected == progress.malformed
    assert progress.accounted == progress.published + progress.malformed
    assert progress.exposures == IMPRESSIONS
    assert 0 < progress.positives < progress.examples <= IMPRESSIONS
    assert progress.learned == progress.examples
    assert f"{progress.examples:,} labeled examples" in printed
    assert "Top items of u0" in printed


@slow
def test_the_summary_shows_the_metrics_the_learner_wrote_to_redis(short_demo):
    result, printed, client = short_demo
    for name in ("item_ctr", "logreg"):
        stored = read_model_metrics(client, name)
        assert result.models[name] == stored
        assert stored["examples"] == result.progress.examples
        row = summary_row(printed, name)
        for key in ("logloss", "recent_logloss", "roc_auc", "recent_roc_auc", "lift"):
            assert f"{stored[key]:.4f}" in row, (name, key, row)
        assert f"{int(stored['examples']):,}" in row
    assert {a["id"] for a in result.alerts} == {a["id"] for a in recent_alerts(client, 1000)}


@slow
def test_the_oracle_scores_the_same_examples_and_beats_every_model(short_demo):
    """The oracle predicts the true probabilities, so its log loss is the lowest in
    expectation; here by about 0.1 nats, some ten standard errors of the per-example
    difference at this size (measured on the simulated stream), so no tolerance."""
    result, printed, _ = short_demo
    oracle = result.oracle
    assert oracle["examples"] == result.progress.examples
    for name, metrics in result.models.items():
        assert oracle["logloss"] < metrics["logloss"], name
        assert oracle["roc_auc"] > metrics["roc_auc"], name
    row = summary_row(printed, "oracle")
    assert f"{oracle['logloss']:.4f}" in row and f"{oracle['recent_logloss']:.4f}" in row
    assert 0 < result.drift_example < result.progress.examples


@slow
def test_the_chart_is_a_png_of_a_sensible_size(short_demo):
    result, printed, _ = short_demo
    data = result.chart.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    length, kind = struct.unpack(">I4s", data[8:16])
    assert (length, kind) == (13, b"IHDR")
    width, height = struct.unpack(">II", data[16:24])
    assert 600 <= width <= 4000 and 400 <= height <= 4000
    assert str(result.chart.resolve()) in printed.replace("\n", "")


def render(table) -> str:
    console = Console(file=io.StringIO(), width=120)
    console.print(table)
    return console.file.getvalue()


def test_the_models_table_shows_dashes_until_a_model_has_examples():
    settings, oracle = load_settings(), ProgressiveScore(10)
    metrics = {"logreg": {"examples": 12.0, "logloss": 0.25, "recent_logloss": 0.2,
                          "roc_auc": 0.7, "recent_roc_auc": 0.65, "lift": 0.125}}
    before = render(models_table(metrics, oracle.report(), settings))
    assert table_row(before, "item_ctr").split() == ["item_ctr", "(baseline)", "0", *"-----"]
    assert table_row(before, "oracle").split() == ["oracle", "(truth)", "0", *"-----"]
    assert table_row(before, "logreg").split() == [
        "logreg", "12", "0.2500", "0.2000", "0.7000", "0.6500", "0.1250"]
    oracle.update(True, 0.9)
    after = render(models_table(metrics, oracle.report(), settings))
    assert table_row(after, "oracle").split()[2:4] == ["1", f"{-math.log(0.9):.4f}"]
