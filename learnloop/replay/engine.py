"""The replay itself: recorded events through the live code path, deterministically.

A replay is one interactions partition holding the file's records in order, offsets
0..n-1, applied in batches of ``max_poll_records`` by the same
:meth:`FeatureStore.apply_batch <learnloop.features.FeatureStore.apply_batch>` (the
Lua script: features, point-in-time snapshots, the join, negative examples) on a private
redis-server. The examples it puts in the outbox are learned in order by the learner's
own :func:`~consumers.learner.learn_example` (progressive validation, drift detectors,
the per-user cap) and its drift responses. Everything runs on event time: the only
decoding difference from the live consumer is that the clock-skew check is off (it
compares with the wall clock, and the file is history). Scoring is not replayed: it
changes no feature and no example.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice

import orjson
import redis
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from consumers.learner import LearnerState, learn_and_respond
from learnloop.connect import redis_client
from learnloop.drift import Alert
from learnloop.embedded import EmbeddedStack
from learnloop.evaluation import ProgressiveScore
from learnloop.events import Event, EventDecoder, Rejection
from learnloop.features import STATS_KEY, BatchResult, FeatureStore
from learnloop.featurize import Featurizer
from learnloop.metrics import LearnerMetrics
from learnloop.outbox import Outbox
from learnloop.replay.sources import Record
from learnloop.replay.tally import Tally
from learnloop.settings import Settings, load_settings

TOPIC, PARTITION = "replay", 0
#: Points per learning curve (at most): one every ``examples // CURVE_POINTS`` examples.
CURVE_POINTS = 400


@dataclass
class Batch:
    """Decoded records at their offsets, their line numbers, and what applying them did."""

    items: list[tuple[int, Event | Rejection]]
    lines: dict[int, int]  # offset → line number
    result: BatchResult | None = None


class RecordedScore(ProgressiveScore):
    """A model's progressive score that also keeps each prediction (for calibration)."""

    def __init__(self, window: int) -> None:
        super().__init__(window)
        self.predictions = array("d")
        self.labels = bytearray()

    def update(self, y: bool, p: float) -> float:
        loss = super().update(y, p)
        self.predictions.append(p)
        self.labels.append(y)
        return loss


@dataclass
class ReplayResult:
    """What a replay measured: the learner's state, the events' tally, the curves."""

    source: str
    settings: Settings
    state: LearnerState
    tally: Tally
    curves: dict[str, list[tuple[int, float]]]  # model → (examples, recent log loss)
    alerts: list[tuple[int, Alert]] = field(default_factory=list)  # (examples, alert)
    seconds: float = 0.0  # wall time of the run: printed, never in the report

    def reports(self) -> dict[str, dict[str, float]]:
        """Each model's progressive metrics (as the learner publishes them)."""
        return {name: score.report() for name, score in self.state.scores.items()}


