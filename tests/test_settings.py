"""Settings and the objective: validated at start-up, with errors that say what is wrong."""

from __future__ import annotations

import pytest

from learnloop.errors import ConfigError
from learnloop.settings import load_settings


def test_objectives_come_from_json_and_models_default_to_the_first(monkeypatch):
    monkeypatch.setenv("LEARNLOOP_OBJECTIVES", '{"buy": {"feedback": {"purchase": '
                       '{"label": 1, "window_s": 86400}}, "allowed_lateness_s": 5}}')
    monkeypatch.setenv("LEARNLOOP_MODELS", "item_ctr,logreg")
    settings = load_settings()
    assert settings.objective_of("logreg") == "buy"
    assert settings.objectives["buy"].window_s == 86400
    assert settings.exposure_types == ("impression",)


@pytest.mark.parametrize(("objectives", "message"), [
    ({"x": {"feedback": {"teleport": {"window_s": 1}}}}, "unknown event types ['teleport']"),
    ({"x": {"feedback": {"impression": {"window_s": 1}}}}, "both exposure and feedback"),
    ({"x": {"feedback": {"click": {"window_s": 0}}}}, "greater than 0"),
    ({"x": {"feedback": {"click": {"window_s": 5, "label": 0.5}}}}, "label"),
    ({"a:b": {"feedback": {"click": {"window_s": 5}}}}, "objective name"),
    ({}, "at least one objective"),
])
def test_bad_objectives_are_refused_with_the_reason(objectives, message):
    with pytest.raises(ConfigError, match="invalid learnloop settings") as caught:
        load_settings(objectives=objectives)
    assert message in str(caught.value)


def test_models_must_be_registered_consistently():
    with pytest.raises(ConfigError, match="champion 'nope'"):
        load_settings(champion="nope")
    with pytest.raises(ConfigError, match="wants objective 'missing'"):
        load_settings(model_objectives={"logreg": "missing"})


def test_secrets_never_show_in_repr_or_errors():
    settings = load_settings(redis_url="redis://:hunter2@db:6379/0", checkpoint_key="k3y-s3cret")
    assert "hunter2" not in repr(settings) and "k3y-s3cret" not in repr(settings)
    assert settings.env()["LEARNLOOP_CHECKPOINT_KEY"] == "k3y-s3cret"  # for child processes
    with pytest.raises(ConfigError) as caught:
        load_settings(redis_url="redis://:hunter2@db:6379/0", partitions=0)
    assert "hunter2" not in str(caught.value)
