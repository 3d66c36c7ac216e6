"""Drift detection and recovery, measured through learnloop's real path.

River's synthetic streams (``river.datasets.synth``) are replayed as *events*: each
sample ``(x, y)`` is an impression of user ``u{n % 64}`` whose context carries the
numeric features (``x1``, ``x2``, … → model inputs ``ctx_x1`` …), with event time
advancing one second per sample; a positive ``y`` adds a click on that impression
(``exposure_id``) half a second later. The objective is "a click within 10 s" with no
allowed lateness, so a negative closes ten samples after its impression. Per run, one
``learnloop run interactions`` process and one ``learnloop run learner`` process
(started as ``learnloop.demo.start_consumers`` does) on the embedded broker + Redis —
fresh topics and a Redis database of its own — turn the events into examples, learn
them and raise drift alerts. The alerts are read back from the Redis stream
``drift:alerts`` and mapped to the sample whose example triggered them through their
event time (a positive's label time is ``start + n + 0.5``, a negative's
``start + n + 10``). Topics have one partition by default, so the learner sees the
examples in sample order (see ``--partitions``).

Experiment 1 — detection (default detector, ADWIN): abrupt drifts at mid-stream (the
equivalent of ``ConceptDriftStream(..., width=1)``, see :func:`abrupt`) of SEA
(threshold 8 → 9.5) and of Hyperplane (another random hyperplane), and a stationary
stream of each, for the false-alarm rate. The learner runs with drift_cooldown_s = 0 so
every detection is published; what the default cooldown (3600 s of event time = 3600
samples here) would have published is derived from the same alerts with the monitor's
own rule (suppressed while the last *published* alert of the same (model, signal) is
less than cooldown_s old; detectors reset on every detection either way).

Experiment 2 — recovery: an abrupt drift (Hyperplane by default), logreg promoted
champion before the first event, drift response for logreg ``alert``, ``challenger``,
or ``alert`` switched to ``challenger`` halfway to the drift (the learner restarted with
the new setting, as an operator would after a warm-up); default cooldown,
challenger_min_examples 500. Every learner checkpoint is kept (one every 100 examples)
and read back at the end; the served model at a checkpoint is the last champion in
``serving:history`` before the next checkpoint (the learner promotes a challenger just
after a checkpoint). Recovery = examples after the drift until the served model's
``recent_logloss`` (learnloop's own, window LEARNLOOP_RECENT_WINDOW) is back within 10%
of its level 100 examples before the drift, after having left that band (crossings
interpolated linearly between checkpoints, so good to some tens of examples).

    python scripts/drift_eval.py             # ~2-3 minutes, JSON in out/drift_eval.json
    python scripts/drift_eval.py --quick     # smaller streams, about a minute

Example counts of the learner (checkpoints) stand for sample indices: with one
partition the k-th example learned is sample ~k (a negative is learned 10 samples late).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import orjson
import redis
from kafka import KafkaProducer
from pydantic import SecretStr
from river.datasets import synth

from learnloop import serving
from learnloop.checkpoints import checkpoint_store
from learnloop.connect import ensure_topics, kafka_security, redis_client, running_stack
from learnloop.demo import stop_processes
from learnloop.embedded import _die_with_parent
from learnloop.features import STATS_KEY
from learnloop.objective import FeedbackRule, Objective
from learnloop.reader import read_model_metrics
from learnloop.settings import Settings, load_settings

OBJECTIVE = "drift"
WINDOW_S = 10  # click window; with no lateness a negative closes 10 samples later
CLICK_DELAY_S = 0.5
OBJECTIVES = {OBJECTIVE: Objective(
    exposures=("impression",), feedback={"click": FeedbackRule(label=1, window_s=WINDOW_S)},
    negative_label=0, allowed_lateness_s=0)}
USERS, ITEMS = 64, 4
WARMUP = 2000  # alerts on the first examples are counted apart: every model starts empty
DEFAULT_COOLDOWN_S = Settings.model_fields["drift_cooldown_s"].default
RECOVERY_BAND = 0.10
PRE_MARGIN = 100
CHALLENGER_MIN_EXAMPLES = 500


# -- streams ------------------------------------------------------------------------------

def make_stream(kind: str, drift: bool, position: int, seed: int):
    """A River stream: SEA (3 features, threshold 8 → 9.5) or Hyperplane (10 features,
    new random hyperplane), with an abrupt drift at sample ``position`` or none."""
    if kind == "sea":
        before, after = synth.SEA(variant=0, seed=seed), synth.SEA(variant=3, seed=seed + 1)
    else:
        before = synth.Hyperplane(seed=seed, n_features=10)
        after = synth.Hyperplane(seed=seed + 1, n_features=10)
    if not drift:
        return iter(before)
    return abrupt(before, after, position)


def abrupt(stream, drift_stream, position: int):
    """``ConceptDriftStream(stream, drift_stream, position, width=1)`` without its bug.

    River 0.26 computes ``math.exp(-4 * (t - position) / width)`` for every sample, which
    overflows (OverflowError) for width=1 as soon as ``position`` > 178. With width=1 the
    probability of the new concept is ~0 before ``position``, 1/2 at it and > 0.98 after
    it, so this exact switch is that stream but for a coin toss or two: samples
    0 … position-1 come from ``stream``, the rest from ``drift_stream`` (started fresh, as
    River does).
    """
    return itertools.chain(itertools.islice(iter(stream), position), iter(drift_stream))


def events_of(stream, samples: int, t0: int):
    """For each sample: (n, y, events) — the impression, and its click if y."""
    for n, (x, y) in enumerate(stream):
        if n >= samples:
            return
        user, item = f"u{n % USERS}", f"i{(n // USERS) % ITEMS}"
        impression = {"event_id": f"imp-{n}", "ts": t0 + n, "user_id": user, "item_id": item,
                      "type": "impression",
                      "context": {f"x{k + 1}": round(float(v), 6) for k, v in x.items()}}
        events = [impression]
        if y:
            events.append({"event_id": f"clk-{n}", "ts": t0 + n + CLICK_DELAY_S,
                           "user_id": user, "item_id": item, "type": "click",
                           "exposure_id": f"imp-{n}"})
        yield n, bool(y), events


def sample_index(event_time: float, t0: int) -> int:
    """The sample whose example raised an alert, from the example's label time."""
    offset = event_time - t0
    if abs(offset - math.floor(offset) - CLICK_DELAY_S) < 1e-6:
        return round(offset - CLICK_DELAY_S)  # a click's time
    return round(offset - WINDOW_S)  # a negative's: exposure time + window


