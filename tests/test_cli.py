"""The command line against the real stack: publish, score, top, schema."""

from __future__ import annotations

import orjson
from typer.testing import CliRunner

from learnloop.cli import app
from learnloop.events import Event
from tests.conftest import event, read_topic, wait_for

runner = CliRunner()


def _env(settings) -> dict[str, str]:
    return {
        **settings.env(),
        "LEARNLOOP_TOPIC_INTERACTIONS": settings.topic_interactions,
        "LEARNLOOP_PARTITIONS": str(settings.partitions),
    }


def test_schema_describes_the_event_model():
    result = runner.invoke(app, ["schema"])
    assert result.exit_code == 0
    schema = orjson.loads(result.stdout)
    assert schema == Event.model_json_schema()
    assert set(schema["required"]) == {"event_id", "ts", "user_id", "type"}


def test_publish_sends_valid_lines_and_reports_bad_ones_by_number(settings, tmp_path):
    lines = [event(1), b"", b"{broken", event(2, type_="teleport"), event(3, type_="click")]
    source = tmp_path / "events.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = runner.invoke(app, ["publish", str(source)], env=_env(settings))
    assert result.exit_code == 1
    assert "line 3: invalid_json" in result.stderr
    assert "line 4: unknown_type" in result.stderr
    assert "published 2 events, rejected 2 lines" in result.stderr
    sent = read_topic(settings.kafka_bootstrap, settings.topic_interactions, 2)
    assert sorted(orjson.loads(r.value)["event_id"] for r in sent) == ["e1", "e3"]
    assert {r.key for r in sent} == {b"u1"}


def test_score_and_top_read_what_the_consumer_wrote(settings, producer, start_consumer):
    start_consumer(settings)
    for n, item in enumerate(["i1", "i2", "i1"]):
        producer.send(settings.topic_interactions, key=b"u7",
                      value=event(n, user="u7", item=item))
    producer.send(settings.topic_interactions, key=b"u7",
                  value=event(9, type_="click", user="u7", item="i1"))
    producer.flush()
    env = _env(settings)
    wait_for(lambda: runner.invoke(app, ["score", "u7", "i2"], env=env).exit_code == 0,
             what="a score for u7/i2")
    shown = orjson.loads(runner.invoke(app, ["score", "u7", "i2"], env=env).stdout)
    assert shown["model"] == settings.champion and shown["event_id"] == "e1"
    wait_for(lambda: runner.invoke(app, ["score", "u7", "i1"], env=env).exit_code == 0)
    # item_ctr = (clicks + 1) / (impressions + 20) before each exposure is counted:
    # i2 was new (1/20); i1's latest score came after one earlier impression (1/21).
    top = runner.invoke(app, ["top", "u7"], env=env).stdout.splitlines()
    rows = [(item, float(value)) for item, value in (row.split("\t") for row in top)]
    assert [item for item, _ in rows] == ["i2", "i1"]
    assert [round(value, 6) for _, value in rows] == [round(1 / 20, 6), round(1 / 21, 6)]
    missing = runner.invoke(app, ["score", "nobody"], env=env)
    assert missing.exit_code == 1 and "no score" in missing.stderr
