"""Sustained throughput of interactions consumer processes, then of the learner process.

Consumers: the events are pre-published, then the processes are started (or, for
several processes, they are started first and the events published once each has its
partitions — see :func:`run_consumers`). Every 25 ms each partition's feature
watermark (the last offset applied, written in the same Lua call as the features) is
read. Each process logs which
partitions it was assigned, so each partition's progress is charged to its owner. The
rate is taken over the window where every process is busy: from the first applied
event (or the last assignment, or the end of publishing, if later) to the moment the
first process has drained its partitions. With one process that is first → last applied
event; with two it is their parallel capacity — Zipf-skewed keys make one process's
share larger, and the rate including the tail where it works alone is reported apart
(``drain_events_per_s``).

Learner: the examples the consumers produced are on the examples topic; the learner is
started and every checkpoint's metadata (``ckpt:meta``: examples learned, offsets,
published_at) is recorded as it appears. The rate is examples between the first and the
last checkpoint over the time between them, so neither start-up nor the group join
counts.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import orjson
import redis

from benchlib import procs as processes
from benchlib.cpu import CpuMeter, stack_pids
from benchlib.footprint import redis_used_memory
from benchlib.workload import Published
from learnloop.features import STATS_KEY, outbox_key, watermark_key
from learnloop.scoring import scored_watermark_key
from learnloop.settings import Settings

POLL_S = 0.025
SAMPLE_EVERY_S = 0.25  # RSS and CPU
PROCESSED = "learnloop_events_processed_total"


def stats(client: redis.Redis) -> dict[str, int]:
    return {k.decode(): int(v) for k, v in client.hgetall(STATS_KEY).items()}


def accounted(counters: dict[str, int]) -> int:
    """Messages the consumers are done with: applied, duplicates, dead letters."""
    return counters.get("events", 0) + counters.get("duplicates", 0) + sum(
        v for k, v in counters.items() if k.startswith("rejected:"))


def examples_made(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith("examples:"))


class Progress:
    """Polled progress of one run: per partition, messages applied since ``begin``."""

    def __init__(self, settings: Settings, client: redis.Redis, begin: dict[int, int],
                 end: dict[int, int]) -> None:
        self.client = client
        partitions = range(settings.partitions)
        self.begin = {p: begin.get(p, 0) for p in partitions}
        self.end = {p: end.get(p, self.begin[p]) for p in partitions}
        self.keys = {p: watermark_key(settings.topic_interactions, p) for p in partitions}
        self.total = sum(self.end[p] - self.begin[p] for p in partitions)
        self.samples: list[tuple[float, dict[int, int]]] = []

    def poll(self) -> int:
        """Record one sample; return messages applied in this run so far (a partition's
        feature watermark moves past dead letters too)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.keys.values():
            pipe.get(key)
        marks = pipe.execute()
        applied = {p: max(0, (int(m) + 1 if m is not None else 0) - self.begin[p])
                   for p, m in zip(self.keys, marks, strict=True)}
        self.samples.append((time.time(), applied))
        return sum(applied.values())

    def at(self, when: float, partitions: set[int]) -> float:
        """Messages of ``partitions`` applied at ``when`` (linear between samples)."""
        def total(sample: dict[int, int]) -> int:
            return sum(sample[p] for p in partitions)

        for (t0, a), (t1, b) in zip(self.samples, self.samples[1:], strict=False):
            if t0 <= when <= t1:
                return total(a) + (total(b) - total(a)) * (when - t0) / max(t1 - t0, 1e-9)
        return total(self.samples[-1][1] if when > self.samples[-1][0] else self.samples[0][1])

    def drained_at(self, partitions: set[int]) -> float:
        """When every one of ``partitions`` was applied to its end."""
        for t, sample in self.samples:
            if all(sample[p] >= self.end[p] - self.begin[p] for p in partitions):
                return t
        return self.samples[-1][0]


def run_consumers(settings: Settings, client: redis.Redis, count: int, log_dir: Path,
                  begin: dict[int, int], published: Published | None = None,
                  publish_after_join: Callable[[], Published] | None = None,
                  sample_rss: bool = False, on_started=None, timeout_s: float = 3600.0) -> dict:
    """Time ``count`` interactions consumers on the messages after the ``begin`` offsets.

    Either they were ``published`` before the processes start (the specified method), or
    ``publish_after_join`` publishes them once every process has its partitions, and the
    window starts when publishing is done — so a process that is assigned late cannot
    leave the other to work alone (valid while publishing outpaces the consumers:
    ``caught_up_while_publishing`` says how far they got meanwhile). ``on_started(procs)``
    is called at the first applied event (a profiler); what it returns is waited for.
    """
    memory_before = redis_used_memory(client)
    accounted_before = accounted(stats(client))
    started = time.time()
    procs = processes.start(settings, "interactions", count, log_dir)
    meter = CpuMeter({**stack_pids(settings, client), "consumers": [p.pid for p in procs]})
    rss: list[tuple[float, int, int]] = []  # (wall time, applied, bytes)
    profiler = None
    first_applied = floor = None
    try:
        if publish_after_join is not None:
            _wait_assigned(procs, settings.partitions, started)
            published = publish_after_join()
            floor = time.time()
        progress = Progress(settings, client, begin, published.end_offsets)
        deadline = time.monotonic() + timeout_s
        next_rss = 0.0
        while True:
            done = progress.poll()
            now = progress.samples[-1][0]
            if done and first_applied is None:
                first_applied = now
                profiler = on_started(procs) if on_started is not None else None
            if done and now >= next_rss:
                meter.snapshot()
                value = procs[0].rss_bytes() if sample_rss else None
                if value is not None:
                    rss.append((now, done, value))
                next_rss = now + SAMPLE_EVERY_S
            if done >= progress.total:
                meter.snapshot()
                break
            processes.check_alive(procs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"consumers applied {done} of {progress.total} in "
                                   f"{timeout_s}s")
            time.sleep(POLL_S)
        _wait_drained(settings, client)
        per_process = [p.counter(PROCESSED) for p in procs]
        owners = [{part for t, part in p.assignments() if t >= started} for p in procs]
        assigned_at = max((t for p in procs for t, _ in p.assignments() if t >= started),
                          default=started)
    finally:
        processes.stop(procs)
        if profiler is not None:
            profiler.wait()
    result = _window(progress, max(first_applied, assigned_at, floor or 0.0), owners)
    result["cpu_cores"] = meter.between(result.pop("start"), result.pop("end"))
    result["cpu_us_per_event"] = cpu_per_event(result["cpu_cores"], result["measured_messages"])
    result.update({
        "processes": count, "messages": progress.total,
        "method": "published, then processes started" if floor is None
        else "processes assigned, then published; window from publish done",
        "first_applied_after_start_s": round(first_applied - started, 2),
        "examples_made": examples_made(stats(client)),
        # cross-check: stats:interactions agrees with the partition watermarks
        "accounted_in_stats": accounted(stats(client)) - accounted_before,
        "events_per_process": per_process, "partitions_per_process": [sorted(o) for o in owners],
        "redis_used_memory_before": memory_before, "profiled": profiler is not None,
    })
    if floor is not None:
        result["caught_up_while_publishing"] = round(
            progress.at(floor, set(progress.begin)) / progress.total, 3)
    if sample_rss:
        result["rss_samples"] = rss
    return result