# -- one run through the real path ---------------------------------------------------------

def run_settings(base: Settings, db: int, **overrides) -> Settings:
    """Settings of one run: its own topics and groups, and its own Redis database."""
    tag = uuid.uuid4().hex[:8]
    url = base.redis_url.get_secret_value().rsplit("/", 1)[0] + f"/{db}"
    return base.model_copy(update={
        "redis_url": SecretStr(url),
        "topic_interactions": f"{tag}-interactions", "topic_scores": f"{tag}-scores",
        "topic_dead_letters": f"{tag}-dead-letters", "topic_examples": f"{tag}-examples",
        "topic_drift_alerts": f"{tag}-drift-alerts", "consumer_group": f"{tag}-group",
        "learner_group": f"{tag}-learner", **overrides})


def start(settings: Settings, consumer: str, logs: Path) -> subprocess.Popen:
    """``learnloop run CONSUMER`` as :func:`learnloop.demo.start_consumers` starts it
    (dies with this process), its output in ``logs`` to tell why if it exits early."""
    log = logs / f"{consumer}-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "learnloop.cli", "run", consumer],
            env={**os.environ, **settings.env()}, stdin=subprocess.DEVNULL, stdout=out,
            stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    process.log = log
    return process


def replay(base: Settings, db: int, stream, samples: int, *,
           champion: str | None = None, restart_at: int | None = None,
           restart_with: dict | None = None, timeout_s: float = 300.0, **overrides) -> dict:
    """Publish the stream as events, run one interactions consumer and the learner until
    every impression is learned; return the run's facts, with a client of its Redis
    database (left as the run left it).

    With ``restart_at``, the samples before it are published and learned first; then the
    learner is stopped (it checkpoints on the way out) and started again with the
    settings changed by ``restart_with`` — as an operator would change its configuration —
    and the rest is published.
    """
    settings = run_settings(base, db, **overrides)
    client = redis_client(settings)
    client.flushdb()
    ensure_topics(settings)
    if champion:
        serving.promote(client, settings, champion, why="drift_eval: served before the drift",
                        who="drift_eval")
    t0 = int(time.time()) - samples - 3600
    started = time.monotonic()
    deadline = started + timeout_s
    logs = Path(tempfile.mkdtemp(prefix="drift_eval-"))
    consumer = [start(settings, "interactions", logs)]
    learner = [start(settings, "learner", logs)]
    positives = 0

    def wait_learned(count: int) -> None:
        while read_model_metrics(client, settings.baseline).get("examples", 0) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not {count} examples learned in {timeout_s}s: "
                                   f"{read_model_metrics(client, settings.baseline)}")
            for process in consumer + learner:
                if process.poll() is not None:
                    raise RuntimeError(f"{process.args[-1]} exited early:\n"
                                       + process.log.read_text()[-3000:])
            time.sleep(0.1)

    try:
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20,
                                 batch_size=256 * 1024, **kafka_security(settings))
        for n, y, events in events_of(stream, samples, t0):
            if n == restart_at:
                producer.flush()
                wait_learned(n - WINDOW_S)  # every window of the samples before n closed
                stop_processes(learner)
                learner = [start(settings.model_copy(update=restart_with or {}), "learner",
                                 logs)]
            positives += y
            for body in events:
                producer.send(settings.topic_interactions, key=body["user_id"].encode(),
                              value=orjson.dumps(body))
        producer.flush()
        # one late event per partition moves every event-time watermark past the last window
        for partition in range(settings.partitions):
            tick = {"event_id": f"tick-{partition}", "ts": t0 + samples + 10 * WINDOW_S,
                    "user_id": f"tick{partition}", "item_id": "tick", "type": "add_to_cart"}
            producer.send(settings.topic_interactions, partition=partition,
                          key=tick["user_id"].encode(), value=orjson.dumps(tick))
        producer.flush()
        producer.close()
        published = time.monotonic()
        wait_learned(samples)
        learned = time.monotonic()
    finally:
        stop_processes(consumer + learner)
    stats = {k.decode(): int(v) for k, v in client.hgetall(STATS_KEY).items()}
    made = sum(v for k, v in stats.items() if k.startswith("examples:"))
    if made != samples:
        raise RuntimeError(f"{made} examples for {samples} impressions: {stats}")
    alerts = []
    for _id, fields in client.xrange("drift:alerts"):
        alert = {k.decode(): v.decode() for k, v in fields.items()}
        alert["event_time"] = float(alert["event_time"])
        alert["sample"] = sample_index(alert["event_time"], t0)
        alerts.append(alert)
    return {"settings": settings, "client": client, "t0": t0, "positives": positives,
            "alerts": alerts,
            "metrics": {m: read_model_metrics(client, m) for m in settings.models},
            "seconds": {"publish": round(published - started, 2),
                        "to_learned": round(learned - started, 2)}}


