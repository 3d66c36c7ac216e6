"""learnloop's benchmark harness (issue #6): every figure of the performance targets in one run.

It starts the embedded stack itself (a fresh one per phase; ``LEARNLOOP_*`` variables are
ignored), with the demo's objective — a click within 5 minutes is a positive, silence a
negative — so examples close while the run lasts. The events are learnloop's simulated
product (:class:`learnloop.simulate.Simulator`: impressions, clicks after a delay,
Zipf-like users and items). It measures, with the machine's description:

- throughput: one ``learnloop run interactions`` process on N pre-published events
  (first → last applied event), then one ``learnloop run learner`` on the examples it
  produced (first → last checkpoint);
- efficiency: learnloop's throughput over the same model calls in-process, River alone;
- peer: learnloop's throughput over a tutorial-style per-event loop on the same events;
- the Kafka floor: kafka-python alone passing the same events through (one message out
  per exposure, nothing else) — the ceiling of any consumer built on it, and the share
  of the consumer's CPU per event that is Kafka's;
- freshness: event → score visible in Redis (p50/p95/p99) while publishing at half the
  measured maximum, and label → the served model version that learned it;
- scaling: two interactions consumer processes vs one (4 partitions);
- footprint: Redis bytes per active user and per pending exposure, and the consumer's
  RSS over the longest run (flat within ±10% over its last half?).

Targets are reported as met or missed, never asserted. The JSON goes to ``--out``.

    python scripts/bench.py --quick      # < 60 s: small sizes, one run per figure
    python scripts/bench.py              # full: 1,000,000-event consumer run, repeats
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchlib import floor, freshness, machine, peer, reference, report  # noqa: E402
from benchlib import procs as processes  # noqa: E402
from benchlib.cpu import CpuMeter, stack_pids  # noqa: E402
from benchlib.footprint import measure as measure_footprint  # noqa: E402
from benchlib.footprint import rss_summary  # noqa: E402
from benchlib.profile import summarize as summarize_profile  # noqa: E402
from benchlib.stats import median  # noqa: E402
from benchlib.throughput import run_consumers, run_learner  # noqa: E402
from benchlib.workload import Published, Workload, publish  # noqa: E402

from learnloop.connect import redis_client, running_stack  # noqa: E402
from learnloop.demo import demo_settings  # noqa: E402
from learnloop.settings import Settings, load_settings  # noqa: E402


@dataclass(frozen=True)
class Sizes:
    """How much of everything; ``--quick`` and the full run differ only here."""

    users: int = 100_000
    items: int = 10_000
    main_impressions: int = 1_000_000  # the long run: throughput, footprint, RSS
    learner_cap: int = 60_000  # examples the learner is timed on
    rounds: int = 3  # consumer rounds (1 process, then 2); the first is the long run
    round_impressions: int = 60_000  # the other rounds, and the 2-process part of each
    reference_examples: int = 30_000
    reference_exposures: int = 60_000
    repeats: int = 3  # in-process reference
    peer_events: int = 10_000
    peer_repeats: int = 3
    floor_events: int = 200_000  # the Kafka floor: kafka-python alone, same events
    freshness_s: float = 30.0
    freshness_tail_s: float = 4.0  # publishing goes on so late labels reach a served model
    memory_samples: int = 5_000


#: Under a minute at today's ~2,000 events/s: the RSS run is 12,000 impressions, not 50,000.
QUICK = Sizes(main_impressions=12_000, learner_cap=4_000, rounds=1,
              round_impressions=6_000, reference_examples=3_000, reference_exposures=10_000,
              peer_events=1_500, peer_repeats=1, floor_events=5_000, freshness_s=3.0,
              freshness_tail_s=2.5,
              memory_samples=1_000)


@dataclass
class Bench:
    """The run's settings, where logs go, and the result as it fills in."""

    sizes: Sizes
    base: Settings
    logs: Path
    profile_s: float = 0.0
    out: dict = field(default_factory=dict)


