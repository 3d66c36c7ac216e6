"""Freshness under load: event published → score visible in Redis, and label published →
a served model version that has learned it.

One interactions consumer and the learner run; a paced producer thread publishes the
simulated stream at a fixed rate (about half the measured maximum) and a poller thread
watches the scores.

Event → score: from just before ``send()`` (acks=all, linger 5 ms: the producer settings of
:class:`learnloop.publish.Publisher`; linger 0 would cost the 2-core machine most of a
core in kafka-python at this rate) to the first poll that
sees the score. The consumer writes a partition's scores and its scored watermark
(``wm:scores:{topic}:{partition}``) in one Lua call, so the poller reads the four
watermarks every couple of milliseconds (cheap whatever the load) and an exposure is
visible once its partition's watermark reaches its offset (from the producer's
acknowledgement). Then its score key ``score:{champion}:{user}:{item}`` is read once: it
must hold this exposure's ``event_id`` — or a later exposure's of the same user and item
(``overwritten``) — and gives the ``version`` and ``scored_at`` fields. The poll
interval bounds the resolution.

Label → serving: for each click published in the window, the labeled example it made is
found on the examples topic afterwards (its partition and offset); the first learner
checkpoint whose consumed offset for that partition reaches it (``ckpt:meta``, polled as
checkpoints appear) includes it; the latency is from publishing the click to the first
time the poller saw a score whose ``version`` field is that checkpoint or a newer one —
when the champion trained on the label started serving. It is an upper bound by the
poll interval and by how soon the next exposure is scored after the swap (one every
~1/rate s), and it includes the learner's checkpoint interval and the scorer's reload
interval (``checkpoint_every_s``, ``model_reload_s``).
"""

from __future__ import annotations

import heapq
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

import orjson
import redis
from kafka import KafkaProducer

from benchlib.cpu import CpuMeter
from benchlib.stats import percentile, summary_ms, summary_s
from benchlib.topics import read_from_start
from benchlib.workload import Workload
from learnloop import examples
from learnloop.connect import kafka_security
from learnloop.scoring import score_key, scored_watermark_key
from learnloop.settings import Settings
from learnloop.simulate import Simulator

POLL_S = 0.002
#: The pacer sleeps only when it is this far ahead of schedule: a wakeup per event
#: (~2,500 a second) cost the 2-core machine more than the events' own sends.
AHEAD_S = 0.002
META_EVERY_S = 0.1
GIVE_UP_S = 10.0


@dataclass(order=True)
class Exposure:
    offset: int = field(init=False, default=-1)
    event_id: str = field(compare=False)
    key: str = field(compare=False)
    ts: float = field(compare=False)
    sent: float = field(compare=False)
    future: object = field(compare=False, repr=False)


class Pacer(threading.Thread):
    """Publishes pre-encoded events at ``rate`` per second for ``seconds``."""

    def __init__(self, settings: Settings, events: list[dict], rate: float,
                 seconds: float) -> None:
        super().__init__(daemon=True)
        self.settings, self.rate, self.seconds = settings, rate, seconds
        exposure_types = set(settings.exposure_types)
        self.encoded = [(e["user_id"].encode(), orjson.dumps(e), e) for e in events]
        self.is_exposure = [e["type"] in exposure_types for e in events]
        self.exposures: deque[Exposure] = deque()
        self.clicks: list[tuple[str, float]] = []  # (exposure_id, sent)
        self.sent = 0
        self.started = 0.0
        self.done = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        producer = KafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap, acks="all",
                                 linger_ms=5, **kafka_security(self.settings))
        champion, topic = self.settings.champion, self.settings.topic_interactions
        try:
            start = time.perf_counter()
            self.started = time.time()
            for n, (key, value, body) in enumerate(self.encoded):
                target = start + n / self.rate
                now = time.perf_counter()
                if target - start > self.seconds:
                    break
                if target > now + AHEAD_S:  # else send now: one wakeup per few events
                    time.sleep(target - now)
                sent = time.time()
                future = producer.send(topic, key=key, value=value)
                if self.is_exposure[n]:
                    self.exposures.append(Exposure(
                        body["event_id"], score_key(champion, body["user_id"], body["item_id"]),
                        body["ts"], sent, future))
                elif body.get("exposure_id"):
                    self.clicks.append((body["exposure_id"], sent))
                self.sent += 1
            producer.flush()
        except BaseException as exc:  # reported by the caller
            self.error = exc
        finally:
            self.done.set()
            producer.close()