def _wait_assigned(procs: list[processes.Proc], partitions: int, since: float,
                   timeout_s: float = 60.0) -> None:
    """Until every process logged an assignment and together they own every partition."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        owned = [{p for t, p in proc.assignments() if t >= since} for proc in procs]
        if all(owned) and set().union(*owned) == set(range(partitions)):
            return
        processes.check_alive(procs)
        time.sleep(0.05)
    raise TimeoutError("consumer processes were not all assigned partitions")


def _window(progress: Progress, start: float, owners: list[set[int]]) -> dict:
    everything = set(progress.begin)
    end_all = progress.samples[-1][0]
    start = max(start, progress.samples[0][0])
    if len(owners) > 1 and all(owners) and set().union(*owners) == everything:
        end = min(progress.drained_at(o) for o in owners)
    else:  # one process (or ownership unknown): until the last applied event
        end = end_all
    done = progress.at(end, everything) - progress.at(start, everything)
    drained = progress.total - progress.at(start, everything)
    return {
        "events_per_s": round(done / (end - start), 1) if end > start else None,
        "seconds": round(end - start, 3), "measured_messages": round(done),
        "window": "first applied → last applied" if end == end_all
        else "all processes busy, until the first drained its partitions",
        "drain_events_per_s": round(drained / (end_all - start), 1),
        "start": start, "end": end,
    }


def _wait_drained(settings: Settings, client: redis.Redis, timeout_s: float = 60.0) -> None:
    """Until every partition's scores are written and its example outbox is published."""
    topic = settings.topic_interactions
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        pipe = client.pipeline(transaction=False)
        for p in range(settings.partitions):
            pipe.get(watermark_key(topic, p))
            pipe.get(scored_watermark_key(topic, p))
            pipe.llen(outbox_key(topic, p))
        flat = pipe.execute()
        if all(flat[i] == flat[i + 1] and flat[i + 2] == 0 for i in range(0, len(flat), 3)):
            return
        time.sleep(POLL_S)
    raise TimeoutError("consumers did not finish scoring and publishing examples")


def run_learner(settings: Settings, client: redis.Redis, available: int, cap: int,
                log_dir: Path, timeout_s: float = 3600.0) -> dict:
    """Start the learner on ``available`` examples; time it until it has checkpointed
    ``min(available, cap)`` of them (it is stopped then, the rest unlearned)."""
    target = min(available, cap)
    procs = processes.start(settings, "learner", 1, log_dir)
    meter = CpuMeter({**stack_pids(settings, client), "learner": [procs[0].pid]})
    seen: dict[int, dict] = {}
    try:
        deadline = time.monotonic() + timeout_s
        while not seen or max(m["examples"] for m in seen.values()) < target:
            for version, raw in client.hgetall("ckpt:meta").items():
                seen.setdefault(int(version), orjson.loads(raw))
            if seen:
                meter.snapshot()
            processes.check_alive(procs)
            if time.monotonic() > deadline:
                raise TimeoutError(f"learner did not reach {target} examples in {timeout_s}s")
            time.sleep(0.05)
    finally:
        processes.stop(procs)
    checkpoints = [seen[v] for v in sorted(seen)]
    first, last = checkpoints[0], checkpoints[-1]
    seconds = last["published_at"] - first["published_at"]
    learned = last["examples"] - first["examples"]
    return {
        "examples_per_s": round(learned / seconds, 1) if seconds > 0 else None,
        "seconds": round(seconds, 3), "measured_examples": learned,
        "examples_available": available, "examples_learned": last["examples"],
        "checkpoints_seen": len(checkpoints),
        "window": "first checkpoint → last checkpoint (ckpt:meta examples, published_at)",
        "cpu_cores": meter.between(first["published_at"], last["published_at"]),
    }


def cpu_per_event(cores: dict, events: int) -> dict:
    """Microseconds of CPU per event of each process group over the measured window:
    steadier from run to run than a rate where the host steals CPU."""
    if not events:
        return {}
    return {name: round(cores[name] * cores["over_s"] / events * 1e6, 1)
            for name in ("redis", "consumers", "broker", "machine")}