def main() -> None:
    args = parse_args()
    sizes = replace(QUICK if args.quick else Sizes(),
                    **{k: v for k, v in vars(args).items() if k in Sizes.__dataclass_fields__
                       and v is not None})
    ignored = sorted(k for k in os.environ if k.startswith("LEARNLOOP_"))
    for name in ignored:  # default settings, embedded stack: nothing from the environment
        del os.environ[name]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="learnloop-bench-") as logs:
        bench = Bench(sizes, demo_settings(load_settings()), Path(logs), args.profile)
        bench.out.update({"mode": "quick" if args.quick else "full", "sizes": asdict(sizes),
                          "ignored_environment": ignored, "settings": settings_note(bench.base)})
        for phase in (main_phase, rounds_phase, freshness_phase):
            began = time.monotonic()
            phase(bench)
            bench.out.setdefault("phase_seconds", {})[phase.__name__] = round(
                time.monotonic() - began, 1)
    result = summarize(bench)
    result["machine"]["load_average_at_end"] = machine.load_average()
    result["duration_s"] = round(time.time() - started, 1)
    result["targets"] = report.targets(result)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS))
    print(report.markdown(result))
    print(f"\n{result['duration_s']} s; JSON in {args.out}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under a minute")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench.json")
    parser.add_argument("--main-impressions", type=int, help="size of the long consumer run")
    parser.add_argument("--round-impressions", type=int)
    parser.add_argument("--rounds", type=int, help="consumer rounds, the long run included")
    parser.add_argument("--learner-cap", type=int)
    parser.add_argument("--peer-events", type=int)
    parser.add_argument("--floor-events", type=int)
    parser.add_argument("--freshness-s", type=float)
    parser.add_argument("--profile", type=float, default=0.0, metavar="SECONDS",
                        help="py-spy the long run's consumer for SECONDS (slows it a little)")
    return parser.parse_args()


def settings_note(settings: Settings) -> dict:
    return {"champion": settings.champion, "models": list(settings.models),
            "partitions": settings.partitions, "objectives": {
                name: o.model_dump() for name, o in settings.objectives.items()},
            "checkpoint_every_s": settings.checkpoint_every_s,
            "checkpoint_every_examples": settings.checkpoint_every_examples,
            "model_reload_s": settings.model_reload_s,
            "max_poll_records": settings.max_poll_records}


def main_phase(bench: Bench) -> None:
    """The long run, then footprint, in-process reference, peer and Kafka floor on its
    events."""
    sizes = bench.sizes
    with running_stack(bench.base) as settings:
        client = redis_client(settings)
        bench.out["machine"] = machine.describe(client)
        workload = Workload(sizes.users, sizes.items, sizes.main_impressions)
        result = consumer_round(bench, settings, client, workload, long_run=True)
        published = result["published"]
        samples = reference.read_examples(settings, sizes.reference_examples)
        events_per_exposure = published["events"] / published["exposures"]
        refs = {"consumer": reference.consumer_reference(
                    samples, settings, sizes.reference_exposures, events_per_exposure,
                    sizes.repeats),
                "learner": reference.learner_reference(samples, settings, sizes.repeats)}
        peers = [peer.run_peer(settings, client, sizes.peer_events, f"peer{n}")
                 for n in range(sizes.peer_repeats)]
        log(f"peer {median([p['events_per_s'] for p in peers]):,.0f} events/s")
        kafka_floor = floor.run_floor(settings, sizes.floor_events)
        log(f"Kafka floor {kafka_floor['events_per_s']:,.0f} events/s")
        client.close()
    bench.out.update({"workload": {**asdict(workload), **published}, "rounds": [result],
                      "reference": refs, "peer_runs": peers, "floor": kafka_floor})


def rounds_phase(bench: Bench) -> None:
    """Repeats of the consumer round, each on a fresh stack."""
    for n in range(1, bench.sizes.rounds):
        with running_stack(bench.base) as settings:
            client = redis_client(settings)
            workload = Workload(bench.sizes.users, bench.sizes.items,
                                bench.sizes.round_impressions, seed=10 * n)
            bench.out["rounds"].append(consumer_round(bench, settings, client, workload))
            client.close()


def consumer_round(bench: Bench, settings: Settings, client, workload: Workload,
                   long_run: bool = False) -> dict:
    """One interactions consumer on ``workload``; then two, on as many events again
    (continuing in event time); then the learner on the examples both made."""
    sizes = bench.sizes
    published = publish(settings, workload)
    tag = "long run" if long_run else f"round {len(bench.out.get('rounds', []))}"
    log(f"{tag}: published {published.events:,} events in {published.seconds} s")
    one = run_consumers(settings, client, 1, bench.logs, begin={}, published=published,
                        sample_rss=long_run, on_started=profiler(bench) if long_run else None)
    log(f"{tag}: 1 consumer {one['events_per_s']:,.0f} events/s")
    out = {"published": published.as_dict(), "one_process": one}
    if long_run and "profile" in bench.out:
        one["profile"] = summarize_profile(Path(bench.out["profile"]))
    if long_run:
        out["footprint"] = measure_footprint(
            client, one.pop("redis_used_memory_before"), published.distinct_users,
            published.events, sizes.memory_samples)
        out["footprint"]["rss"] = rss_summary(one.pop("rss_samples"))
    more = workload.after(published, sizes.round_impressions, workload.seed + 1)
    second: list[Published] = []

    def publish_more() -> Published:
        second.append(publish(settings, more, encode_first=True))
        return second[0]

    two = run_consumers(settings, client, 2, bench.logs, begin=published.end_offsets,
                        publish_after_join=publish_more)
    out["published_for_two"] = second[0].as_dict()
    log(f"{tag}: 2 consumers {two['events_per_s']:,.0f} events/s")
    out["two_processes"] = two
    out["learner"] = run_learner(settings, client, two["examples_made"], sizes.learner_cap,
                                 bench.logs)
    log(f"{tag}: learner {out['learner']['examples_per_s']:,.0f} examples/s")
    for run in (one, two):
        run.pop("redis_used_memory_before", None)
    return out