class Poller(threading.Thread):
    """Sees each published exposure's score appear; records versions and checkpoints."""

    def __init__(self, settings: Settings, client: redis.Redis, pacer: Pacer,
                 meter: CpuMeter) -> None:
        super().__init__(daemon=True)
        self.client, self.pacer, self.meter = client, pacer, meter
        self.marks = [scored_watermark_key(settings.topic_interactions, p)
                      for p in range(settings.partitions)]
        # (exposure, visible at, scored_at, exact: False if overwritten by a later one)
        self.visible: list[tuple[Exposure, float, float, bool]] = []
        self.lost: list[Exposure] = []
        self.version_first_seen: dict[int, float] = {}
        self.checkpoints: dict[int, dict] = {}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # reported by the caller
            self.error = exc

    def _loop(self) -> None:
        unacked: list[Exposure] = []
        waiting: list[list[Exposure]] = [[] for _ in self.marks]  # heaps by offset
        next_meta, finished = 0.0, None
        while True:
            while self.pacer.exposures:
                unacked.append(self.pacer.exposures.popleft())
            still = []
            for exposure in unacked:
                if exposure.future.is_done:
                    if exposure.future.succeeded():
                        meta = exposure.future.value
                        exposure.offset = meta.offset
                        heapq.heappush(waiting[meta.partition], exposure)
                    else:
                        self.lost.append(exposure)
                else:
                    still.append(exposure)
            unacked = still
            marks = [-1 if m is None else int(m) for m in self.client.mget(self.marks)]
            now = time.time()
            seen = []
            for heap, mark in zip(waiting, marks, strict=True):
                while heap and heap[0].offset <= mark:
                    seen.append(heapq.heappop(heap))
            if seen:
                self._verify(seen, now)
            if now >= next_meta:
                for version, raw in self.client.hgetall("ckpt:meta").items():
                    self.checkpoints.setdefault(int(version), orjson.loads(raw))
                self.meter.snapshot()
                next_meta = now + META_EVERY_S
            if self.pacer.done.is_set():
                finished = finished or now
                if not (unacked or any(waiting)) or now - finished > GIVE_UP_S:
                    self.lost.extend(unacked + [e for heap in waiting for e in heap])
                    return
            time.sleep(POLL_S)

    def _verify(self, exposures: list[Exposure], now: float) -> None:
        pipe = self.client.pipeline(transaction=False)
        for exposure in exposures:
            pipe.hmget(exposure.key, "event_id", "ts", "version", "scored_at")
        for exposure, (seen_id, ts, version, scored_at) in zip(exposures, pipe.execute(),
                                                               strict=True):
            if version is not None:
                self.version_first_seen.setdefault(int(version), now)
            if seen_id is not None and seen_id.decode() == exposure.event_id:
                self.visible.append((exposure, now, float(scored_at), True))
            elif seen_id is not None and float(ts) >= exposure.ts:
                self.visible.append((exposure, now, float(scored_at), False))
            else:  # the watermark passed it but its score is not there: never expected
                self.lost.append(exposure)


def warm_up(settings: Settings, client: redis.Redis, timeout_s: float = 60.0) -> float:
    """One impression and its click, before the simulated stream's event times: returns
    once the consumer scored it and the learner checkpointed the example (both joined)."""
    base = Simulator(users=1, items=1).start_ts - 600
    events = [
        {"event_id": "warmup-imp", "ts": base, "user_id": "warmup", "item_id": "i0",
         "type": "impression"},
        {"event_id": "warmup-clk", "ts": base + 1, "user_id": "warmup", "item_id": "i0",
         "type": "click", "exposure_id": "warmup-imp"},
    ]
    started = time.monotonic()
    producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all",
                             **kafka_security(settings))
    try:
        for event in events:
            producer.send(settings.topic_interactions, key=b"warmup", value=orjson.dumps(event))
        producer.flush()
    finally:
        producer.close()
    key = score_key(settings.champion, "warmup", "i0")
    while not (client.exists(key) and client.exists("ckpt:latest")):
        if time.monotonic() - started > timeout_s:
            raise TimeoutError("freshness warm-up: consumer or learner did not start")
        time.sleep(0.05)
    return time.monotonic() - started


def positive_offsets(settings: Settings) -> dict[str, tuple[int, int]]:
    """exposure_id → (examples partition, offset) of every positive example."""
    consumer, parts = read_from_start(settings, settings.topic_examples, max_poll_records=5000)
    found: dict[str, tuple[int, int]] = {}
    try:
        end = consumer.end_offsets(parts)
        remaining = sum(end.values())
        while remaining > 0:
            for tp, records in consumer.poll(timeout_ms=1000).items():
                remaining -= len(records)
                for record in records:
                    for example in examples.unpack(record.value):
                        if example["label"] == 1:
                            found[example["exposure_id"]] = (tp.partition, record.offset)
    finally:
        consumer.close()
    return found


