"""``learnloop demo``: the embedded stack, real consumer processes, a simulated product.

It publishes simulated impressions and clicks (plus a few malformed messages, to show
the dead-letter path), shows progress live, waits until every message is accounted
for, and ends with a summary read back from Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack
from dataclasses import dataclass
from typing import IO

import orjson
import redis
from rich.console import Console
from rich.live import Live
from rich.table import Table

from learnloop.connect import redis_client, running_stack
from learnloop.embedded import _die_with_parent
from learnloop.errors import LearnloopError
from learnloop.events import Event
from learnloop.features import STATS_KEY
from learnloop.objective import FeedbackRule, Objective
from learnloop.publish import Publisher
from learnloop.reader import read_model_metrics, read_score, read_top
from learnloop.settings import Settings
from learnloop.simulate import Simulator

#: One malformed message is sent after every this many events.
BAD_EVERY = 500
_BAD_MESSAGES = (b"not json", b"\xff\xfe\x00", b'{"event_id": "x"}', b'{"event_id":"y","ts":1,'
                 b'"user_id":"u","type":"teleport"}')


@dataclass
class Progress:
    """Counters shown live and in the summary."""

    published: int = 0
    malformed: int = 0
    applied: int = 0
    exposures: int = 0
    duplicates: int = 0
    rejected: int = 0
    examples: int = 0
    positives: int = 0
    learned: int = 0
    started: float = 0.0

    @property
    def accounted(self) -> int:
        return self.applied + self.duplicates + self.rejected

    def refresh(self, client: redis.Redis, baseline: str = "item_ctr") -> None:
        stats = {k.decode(): int(v) for k, v in client.hgetall(STATS_KEY).items()}
        self.applied = stats.get("events", 0)
        self.exposures = stats.get("exposures", 0)
        self.duplicates = stats.get("duplicates", 0)
        self.rejected = sum(v for k, v in stats.items() if k.startswith("rejected:"))
        self.examples = sum(v for k, v in stats.items() if k.startswith("examples:"))
        self.positives = sum(v for k, v in stats.items() if k.endswith(":positive"))
        self.learned = int(read_model_metrics(client, baseline).get("examples", 0))

    def table(self) -> Table:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        table = Table(title="learnloop demo", show_header=False)
        for name, value in (
            ("published", f"{self.published + self.malformed:,}"),
            ("applied to features", f"{self.applied:,}"),
            ("exposures scored", f"{self.exposures:,}"),
            ("dead letters", f"{self.rejected:,}"),
            ("labeled examples (positive)", f"{self.examples:,} ({self.positives:,})"),
            ("learned by every model", f"{self.learned:,}"),
            ("lag (messages)", f"{self.published + self.malformed - self.accounted:,}"),
            ("throughput (events/s)", f"{self.accounted / elapsed:,.0f}"),
        ):
            table.add_row(name, value)
        return table


#: The demo's objective: a click within 5 minutes is a positive, silence a negative.
DEMO_OBJECTIVES = {"clicks": Objective(
    exposures=("impression",), feedback={"click": FeedbackRule(label=1, window_s=300)},
    negative_label=0, allowed_lateness_s=30,
)}


def demo_settings(settings: Settings) -> Settings:
    """The demo's overrides: a short objective, fast group joins, frequent checkpoints."""
    return settings.model_copy(update={
        "objectives": DEMO_OBJECTIVES, "metrics_port": 0, "max_poll_interval_ms": 5000,
        "session_timeout_ms": 6000, "checkpoint_every_s": 1.0, "model_reload_s": 1.0,
    })