def freshness_phase(bench: Bench) -> None:
    """Consumer + learner on a fresh stack, paced at half the measured consumer maximum."""
    rate = consumer_rates(bench.out)["median"] / 2
    with running_stack(bench.base) as settings:
        client = redis_client(settings)
        procs = processes.start(settings, "interactions", 1, bench.logs)
        procs += processes.start(settings, "learner", 1, bench.logs)
        meter = CpuMeter({**stack_pids(settings, client), "consumer": [procs[0].pid],
                          "learner": [procs[1].pid]})
        try:
            result = freshness.run(settings, client, bench.sizes.users, bench.sizes.items, rate,
                                   bench.sizes.freshness_s, meter,
                                   tail_s=bench.sizes.freshness_tail_s)
            processes.check_alive(procs)
        finally:
            processes.stop(procs)
            client.close()
    log(f"freshness: p99 {result['event_to_score']['p99_ms']} ms at {rate:,.0f} events/s")
    bench.out["freshness"] = result


def consumer_rates(out: dict) -> dict:
    """Every one-process consumer run, and their median."""
    rates = [r["one_process"]["events_per_s"] for r in out["rounds"]]
    return {"median": median(rates), "runs": rates}


def summarize(bench: Bench) -> dict:
    """The sections of the result: each headline figure with the runs behind it."""
    out = bench.out
    rounds = out["rounds"]
    consumer = consumer_rates(out)
    learner = median([r["learner"]["examples_per_s"] for r in rounds])
    peers = [p["events_per_s"] for p in out["peer_runs"]]
    refs = out["reference"]
    ratios = [r["two_processes"]["events_per_s"] / r["one_process"]["events_per_s"]
              for r in rounds]
    return {
        "mode": out["mode"], "machine": out["machine"], "sizes": out["sizes"],
        "settings": out["settings"], "ignored_environment": out["ignored_environment"],
        "workload": out["workload"],
        "throughput": {
            "consumer": {"events_per_s": consumer["median"], "runs": consumer["runs"],
                         "long_run": rounds[0]["one_process"]},
            "learner": {"examples_per_s": learner,
                        "runs": [r["learner"] for r in rounds]},
        },
        "efficiency": {
            "consumer": {"ratio": round(consumer["median"] / refs["consumer"]["events_per_s"], 4),
                         "reference": refs["consumer"]},
            "learner": {"ratio": round(learner / refs["learner"]["examples_per_s"], 4),
                        "reference": refs["learner"]},
        },
        "peer": {"ratio": round(consumer["median"] / median(peers), 2),
                 "events_per_s": median(peers), "runs": out["peer_runs"]},
        "floor": {**out["floor"],
                  "consumer_ratio": round(consumer["median"] / out["floor"]["events_per_s"], 3)},
        "freshness": out["freshness"],
        "scaling": {"ratio": round(median(ratios), 3), "runs": [round(x, 3) for x in ratios],
                    "partitions": out["settings"]["partitions"],
                    "two_processes": [r["two_processes"] for r in rounds]},
        "footprint": rounds[0]["footprint"],
        "phase_seconds": out["phase_seconds"],
        "rounds": [{k: v for k, v in r.items() if k != "footprint"} for r in rounds],
    }


def profiler(bench: Bench):
    """With ``--profile``: py-spy the consumer (raw collapsed stacks next to the JSON)."""
    if not bench.profile_s:
        return None
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).is_file():
        log("--profile: no py-spy on PATH or beside this Python (pip install py-spy)")
        return None

    def start(procs: list[processes.Proc]) -> subprocess.Popen:
        target = ROOT / "out" / "consumer-profile.txt"
        target.parent.mkdir(exist_ok=True)
        bench.out["profile"] = str(target)
        with target.with_suffix(".log").open("wb") as errors:
            return subprocess.Popen(
                [spy, "record", "--pid", str(procs[0].pid), "--duration",
                 str(round(bench.profile_s)), "--rate", "100", "--format", "raw", "--idle",
                 "--nonblocking", "-o", str(target)],
                stdout=errors, stderr=subprocess.STDOUT)

    return start


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
