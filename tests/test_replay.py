"""``learnloop replay``: recorded events through the live join and learner, deterministic,
from JSON lines or mapped CSV, bad lines counted by number — and learning exactly what
the live consumer and learner learn from the same events."""

from __future__ import annotations

import csv
from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from learnloop.cli import app
from learnloop.errors import ConfigError
from learnloop.replay.engine import ReplayResult, replay, replay_settings
from learnloop.replay.report import write_report
from learnloop.replay.sources import CsvMapping, csv_records, read_records
from learnloop.settings import load_settings
from tests.test_learner import QUICK, learning, logreg_params, quick_settings, simulated_events

IMPRESSIONS = 600
CSV_COLUMNS = {"event_id": "id", "ts": "time", "user_id": "uid", "item_id": "product",
               "type": "event", "exposure_id": "answers", "context.position": "pos"}
CSV_TYPES = {"impression": "view", "click": "tap", "add_to_cart": "basket"}


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def write_csv(path: Path, events: list[dict]) -> Path:
    """The events as a product's CSV export: its own column names and type values."""
    with path.open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_COLUMNS.values())
        for e in events:
            flat = {**e, "type": CSV_TYPES[e["type"]],
                    "context.position": e.get("context", {}).get("position", "")}
            out.writerow([flat.get(field, "") for field in CSV_COLUMNS])
    return path


def run(path: Path, mapping: CsvMapping | None = None) -> ReplayResult:
    settings = replay_settings(objectives=QUICK)
    return replay(read_records(path, "csv" if mapping else None, mapping), settings, path.name)


def same_learning(a: ReplayResult, b: ReplayResult, same_offsets: bool = True) -> None:
    """The same examples learned (from the same offsets: the learner's digest), the same
    metrics, the same logreg parameters."""
    assert a.state.examples == b.state.examples > 0
    assert a.state.digest == b.state.digest or not same_offsets
    assert a.reports() == b.reports()
    assert logreg_params(a.state) == logreg_params(b.state)


@pytest.fixture(scope="module")
def events() -> list[dict]:
    return simulated_events(IMPRESSIONS, seed=5)


@pytest.fixture(scope="module")
def clean(events, tmp_path_factory) -> ReplayResult:
    path = write_jsonl(tmp_path_factory.mktemp("clean") / "events.jsonl",
                       [orjson.dumps(e) for e in events])
    return run(path)