class Replayer:
    """Applies batches of records and learns the examples they make, in order."""

    def __init__(self, settings: Settings, client: redis.Redis, expected_examples: int) -> None:
        self.settings = settings
        self.client = client
        self.decoder = EventDecoder(settings.event_types, settings.max_event_bytes,
                                    settings.max_context_keys)  # no clock: no skew check
        self.features = FeatureStore(client, settings)
        self.outbox = Outbox(client)
        self.featurize = Featurizer.from_settings(settings)
        self.metrics = LearnerMetrics(CollectorRegistry())
        self.state = LearnerState.fresh(settings)
        self._record_scores()
        self.step = max(1, expected_examples // CURVE_POINTS)
        self.curves: dict[str, list[tuple[int, float]]] = {}
        self.alerts: list[tuple[int, Alert]] = []
        self.tally = Tally(settings.objectives)

    def decode(self, offset: int, batch: list[Record]) -> Batch:
        """The batch as the consumer hands it to the Lua step: (offset, event or why not)."""
        items: list[tuple[int, Event | Rejection]] = []
        for n, record in enumerate(batch, offset):
            value = record.value
            items.append((n, value if isinstance(value, Rejection)
                          else self.decoder.decode(value)))
        return Batch(items, {n: record.line for n, record in enumerate(batch, offset)})

    def apply(self, batch: Batch) -> list[bytes]:
        """Apply a batch to Redis (features, the join); take the examples it made out of
        the outbox, oldest first."""
        batch.result = self.features.apply_batch(TOPIC, PARTITION, batch.items)
        entries = self.outbox.pending(TOPIC, PARTITION)
        if entries:
            self.outbox.trim_through(TOPIC, PARTITION, entries[-1])
        return entries

    def absorb(self, batch: Batch, examples: list[bytes]) -> None:
        """Count an applied batch and learn the examples it made, in order."""
        self.tally.count_batch(batch.items, batch.result, batch.lines)
        for raw in examples:
            self.learn(orjson.loads(raw))

    def learn(self, example: dict) -> None:
        """One example, as the learner learns it from partition 0 of the examples topic."""
        state = self.state
        where = f"{PARTITION}/{state.examples}"
        alerts = learn_and_respond(state, self.featurize, example, where, self.metrics,
                                   self.settings)
        self.alerts += [(state.examples, alert) for alert in alerts or ()]
        self._record_scores()  # a challenger a response started
        self.tally.count_example(example, learned=alerts is not None)
        if state.examples % self.step == 0:
            self.sample_curves()

    def sample_curves(self) -> None:
        """One point per model: its recent log loss after ``examples`` examples."""
        for name, score in self.state.scores.items():
            curve = self.curves.setdefault(name, [])
            if score.examples and (not curve or curve[-1][0] != self.state.examples):
                curve.append((self.state.examples, score.recent_logloss()))

    def finish(self, source: str, seconds: float) -> ReplayResult:
        self.sample_curves()
        stats = {k.decode(): int(v) for k, v in self.client.hgetall(STATS_KEY).items()}
        pending = {name: self.client.zcard(f"due:{name}:{TOPIC}:{PARTITION}")
                   for name in self.settings.objectives}
        self.tally.finish(stats, pending)
        return ReplayResult(source, self.settings, self.state, self.tally, self.curves,
                            self.alerts, seconds)

    def _record_scores(self) -> None:
        for name, score in self.state.scores.items():
            if not isinstance(score, RecordedScore):
                assert score.examples == 0, "only a fresh score is replaced"
                self.state.scores[name] = RecordedScore(self.state.recent_window)


def replay_settings(models: list[str] | None = None, objectives: dict | None = None,
                    base: Settings | None = None) -> Settings:
    """``base`` (default: from the environment) for a replay of ``models`` (default: its
    own) and the baseline — always evaluated beside them — learning ``objectives`` (JSON
    as in ``LEARNLOOP_OBJECTIVES``; default: the base's). Model bindings and drift
    responses of other models are dropped."""
    base = base or load_settings()
    names = tuple(dict.fromkeys([*(models or base.models), base.baseline]))
    values = {name: getattr(base, name) for name in Settings.model_fields}
    values |= {"models": names, "champion": base.baseline,
               "model_objectives": {m: o for m, o in base.model_objectives.items() if m in names},
               "drift_responses": {m: r for m, r in base.drift_responses.items() if m in names}}
    if objectives is not None:
        values["objectives"] = objectives
    return load_settings(**values)


def batches(records: Iterable[Record], size: int) -> Iterator[list[Record]]:
    """``records`` in lists of ``size`` (the consumer's ``max_poll_records``)."""
    it = iter(records)
    while batch := list(islice(it, size)):
        yield batch


def replay(records: list[Record], settings: Settings, source: str) -> ReplayResult:
    """Replay ``records`` (named ``source`` in the report) on a private redis-server.

    Redis applies batch n + 1 while batch n's examples are learned (the same order of
    everything, so the same result; the redis-server works on another core)."""
    started = time.perf_counter()
    with EmbeddedStack(with_broker=False) as stack, ThreadPoolExecutor(1) as redis_side:
        client = redis_client(settings.model_copy(update={
            "redis_url": SecretStr(stack.redis_url), "redis_ssl_ca_certs": None,
            "redis_ssl_certfile": None, "redis_ssl_keyfile": None}))
        try:
            replayer = Replayer(settings, client, expected_examples=len(records))
            applied: tuple[Batch, list[bytes]] | None = None
            for n, chunk in enumerate(batches(records, settings.max_poll_records)):
                batch = replayer.decode(n * settings.max_poll_records, chunk)
                examples = redis_side.submit(replayer.apply, batch)
                if applied:
                    replayer.absorb(*applied)
                applied = (batch, examples.result())
            if applied:
                replayer.absorb(*applied)
            return replayer.finish(source, time.perf_counter() - started)
        finally:
            client.close()