# -- experiment 1: detection ----------------------------------------------------------------

def with_cooldown(alerts: list[dict], cooldown_s: float) -> list[dict]:
    """The alerts the monitor would publish with ``cooldown_s`` (same detections: the
    cooldown only decides what is published; detectors reset either way)."""
    last: dict[tuple[str, str], float] = {}
    kept = []
    for alert in alerts:  # stream order = the learner's order
        key = (alert["model"], alert["signal"])
        if key in last and alert["event_time"] - last[key] < cooldown_s:
            continue
        last[key] = alert["event_time"]
        kept.append(alert)
    return kept


def detection_summary(alerts: list[dict], drift_at: int | None, samples: int,
                      watched: list[tuple[str, str]]) -> dict:
    """Per (model, signal): false alarms before the drift (all, in the warm-up, and
    rises: the signal's recent level above its level before), and the first alert — and
    first rise — after it."""
    stationary = drift_at if drift_at is not None else samples
    out = {}
    for model, signal in watched:
        mine = [a for a in alerts if (a["model"], a["signal"]) == (model, signal)]
        before = [a for a in mine if drift_at is None or a["sample"] < drift_at]
        after = [a for a in mine if drift_at is not None and a["sample"] >= drift_at]
        first = min(after, key=lambda a: a["sample"], default=None)
        rise = min((a for a in after if _rise(a)), key=lambda a: a["sample"], default=None)
        out[f"{model}/{signal}"] = {
            "alerts_at": [(a["sample"], "up" if _rise(a) else "down") for a in mine],
            "false_alarms": len(before),
            "false_alarms_warmup": sum(1 for a in before if a["sample"] < WARMUP),
            "false_alarms_up": sum(1 for a in before if _rise(a)),
            "false_alarms_per_100k": round(len(before) / stationary * 1e5, 1),
            "false_alarms_per_100k_after_warmup": round(
                sum(1 for a in before if a["sample"] >= WARMUP)
                / max(stationary - WARMUP, 1) * 1e5, 1),
            "first_after_drift": None if first is None else first["sample"],
            "first_after_drift_up": None if first is None else _rise(first),
            "delay": None if first is None else first["sample"] - drift_at,
            "first_rise_after_drift": None if rise is None else rise["sample"],
            "rise_delay": None if rise is None else rise["sample"] - drift_at,
            "alerts_after_drift": len(after),
        }
    features = Counter(a["signal"] for a in alerts if a["signal"].startswith("feature:"))
    out["feature_alerts"] = dict(sorted(features.items()))
    return out