def test_two_replays_write_identical_reports(events, clean, tmp_path):
    again = run(write_jsonl(tmp_path / "events.jsonl", [orjson.dumps(e) for e in events]))
    same_learning(clean, again)
    assert clean.curves == again.curves and clean.tally == again.tally
    first = write_report(clean, tmp_path / "first")
    second = write_report(again, tmp_path / "second")
    files = sorted(p.name for p in first.parent.iterdir())
    assert files == ["replay-calibration.png", "replay-learning-curve.png", "replay.md"]
    for name in files:
        assert (first.parent / name).read_bytes() == (second.parent / name).read_bytes(), name
    png = (first.parent / "replay-learning-curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and b"Software" not in png
    text = first.read_text()
    assert str(tmp_path) not in text and "| logreg | ctr | 600 |" in text


def test_a_csv_export_replays_like_the_jsonl(events, clean, tmp_path):
    mapping = CsvMapping.parse(",".join(f"{k}={v}" for k, v in CSV_COLUMNS.items()),
                               types=",".join(f"{v}={k}" for k, v in CSV_TYPES.items()))
    same_learning(clean, run(write_csv(tmp_path / "export.csv", events), mapping))


def test_a_wrongly_mapped_csv_would_learn_something_else(events, clean, tmp_path):
    """The comparison above can fail: swap two columns and the learning differs."""
    swapped = CsvMapping.parse(",".join(f"{k}={v}" for k, v in CSV_COLUMNS.items()),
                               types=",".join(f"{v}={k}" for k, v in CSV_TYPES.items()))
    swapped = swapped.with_columns(**{"context.position": "time"})
    result = run(write_csv(tmp_path / "export.csv", events), swapped)
    assert result.state.examples == clean.state.examples
    assert result.reports()["logreg"] != clean.reports()["logreg"]


def test_csv_constants_defaults_and_mapping_errors():
    rows = ["uid,time,product,kind", "u1,2026-01-01T00:00:00Z,i9,view", "u2,5,i3,buy",
            "u3,6", "u4,7,i4,"]
    mapping = CsvMapping.parse("user_id=uid,ts=time,item_id=product,type=kind",
                               types="view=impression,buy=purchase")
    got = list(csv_records(rows, mapping))
    assert [orjson.loads(r.value)["type"] for r in got[:2]] == ["impression", "purchase"]
    assert orjson.loads(got[0].value)["ts"] == "2026-01-01T00:00:00Z"  # RFC 3339 kept as text
    assert orjson.loads(got[1].value) == {"event_id": "line-3", "user_id": "u2", "ts": 5.0,
                                          "item_id": "i3", "type": "purchase"}
    assert (got[2].line, got[2].value.reason) == (4, "invalid_csv")
    assert "type" not in orjson.loads(got[3].value)  # an empty cell is left out
    constant = CsvMapping.parse("user_id=uid,ts=time,item_id=product", constants="type=click")
    assert {orjson.loads(r.value)["type"] for r in csv_records(rows[:3], constant)} == {"click"}
    assert [r.value for r in csv_records(["user_id,ts,type", "u1,1,click"], CsvMapping())] == \
        [b'{"event_id":"line-2","ts":1.0,"user_id":"u1","type":"click"}']
    with pytest.raises(ConfigError, match="lacks"):
        list(csv_records(rows, CsvMapping.parse("user_id=nope")))
    with pytest.raises(ConfigError, match="unknown event fields"):
        CsvMapping.parse("userid=uid")
    with pytest.raises(ConfigError, match="NAME=VALUE"):
        CsvMapping.parse("user_id")


def test_bad_lines_are_counted_by_number_and_change_nothing(events, clean, tmp_path):
    lines = [orjson.dumps(e) for e in events]
    first_ts = events[0]["ts"]
    late_click = orjson.dumps({"event_id": "late", "ts": first_ts, "user_id": "u0",
                               "item_id": "i0", "type": "click"})
    inserted = {  # 1-based line number in the dirty file → what is there
        5: (b"{not json", "invalid_json"),
        9: (b'[1, 2]', "not_an_object"),
        10: (b"", None),  # blank: skipped, not a record
        40: (orjson.dumps({**events[0], "type": "teleport"}), "unknown_type"),
        41: (orjson.dumps({"event_id": "x", "user_id": "u1", "type": "click"}),
             "invalid_event"),
        300: (lines[100], None),  # a repeated event: a duplicate, not a bad line
        500: (late_click, "too_late"),  # it would change item i0's features if applied
    }
    dirty = list(lines)
    for number in sorted(inserted):
        dirty.insert(number - 1, inserted[number][0])
    result = run(write_jsonl(tmp_path / "dirty.jsonl", dirty))
    want = sorted((n, reason) for n, (_, reason) in inserted.items() if reason)
    assert [(bad.line, bad.reason) for bad in result.tally.bad_lines] == want
    assert result.tally.duplicates == 1
    assert result.tally.records == len(dirty) - 1
    assert {k: v for k, v in result.tally.stats.items() if k.startswith("rejected:")} == {
        f"rejected:{reason}": 1 for _, reason in want}
    same_learning(clean, result, same_offsets=False)  # the inserted lines shift offsets


def turned_around(events: list[dict], at: int) -> list[dict]:
    """From impression ``at`` on the concept turns around: clicked impressions get no click,
    the others one click 5 s later."""
    def number(event_id: str) -> int:
        return int(event_id.rsplit("-", 1)[1])

    clicked = {e["exposure_id"] for e in events if e["type"] == "click"}
    out = []
    for e in events:
        if e["type"] == "click" and number(e["exposure_id"]) >= at:
            continue
        out.append(e)
        if e["type"] == "impression" and number(e["event_id"]) >= at \
                and e["event_id"] not in clicked:
            out.append({**e, "event_id": f"flip-{e['event_id']}", "ts": e["ts"] + 5,
                        "type": "click", "exposure_id": e["event_id"], "context": {}})
    return sorted(out, key=lambda e: e["ts"])


def test_a_drift_challenger_is_replayed_and_reported(events, tmp_path):
    base = load_settings(drift_responses={"logreg": "challenger"})
    lines = [orjson.dumps(e) for e in turned_around(events, IMPRESSIONS // 2)]
    path = write_jsonl(tmp_path / "events.jsonl", lines)
    result = replay(read_records(path), replay_settings(objectives=QUICK, base=base), path.name)
    rising = [at for at, a in result.alerts
              if a.model == "logreg" and a.signal == "concept" and a.after > a.before]
    assert rising and rising[0] > IMPRESSIONS // 2, "logreg's loss rises after the turn"
    challenger = result.state.scores["logreg~1"]
    assert challenger.examples == IMPRESSIONS - rising[0] > 0  # from the next example on
    assert len(challenger.predictions) == challenger.examples  # recorded for calibration
    assert "| logreg~1 (challenger of logreg) | ctr |" in write_report(result, tmp_path).read_text()


def test_replay_learns_what_the_live_path_learns(stack, redis_conn, events, tmp_path):
    """The live consumer and learner (Kafka, one partition) on the same events: the same
    examples, each model's same metrics and logreg's every parameter."""
    settings = quick_settings(stack)
    with learning(stack, settings, events) as (_, learner):
        pass
    live = learner.state
    path = write_jsonl(tmp_path / "events.jsonl", [orjson.dumps(e) for e in events])
    result = replay(read_records(path), replay_settings(base=settings), path.name)
    assert result.state.examples == live.examples == IMPRESSIONS
    assert result.state.digest == live.digest
    assert result.reports() == {name: score.report() for name, score in live.scores.items()}
    assert logreg_params(result.state) == logreg_params(live)


def test_cli_replays_a_csv_and_reports_bad_lines(events, tmp_path, monkeypatch):
    path = write_csv(tmp_path / "export.csv", events[:200])
    with path.open("a") as f:
        f.write("broken,row\n")
    objectives = tmp_path / "objectives.json"
    objectives.write_text(orjson.dumps({n: o.model_dump() for n, o in QUICK.items()}).decode())
    monkeypatch.delenv("LEARNLOOP_MODELS", raising=False)
    result = CliRunner().invoke(app, [
        "replay", str(path), "--models", "logreg", "--out", str(tmp_path / "report"),
        "--objectives", str(objectives),
        "--csv-map", ",".join(f"{k}={v}" for k, v in CSV_COLUMNS.items()),
        "--csv-types", ",".join(f"{v}={k}" for k, v in CSV_TYPES.items())])
    assert result.exit_code == 0, result.output
    assert f"line {len(events[:200]) + 2}: invalid_csv" in result.output
    report = (tmp_path / "report" / "replay.md").read_text()
    assert "| item_ctr (baseline) | ctr |" in report and "| logreg | ctr |" in report
    assert "| invalid_csv | 1 |" in report
