"""What the learner does about a concept drift, per model: ``alert``, ``reset`` or
``challenger`` — and the automatic promotion of a challenger that proves itself.

A challenger is a fresh clone of the drifted model (same registry kind, built by its
``after_drift()`` if it has one — logreg's starts with a hot learning rate), named
``{model}~{n}``, that learns from the drift point on. Once it has seen
``challenger_min_examples`` examples and its recent-window log loss beats its
parent's *on the same examples* by ``challenger_margin`` (relative), it is promoted
— recorded in ``serving:history`` like a manual promotion — if its parent is served.
Only a rising loss gets a response (ADWIN also fires when a model improves). A
challenger that has not won after ``PATIENCE`` × the minimum examples retires, so a
later drift can start another.
"""

from __future__ import annotations

import logging

import redis

import models
from learnloop.drift import Alert
from learnloop.evaluation import ProgressiveScore
from learnloop.serving import current_champion, promote
from learnloop.settings import Settings

log = logging.getLogger("learnloop.responses")
WHO = "learnloop (drift response)"


def respond(state, alert: Alert, settings: Settings) -> str | None:
    """Apply the model's drift response to ``state``; return a new challenger's name."""
    if alert.signal != "concept" or alert.model not in state.models:
        return None
    if alert.after <= alert.before:
        return None  # the loss fell: the model got better, nothing to respond to
    policy = settings.drift_responses.get(alert.model, "alert")
    if policy == "reset":
        state.models[alert.model] = models.build_after_drift(state.kind_of(alert.model))
        state.drift.forget(alert.model)
        log.info("drift response: %s reset", alert.model)
    elif policy == "challenger":
        mine = [c for c in state.challengers.values() if c["parent"] == alert.model]
        if any(not c["done"] for c in mine):
            return None  # one challenger at a time per model
        name = f"{alert.model}~{len(mine) + 1}"
        state.add_model(name, state.kind_of(alert.model), state.objective_of(alert.model),
                        after_drift=True)
        # the parent is scored again from here on, so both are judged on the same examples
        state.challengers[name] = {"parent": alert.model, "done": False,
                                   "parent_score": ProgressiveScore(state.recent_window)}
        log.info("drift response: challenger %s started for %s", name, alert.model)
        return name
    return None


#: A challenger that has not won after this many times the minimum examples retires,
#: so that a later drift can start a new one.
PATIENCE = 3


def ready_to_promote(state, settings: Settings) -> list[str]:
    """Challengers that beat their parent over the recent window by the margin."""
    ready = []
    for name, challenger in state.challengers.items():
        if challenger["done"]:
            continue
        mine = state.scores[name].report()
        if mine["examples"] < settings.challenger_min_examples:
            continue
        if mine["examples"] > PATIENCE * settings.challenger_min_examples:
            challenger["done"] = True  # never won: retire (it keeps learning, unserved)
            log.info("challenger %s retires without beating %s", name, challenger["parent"])
            continue
        parent = challenger["parent_score"].report()  # same examples as the challenger's
        if mine["recent_logloss"] < parent["recent_logloss"] * (1 - settings.challenger_margin):
            ready.append(name)
    return ready


def promote_ready(state, client: redis.Redis, settings: Settings) -> list[str]:
    """Promote every ready challenger whose parent is served (after a checkpoint holds it)."""
    promoted = []
    for name in ready_to_promote(state, settings):
        challenger = state.challengers[name]
        challenger["done"] = True
        if current_champion(client, settings) != challenger["parent"]:
            continue  # it beat a challenger, not the champion: it stays a challenger
        marker = f"serving:auto:{name}"
        if client.exists(marker):
            continue  # promoted before a crash; the replay must not record it twice
        report = state.scores[name].report()
        promote(client, settings, name, why=(
            f"drift challenger beat {challenger['parent']} on recent log loss "
            f"({report['recent_logloss']:.4f}) after {int(report['examples'])} examples"),
            who=WHO, known=list(state.models), marker=marker)
        promoted.append(name)
    return promoted