def _rise(alert: dict) -> bool:
    """The signal's recent level is above its level since the last drift (for a loss:
    the model got worse; a fall is e.g. a model still learning)."""
    return float(alert["after"]) > float(alert["before"])


DETECTION_STREAMS = (("SEA 0→3 abrupt", "sea", True),
                     ("Hyperplane seed switch abrupt", "hyperplane", True),
                     ("SEA stationary", "sea", False),
                     ("Hyperplane stationary", "hyperplane", False))


def detection(base: Settings, db: int, name: str, kind: str, drift: bool, samples: int,
              seed: int) -> dict:
    """One stream, every detection published (cooldown 0), summarised raw and as the
    default cooldown would have published it."""
    drift_at = samples // 2
    run = replay(base, db, make_stream(kind, drift, drift_at, seed), samples,
                 drift_cooldown_s=0.0)
    settings = run["settings"]
    watched = [(m, "concept") for m in settings.models] + [(f"objective:{OBJECTIVE}", "label")]
    point = drift_at if drift else None
    return {
        "stream": name, "samples": samples, "drift_at": point,
        "positive_rate": round(run["positives"] / samples, 4),
        "seconds": run["seconds"],
        "final_logloss": {m: round(v.get("logloss", float("nan")), 4)
                          for m, v in run["metrics"].items()},
        "raw": detection_summary(run["alerts"], point, samples, watched),
        f"cooldown_{int(DEFAULT_COOLDOWN_S)}s": detection_summary(
            with_cooldown(run["alerts"], DEFAULT_COOLDOWN_S), point, samples, watched),
        "alerts": [{k: a[k] for k in ("model", "signal", "sample", "where", "before", "after")}
                   for a in run["alerts"]],
    }


# -- experiment 2: recovery -----------------------------------------------------------------

