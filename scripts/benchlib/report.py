"""The targets of issue #6, each figure beside its target, met or missed (never asserted)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    name: str
    path: tuple[str, ...]  # where the figure is in the result JSON
    unit: str
    op: str  # ">=", "<=" or "flat"
    bound: float | None = None

    def check(self, value: object) -> bool | None:
        if value is None:
            return None
        if self.op == ">=":
            return value >= self.bound
        if self.op == "<=":
            return value <= self.bound
        return bool(value)

    def describe(self) -> str:
        if self.op == "flat":
            return "flat ±10%"
        return f"{self.op.replace('>=', '≥').replace('<=', '≤')} {_fmt(self.bound)}"


TARGETS = (
    Target("consumer, one process", ("throughput", "consumer", "events_per_s"), "events/s",
           ">=", 20_000),
    Target("learner", ("throughput", "learner", "examples_per_s"), "examples/s", ">=", 15_000),
    Target("efficiency, consumer vs River alone", ("efficiency", "consumer", "ratio"), "×",
           ">=", 0.7),
    Target("efficiency, learner vs River alone", ("efficiency", "learner", "ratio"), "×",
           ">=", 0.7),
    Target("vs tutorial-style peer", ("peer", "ratio"), "×", ">=", 5),
    Target("event → score p99 at half max", ("freshness", "event_to_score", "p99_ms"), "ms",
           "<=", 50),
    Target("2 consumer processes vs 1", ("scaling", "ratio"), "×", ">=", 1.7),
    Target("Redis per active user", ("footprint", "bytes_per_active_user"), "bytes", "<=",
           1024),
    Target("consumer RSS over the last half", ("footprint", "rss", "flat"), "", "flat"),
)

#: Figures shown without a target, for context.
CONTEXT = (
    ("event → score p50 / p95", ("freshness", "event_to_score"), ("p50_ms", "p95_ms"), "ms"),
    ("label → serving model p50 / p99",
     ("freshness", "label_to_serving", "click_to_serving"), ("p50_s", "p99_s"), "s"),
    ("Redis per pending exposure", ("footprint", "pending_exposure", "bytes"), (), "bytes"),
    ("Redis per event", ("footprint", "bytes_per_event"), (), "bytes"),
)


def lookup(result: dict, path: tuple[str, ...]) -> object:
    for part in path:
        if not isinstance(result, dict) or part not in result:
            return None
        result = result[part]
    return result


def _fmt(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: "n/a"}[value]
    if isinstance(value, int) or (isinstance(value, float) and value >= 100):
        return f"{value:,.0f}"
    return f"{value:.2f}"


def targets(result: dict) -> list[dict]:
    rows = []
    for target in TARGETS:
        value = lookup(result, target.path)
        rows.append({"name": target.name, "value": value, "unit": target.unit,
                     "target": target.describe(), "met": target.check(value)})
    return rows


def markdown(result: dict) -> str:
    machine = result["machine"]
    lines = [
        f"learnloop bench ({result['mode']}) on {machine['cpu_model']}, {machine['cores']} "
        f"cores, Python {machine['python']}, river {machine['river']}, redis-py "
        f"{machine['redis_py']}, kafka-python {machine['kafka_python']} (CRCs in "
        f"{'C' if machine.get('kafka_crcs_in_c') else 'pure Python'}), redis-server "
        f"{machine['redis_server']}, {machine['kafka_broker']}; load average "
        f"{machine['load_average_at_start']} → {machine.get('load_average_at_end')}",
        "",
        "| figure | value | target | |",
        "|---|---|---|---|",
    ]
    for row in result["targets"]:
        mark = {True: "met", False: "**missed**", None: "n/a"}[row["met"]]
        value = _fmt(row["value"]) + (f" {row['unit']}" if row["unit"] else "")
        lines.append(f"| {row['name']} | {value} | {row['target']} | {mark} |")
    for name, path, keys, unit in CONTEXT:
        found = lookup(result, path)
        if keys and isinstance(found, dict):
            value = " / ".join(_fmt(found.get(k)) for k in keys)
        else:
            value = _fmt(found)
        lines.append(f"| {name} | {value} {unit} | | |")
    return "\n".join(lines + [""] + notes(result))


def notes(result: dict) -> list[str]:
    """How each figure was obtained, in one line each."""
    rounds = result["rounds"]
    long_run = rounds[0]["one_process"]
    rss = result["footprint"]["rss"]
    fresh = result["freshness"]
    floor = result["floor"]
    return [
        f"- consumer: median of {len(rounds)} one-process run(s) "
        f"{[round(r) for r in result['throughput']['consumer']['runs']]} events/s; the "
        f"long run is {long_run['messages']:,} events; learner: median of "
        f"{len(rounds)} run(s) of up to {result['sizes']['learner_cap']:,} examples",
        f"- CPU per event over the long run (µs): {long_run.get('cpu_us_per_event')}",
        f"- Kafka floor (kafka-python alone: poll, parse, one message out per exposure): "
        f"{_fmt(floor['events_per_s'])} events/s, {floor['cpu_us_per_event']} µs of "
        f"CPU per event over {_fmt(floor['events'])} events; the consumer does "
        f"{floor['consumer_ratio']} of it",
        f"- scaling: per round, 2 processes / 1 process "
        f"{result['scaling']['runs']} ({result['scaling']['partitions']} partitions)",
        f"- RSS: {rss.get('samples')} samples over the {long_run['messages']:,}-event run, "
        f"last half within ±{rss.get('last_half_spread_pct')}% of "
        f"{rss.get('last_half_median_mib')} MiB",
        f"- freshness at {fresh['achieved_rate_events_per_s']:,.0f} events/s (half the "
        f"consumer median) over {fresh['window_s']} s, {fresh['event_to_score']['n']:,} "
        f"exposures; the benchmark itself used {fresh['bench_process_cpu_pct']}% of a core",
    ]