def run(settings: Settings, client: redis.Redis, users: int, items: int, rate: float,
        seconds: float, meter: CpuMeter, settle_s: float = 0.5, tail_s: float = 4.0) -> dict:
    """Publish at ``rate`` events/s for ``settle_s + seconds + tail_s``; measure in the
    middle ``seconds`` (consumer and learner must already be running)."""
    warm = warm_up(settings, client)
    impressions = int(rate * (settle_s + seconds + tail_s)) + 100  # > events needed
    events = list(Workload(users, items, impressions, seed=7).events())
    pacer = Pacer(settings, events, rate, settle_s + seconds + tail_s)
    poller = Poller(settings, client, pacer, meter)
    switch = sys.getswitchinterval()
    sys.setswitchinterval(0.0005)  # the poller must not wait 5 ms for the GIL
    cpu = os.times()
    poller.start()
    pacer.start()
    pacer.join()
    poller.join()
    cpu_after = os.times()
    sys.setswitchinterval(switch)
    busy = (cpu_after.user - cpu.user) + (cpu_after.system - cpu.system)
    for thread in (pacer, poller):
        if thread.error is not None:
            raise thread.error
    lo, hi = pacer.started + settle_s, pacer.started + settle_s + seconds
    window = [v for v in poller.visible if lo <= v[0].sent < hi]
    published = sum(1 for v in poller.visible if lo <= v[0].sent < hi) + sum(
        1 for e in poller.lost if lo <= e.sent < hi)
    result = {
        "target_rate_events_per_s": round(rate, 1),
        "achieved_rate_events_per_s": round(pacer.sent / (settle_s + seconds + tail_s), 1),
        "window_s": seconds, "warm_up_s": round(warm, 2), "poll_interval_ms": POLL_S * 1000,
        "bench_process_cpu_pct": round(100 * busy / (cpu_after.elapsed - cpu.elapsed), 1),
        "cpu_cores": meter.between(lo, hi),
        "exposures_in_window": published,
        "lost": sum(1 for e in poller.lost if lo <= e.sent < hi),
        "overwritten_before_read": sum(1 for v in window if not v[3]),
        "event_to_score": summary_ms([seen - e.sent for e, seen, _, _ in window]),
        "event_to_scored_at": summary_ms([max(at - e.sent, 0.0) for e, _, at, _ in window]),
    }
    result["per_second"] = _per_second(window, lo)
    result["label_to_serving"] = _label_to_serving(
        settings, poller, [c for c in pacer.clicks if lo <= c[1] < hi])
    return result


def _per_second(window: list[tuple[Exposure, float, float, bool]], start: float) -> list:
    """[second, exposures, p50 ms, max ms] per second of the window: a latency that builds
    up (falling behind) looks different from periodic stalls."""
    by_second: dict[int, list[float]] = {}
    for exposure, seen, _, _ in window:
        by_second.setdefault(int(exposure.sent - start), []).append(seen - exposure.sent)
    return [[n, len(v), round(percentile(v, 50) * 1000, 1), round(max(v) * 1000, 1)]
            for n, v in sorted(by_second.items())]


def _label_to_serving(settings: Settings, poller: Poller,
                      clicks: list[tuple[str, float]]) -> dict:
    offsets = positive_offsets(settings)
    checkpoints = sorted(poller.checkpoints.items())
    served = sorted(poller.version_first_seen.items())
    to_checkpoint, to_serving = [], []
    unjoined = unserved = 0
    for exposure_id, sent in clicks:
        where = offsets.get(exposure_id)
        if where is None:
            unjoined += 1  # outside its window, or a late exposure: no positive example
            continue
        partition, offset = where
        version = next((v for v, meta in checkpoints
                        if int(meta["consumed"].get(str(partition), -1)) >= offset), None)
        first = min((t for v, t in served if version is not None and v >= version),
                    default=None)
        if first is None:
            unserved += 1
            continue
        to_checkpoint.append(poller.checkpoints[version]["published_at"] - sent)
        to_serving.append(first - sent)
    if not to_serving:
        return {"clicks": len(clicks), "unjoined": unjoined, "unserved": unserved}
    return {"clicks": len(clicks), "measured": len(to_serving), "unjoined": unjoined,
            "unserved": unserved, "checkpoints_seen": len(checkpoints),
            "versions_served": len(served),
            "click_to_serving": summary_s(to_serving),
            "click_to_checkpoint": summary_s(to_checkpoint)}