def checkpoint_curve(client: redis.Redis, settings: Settings) -> list[dict]:
    """Per kept checkpoint: examples, every model's recent log loss, the served model."""
    store = checkpoint_store(settings, client)
    history = [(float(f[b"at"]), f[b"to"].decode()) for _id, f in client.xrange(
        serving.HISTORY)]
    versions = sorted(store.versions())
    loaded = [store.load(v) for v in versions]
    rows = []
    for n, ckpt in enumerate(loaded):
        until = loaded[n + 1].published_at if n + 1 < len(loaded) else math.inf
        served = [to for at, to in history if at < until]
        state = ckpt.state
        rows.append({
            "version": ckpt.version, "examples": state.examples,
            "served": served[-1] if served else settings.champion,
            "recent_logloss": {m: s.report()["recent_logloss"] for m, s in state.scores.items()
                               if s.examples},
            "model_examples": {m: s.examples for m, s in state.scores.items()},
        })
    return rows


def recovery_summary(rows: list[dict], drift_at: int) -> dict:
    """When the served model's recent log loss left, and came back into, the band of
    ``RECOVERY_BAND`` around its pre-drift level — linearly interpolated between
    checkpoints (~100 examples apart) unless the served model changed in between."""
    points = [(r["examples"], r["recent_logloss"][r["served"]], r["served"]) for r in rows
              if r["served"] in r["recent_logloss"]]
    after = [p for p in points if p[0] > drift_at]
    # the level before the drift: PRE_MARGIN examples ahead of it, so that the recent
    # window holds no post-drift example yet (negatives come 10 samples late)
    at = drift_at - PRE_MARGIN
    below = [p for p in points if p[0] <= at]
    above = [p for p in points if p[0] > at]
    (e0, l0, _), (e1, l1, _) = below[-1], above[0]
    pre = l0 + (l1 - l0) * (at - e0) / (e1 - e0)
    band = pre * (1 + RECOVERY_BAND)

    def crossing(start: float, upwards: bool) -> float | None:
        for (e0, l0, m0), (e1, l1, m1) in zip(after, after[1:], strict=False):
            if e1 <= start:
                continue
            if (l0 <= band < l1) if upwards else (l0 > band >= l1):
                return e1 if m0 != m1 else e0 + (band - l0) * (e1 - e0) / (l1 - l0)
        return None

    left = None
    if after and after[0][1] > band:
        left = after[0][0]
    elif after:
        left = crossing(drift_at, upwards=True)
    back = None if left is None else crossing(left, upwards=False)
    peak = max(after, key=lambda p: p[1]) if after else None
    switches = [(b[0], b[2]) for a, b in zip(points, points[1:], strict=False) if a[2] != b[2]]
    return {
        "pre_drift_recent_logloss": round(pre, 4),
        "band": round(band, 4),
        "left_band_at": None if left is None else round(left - drift_at),
        "peak_recent_logloss": None if peak is None else round(peak[1], 4),
        "peak_at": None if peak is None else peak[0] - drift_at,
        "recovered_after": (0 if left is None else
                            None if back is None else round(back - drift_at)),
        "final_recent_logloss": round(after[-1][1], 4) if after else None,
        "final_recent_logloss_by_model": {m: round(v, 4) for m, v in
                                          rows[-1]["recent_logloss"].items()},
        "served_switches": [{"after_examples": e - drift_at, "to": m} for e, m in switches],
    }


RESPONSES = (
    ("alert", "alert", None),
    ("challenger", "challenger", None),
    # what an operator would do: warm the models up with alerts only, then switch the
    # response on (the learner restarts from its checkpoint) — a warm-up alert can then
    # no longer start a challenger
    ("challenger after warm-up", "alert", "challenger"),
)


STREAM_NAMES = {"sea": "SEA 0→3 abrupt", "hyperplane": "Hyperplane seed switch abrupt"}