def start_consumers(settings: Settings, count: int, consumer: str = "interactions", *,
                    extra_env: dict[str, str] | None = None,
                    log: IO | None = None) -> list[subprocess.Popen]:
    """``count`` ``learnloop run CONSUMER`` processes that die with this one (their
    stderr to ``log``, else discarded)."""
    env = {**os.environ, **settings.env(), **(extra_env or {})}
    return [
        subprocess.Popen(
            [sys.executable, "-m", "learnloop.cli", "run", consumer], env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=log if log is not None else subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
        for _ in range(count)
    ]


def stop_processes(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_demo(
    settings: Settings, *, users: int, items: int, impressions: int, consumers: int,
    console: Console | None = None, timeout_s: float = 150.0,
) -> Progress:
    """Run the whole demo; return the final counters (also printed as a summary)."""
    console = console or Console()
    progress = Progress()
    with ExitStack() as cleanup:
        live_settings = cleanup.enter_context(running_stack(demo_settings(settings)))
        client = redis_client(live_settings)
        processes = start_consumers(live_settings, consumers)
        processes += start_consumers(live_settings, 1, "learner")
        cleanup.callback(stop_processes, processes)
        simulator = Simulator(users=users, items=items, seconds_between_impressions=0.2)
        publisher = cleanup.enter_context(Publisher(live_settings))
        progress.started = time.monotonic()
        deadline = progress.started + timeout_s
        with Live(progress.table(), console=console, refresh_per_second=4) as live:
            for n, body in enumerate(simulator.events(impressions), start=1):
                publisher.publish(Event.model_validate(body))
                progress.published += 1
                if n % BAD_EVERY == 0:
                    bad = _BAD_MESSAGES[(n // BAD_EVERY) % len(_BAD_MESSAGES)]
                    publisher.producer.send(publisher.topic, key=b"demo", value=bad)
                    progress.malformed += 1
                if n % 2000 == 0:
                    progress.refresh(client, live_settings.baseline)
                    live.update(progress.table())
            publisher.flush()
            while (progress.accounted < progress.published + progress.malformed
                   or progress.learned < progress.examples):
                if time.monotonic() > deadline:
                    raise LearnloopError(f"demo timed out: {progress}")
                if any(p.poll() is not None for p in processes):
                    raise LearnloopError("a consumer process exited early")
                time.sleep(0.25)
                progress.refresh(client, live_settings.baseline)
                live.update(progress.table())
        summarize(console, client, live_settings, progress, simulator)
    return progress


def models_table(client: redis.Redis, settings: Settings) -> Table:
    """Each model's progressive metrics beside the baseline's."""
    table = Table(title="progressive validation (predict, then learn, on every example)")
    for column in ("model", "examples", "log loss", "ROC AUC", "accuracy", "lift vs baseline"):
        table.add_column(column)
    for name in settings.models:
        m = read_model_metrics(client, name)
        tag = " (baseline)" if name == settings.baseline else ""
        table.add_row(name + tag, f"{int(m.get('examples', 0)):,}",
                      *(f"{m.get(k, float('nan')):.4f}"
                        for k in ("logloss", "roc_auc", "accuracy", "lift")))
    return table


def summarize(console: Console, client: redis.Redis, settings: Settings,
              progress: Progress, simulator: Simulator) -> None:
    """Print what happened, with one user's top items and one explained score."""
    elapsed = time.monotonic() - progress.started
    console.print(
        f"\n[bold]{progress.accounted:,}[/bold] messages in {elapsed:.1f}s "
        f"({progress.accounted / elapsed:,.0f}/s): {progress.applied:,} events applied, "
        f"{progress.exposures:,} exposures scored by [bold]{settings.champion}[/bold], "
        f"{progress.rejected:,} dead letters, {progress.duplicates:,} duplicates; "
        f"{progress.examples:,} labeled examples ({progress.positives:,} positive) learned "
        f"by every model."
    )
    console.print(models_table(client, settings))
    user = "u0"
    best = read_top(client, settings.champion, user, 5)
    console.print(f"Top items of {user}: " + ", ".join(f"{i} ({s:.3f})" for i, s in best))
    if best:
        found = read_score(client, settings.champion, user, best[0][0])
        if found:
            console.print(f"Why {best[0][0]}: {orjson.dumps(found['explain']).decode()}")
    console.print("The embedded stack stops with the demo; `learnloop up` keeps one running.")
