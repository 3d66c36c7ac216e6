"""The same model calls in-process, River alone — no Kafka, no Redis (efficiency).

The inputs are the real ones: labeled examples read back from the examples topic after a
run (each carries its exposure's point-in-time snapshot, event time and context), parsed
into memory before any timing.

- consumer reference: per exposure, :func:`learnloop.featurize.featurize` of its
  snapshot and the champion's ``predict_one`` — what the interactions consumer does per
  exposure; clicks cost nothing here. Events/s = exposures timed × (events / exposures
  of the workload) / seconds;
- learner reference: per example, ``featurize`` and, for every model, ``predict_one``
  then ``learn_one`` (fresh models) — what the learner does per example, without its
  metrics, drift detectors and checkpoints.
"""

from __future__ import annotations

import itertools
import time

import models
from benchlib.stats import median
from benchlib.topics import read_from_start
from learnloop import examples
from learnloop.featurize import featurize
from learnloop.settings import Settings

Sample = tuple[dict[str, float], float, dict, bool]


def read_examples(settings: Settings, limit: int) -> list[Sample]:
    """Up to ``limit`` examples from the examples topic, as (snapshot, ts, context, y)."""
    consumer, parts = read_from_start(settings, settings.topic_examples, max_poll_records=5000)
    try:
        remaining = sum(consumer.end_offsets(parts).values())  # messages
        out: list[Sample] = []
        while remaining > 0 and len(out) < limit:
            for records in consumer.poll(timeout_ms=1000).values():
                remaining -= len(records)
                out += [({k: float(v) for k, v in example["features"].items()},
                         float(example["exposure_ts"]), example.get("context") or {},
                         example["label"] == 1) for example in examples.of(records)]
        return out[:limit]
    finally:
        consumer.close()


def consumer_reference(samples: list[Sample], settings: Settings, exposures: int,
                       events_per_exposure: float, repeats: int) -> dict:
    """Events/s of featurize + champion predict_one per exposure, in-process."""
    rates = []
    for _ in range(repeats):
        model = models.build(settings.champion)
        half_lives, types = settings.half_lives_s, settings.event_types
        batch = list(itertools.islice(itertools.cycle(samples), exposures))
        started = time.perf_counter()
        for snapshot, ts, context, _y in batch:
            model.predict_one(featurize(snapshot, ts, context, half_lives, types))
        seconds = time.perf_counter() - started
        rates.append(len(batch) * events_per_exposure / seconds)
    return {"events_per_s": round(median(rates), 1), "runs": [round(r, 1) for r in rates],
            "exposures_timed": exposures, "events_per_exposure": round(events_per_exposure, 4),
            "model": settings.champion}


def learner_reference(samples: list[Sample], settings: Settings, repeats: int) -> dict:
    """Examples/s of featurize + predict_one + learn_one of every model, in-process."""
    rates = []
    names = [n for n in settings.models if settings.objective_of(n) == next(
        iter(settings.objectives))]
    for _ in range(repeats):
        fresh = [models.build(name) for name in names]
        half_lives, types = settings.half_lives_s, settings.event_types
        started = time.perf_counter()
        for snapshot, ts, context, y in samples:
            x = featurize(snapshot, ts, context, half_lives, types)
            for model in fresh:
                model.predict_one(x)
                model.learn_one(x, y)
        rates.append(len(samples) / (time.perf_counter() - started))
    return {"examples_per_s": round(median(rates), 1), "runs": [round(r, 1) for r in rates],
            "examples_timed": len(samples), "models": names}