def recovery(base: Settings, db: int, label: str, policy: str, later: str | None, kind: str,
             samples: int, seed: int) -> dict:
    """One abrupt-drift stream with logreg served and its drift response ``policy``
    (switched to ``later`` halfway to the drift, if given)."""
    drift_at = samples // 2
    restart = {} if later is None else {
        "restart_at": drift_at // 2, "restart_with": {"drift_responses": {"logreg": later}}}
    run = replay(base, db, make_stream(kind, True, drift_at, seed), samples, champion="logreg",
                 drift_responses={"logreg": policy},
                 challenger_min_examples=CHALLENGER_MIN_EXAMPLES,
                 checkpoint_every_examples=100, checkpoints_kept=1_000_000,
                 max_poll_records=100, **restart)
    client = run["client"]
    rows = checkpoint_curve(client, run["settings"])
    concept = [a for a in run["alerts"] if a["signal"] == "concept"]
    return {
        "response": label, "stream": STREAM_NAMES[kind], "samples": samples,
        "drift_at": drift_at, "seconds": run["seconds"],
        "response_switched_on_at": None if later is None else drift_at // 2,
        "checkpoints": len(rows),
        "concept_alerts": [{"model": a["model"], "sample": a["sample"]} for a in concept],
        "challengers": {m: min(c) for m, c in _started(rows).items()},
        "promotions": [h for h in serving.history(client, 50)
                       if h.get("who") == "learnloop (drift response)"][::-1],
        **recovery_summary(rows, drift_at),
        "curve": [{"examples": r["examples"], "served": r["served"],
                   "recent_logloss": {m: round(v, 4) for m, v in r["recent_logloss"].items()}}
                  for r in rows[:: max(1, len(rows) // 200)]],
    }


def _started(rows: list[dict]) -> dict[str, list[int]]:
    """Each challenger: the learner's example count at the first checkpoint holding it,
    minus the examples it has seen (= when it was started)."""
    found: dict[str, list[int]] = {}
    for r in rows:
        for model, seen in r["model_examples"].items():
            if "~" in model:
                found.setdefault(model, []).append(r["examples"] - seen)
    return found


# -- output ---------------------------------------------------------------------------------

def markdown(report: dict) -> str:
    lines = detection_table(report) if report["detection"] else []
    lines += recovery_table(report) if report["recovery"] else []
    return "\n".join([*lines, f"Total {report['seconds']:.0f} s."])


def detection_table(report: dict) -> list[str]:
    cooldown = f"cooldown_{int(DEFAULT_COOLDOWN_S)}s"
    lines = [
        f"### Detection (ADWIN defaults; {report['samples']:,} samples per stream, "
        f"1 sample = 1 s of event time; ↑ = the signal rose, ↓ = it fell)",
        "",
        "| stream | drift at | signal | first alert after drift (delay) | first loss ↑ after "
        "drift (delay) | false alarms before drift: all / in first 2k / ↑ | FA per 100k | "
        f"FA per 100k after 2k | with cooldown {int(DEFAULT_COOLDOWN_S)} s: first alert delay "
        "/ false alarms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def delay(sample, late, up=None):
        arrow = "" if up is None else (" ↑" if up else " ↓")
        return "none" if sample is None else f"{sample:,} ({late:,}){arrow}"

    for r in report["detection"]:
        for key, raw in r["raw"].items():
            if key == "feature_alerts":
                continue
            cool = r[cooldown][key]
            if r["drift_at"] is None:
                first = rise = cdelay = "—"
            else:
                first = delay(raw["first_after_drift"], raw["delay"], raw["first_after_drift_up"])
                rise = (delay(raw["first_rise_after_drift"], raw["rise_delay"])
                        if key.endswith("/concept") else "n/a")
                cdelay = "none" if cool["delay"] is None else f"{cool['delay']:,}"
            lines.append(
                f"| {r['stream']} | {r['drift_at'] or '—'} | {key} | {first} | {rise} | "
                f"{raw['false_alarms']} / {raw['false_alarms_warmup']} / "
                f"{raw['false_alarms_up']} | {raw['false_alarms_per_100k']} | "
                f"{raw['false_alarms_per_100k_after_warmup']} | "
                f"{cdelay} / {cool['false_alarms']} |")
    return [*lines, "", "Feature alerts (raw / with cooldown): " + "; ".join(
        f"{r['stream']}: {sum(r['raw']['feature_alerts'].values())} / "
        f"{sum(r[cooldown]['feature_alerts'].values())}" for r in report["detection"]), ""]


def recovery_table(report: dict) -> list[str]:
    first = report["recovery"][0]
    lines = [
        f"### Recovery ({first['stream']}, drift at {first['drift_at']:,}; logreg champion; "
        f"served model's recent log loss, window {report['recent_window']}, "
        f"back within {RECOVERY_BAND:.0%} of pre-drift)", "",
        "| response | pre-drift | left band after | peak (after) | recovered after | "
        "final (logreg) | challengers started at | served switches |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["recovery"]:
        switches = ", ".join(f"{s['to']} @ +{s['after_examples']:,}" for s in
                             r["served_switches"]) or "none"
        recovered = ("not within the stream" if r["recovered_after"] is None
                     else f"{r['recovered_after']:,}")
        started = ", ".join(f"{m} @ {at:,}" for m, at in r["challengers"].items()) or "none"
        left = "never" if r["left_band_at"] is None else f"{r['left_band_at']:,}"
        lines.append(
            f"| {r['response']} | {r['pre_drift_recent_logloss']} | {left} | "
            f"{r['peak_recent_logloss']} (+{r['peak_at']:,}) | {recovered} | "
            f"{r['final_recent_logloss']} ({r['final_recent_logloss_by_model']['logreg']}) | "
            f"{started} | {switches} |")
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=None,
                        help="samples per detection stream (default 12,000; --quick 3,000)")
    parser.add_argument("--recovery-samples", type=int, default=None,
                        help="samples per recovery run (default 12,000; --quick 4,000)")
    parser.add_argument("--recovery-stream", choices=sorted(STREAM_NAMES), default="hyperplane")
    parser.add_argument("--only", choices=("detection", "recovery"), default=None,
                        help="run one experiment only")
    parser.add_argument("--quick", action="store_true", help="small streams (< 60 s)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=3,
                        help="runs at a time (each: its own topics, Redis database and "
                             "consumer processes on the one embedded stack)")
    parser.add_argument("--partitions", type=int, default=1,
                        help="partitions of every topic (default 1: the learner then sees the "
                             "examples in sample order; with more, a replayed backlog reaches "
                             "it partition by partition)")
    parser.add_argument("--out", type=Path, default=Path("out/drift_eval.json"))
    args = parser.parse_args()
    samples = args.samples or (3_000 if args.quick else 12_000)
    recovery_samples = args.recovery_samples or (4_000 if args.quick else 12_000)
    started = time.monotonic()
    base = load_settings(
        kafka_bootstrap=None, redis_url=None,  # always its own embedded stack: it flushes Redis
        objectives=OBJECTIVES, metrics_port=0, partitions=args.partitions,
        checkpoint_every_s=0.5, model_reload_s=0.5, max_poll_interval_ms=5000,
        session_timeout_ms=6000)
    with running_stack(base) as live, ThreadPoolExecutor(args.jobs) as pool:
        jobs = [] if args.only == "recovery" else [
            (detection, (name, kind, drift, samples, args.seed))
            for name, kind, drift in DETECTION_STREAMS]
        jobs += [] if args.only == "detection" else [
            (recovery, (label, policy, later, args.recovery_stream, recovery_samples, args.seed))
            for label, policy, later in RESPONSES]
        futures = {pool.submit(job, live, db, *job_args): job_args[0]
                   for db, (job, job_args) in enumerate(jobs, start=1)}
        for future in as_completed(futures):
            result = future.result()
            print(f"  {futures[future]}: {result['seconds']['to_learned']:.1f}s", flush=True)
        results = [f.result() for f in futures]
    report = {"samples": samples, "recovery_samples": recovery_samples, "seed": args.seed,
              "detector": live.drift_detector, "detector_params": live.drift_params,
              "partitions": live.partitions, "recent_window": live.recent_window,
              "challenger_min_examples": CHALLENGER_MIN_EXAMPLES,
              "challenger_margin": live.challenger_margin,
              "default_cooldown_s": DEFAULT_COOLDOWN_S, "warmup_examples": WARMUP,
              "jobs": args.jobs,
              "detection": [r for r in results if "stream" in r and "response" not in r],
              "recovery": [r for r in results if "response" in r],
              "seconds": round(time.monotonic() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    print(markdown(report))
    print(f"\nJSON: {args.out}")


if __name__ == "__main__":
    main()
