"""``learnloop demo``: the embedded stack, real consumer processes, a simulated product.

It publishes a simulated product's impressions, clicks and purchases — new items join
over time, and the users' preferences shift at a known impression — plus a few
malformed messages (the dead-letter path). Exposures become labeled examples when
clicked, or when their attribution window closes; the product stops at its last
impression, so the exposures of its last minutes are no examples yet. The live view
shows throughput, lag, staleness, each model's recent log loss and AUC beside the
baseline's and the oracle's (the simulator's true probabilities, on the same examples),
and drift alerts as they fire. It ends with a summary read back from Redis and a PNG of
the learning curves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import orjson
import redis
from rich import box
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table

from learnloop.alerts import recent_alerts
from learnloop.connect import redis_client, running_stack
from learnloop.curves import ExampleTap, ModelCurves
from learnloop.embedded import _die_with_parent
from learnloop.errors import LearnloopError
from learnloop.events import Event
from learnloop.features import STATS_KEY
from learnloop.objective import FeedbackRule, Objective
from learnloop.oracle import Oracle
from learnloop.publish import Publisher
from learnloop.reader import read_model_metrics, read_score, read_top
from learnloop.settings import Settings
from learnloop.simulate import Simulator
from learnloop.usercap import UserCap

#: One malformed message is sent after every this many events.
BAD_EVERY = 500
_BAD_MESSAGES = (b"not json", b"\xff\xfe\x00", b'{"event_id": "x"}', b'{"event_id":"y","ts":1,'
                 b'"user_id":"u","type":"teleport"}')
#: Where the chart goes unless told otherwise (relative to the working directory).
DEFAULT_CHART = Path("out/demo-chart.png")


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
    staleness_s: float | None = None  # since the learner's last published checkpoint
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
        metrics = read_model_metrics(client, baseline)
        self.learned = int(metrics.get("examples", 0))
        if "updated_at" in metrics:
            self.staleness_s = max(time.time() - metrics["updated_at"], 0.0)

    def table(self) -> Table:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        stale = "-" if self.staleness_s is None else f"{self.staleness_s:.1f}s"
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
            ("model staleness (since checkpoint)", stale),
        ):
            table.add_row(name, value)
        return table


#: The demo's objective: a click within 5 minutes is a positive, silence a negative.
DEMO_OBJECTIVES = {"clicks": Objective(
    exposures=("impression",), feedback={"click": FeedbackRule(label=1, window_s=300)},
    negative_label=0, allowed_lateness_s=30,
)}
#: The demo's product: one impression a second of event time (15,000 make 4.2 hours, so
#: hour-long feature half-lives can follow the drift), items that differ clearly in
#: appeal, purchases after some clicks, a new item every 100 impressions.
DEMO_PRODUCT = {"seconds_between_impressions": 1.0, "appeal_spread": 2.0,
                "purchase_rate": 0.2, "new_item_every": 100}
#: Metrics published often enough to draw the learning curves (the learner checkpoints
#: after each poll of at most LEARNER_POLL records); concept and label drift alerts at
#: most every 10 minutes of event time (feature drift is off: the warming-up counters
#: of a fresh stack would drift all the time).
_CURVE_SETTINGS = {"checkpoint_every_s": 0.5, "checkpoint_every_examples": 250,
                   "drift_cooldown_s": 600.0, "drift_max_features": 0}
LEARNER_POLL = 250
#: How often the view is refreshed, seconds (the curves are sampled more often).
REFRESH_S = 0.5


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


@dataclass
class Watch:
    """What the live view, the summary and the chart show, refreshed from Redis (counters,
    model metrics, alerts) and the examples topic (the oracle)."""

    settings: Settings
    client: redis.Redis
    progress: Progress
    tap: ExampleTap
    curves: ModelCurves = field(init=False)
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    alerts: list[dict] = field(default_factory=list)  # oldest first

    def __post_init__(self) -> None:
        self.curves = ModelCurves(self.client, self.settings.models)

    def refresh(self) -> None:
        self.progress.refresh(self.client, self.settings.baseline)
        self.tap.poll()
        self.metrics = self.curves.sample()
        known = {alert["id"] for alert in self.alerts}
        self.alerts += [alert for alert in reversed(recent_alerts(self.client, 100))
                        if alert["id"] not in known]

    @property
    def done(self) -> bool:
        """Every message accounted for, every example read by the oracle and learned."""
        progress = self.progress
        return (progress.accounted >= progress.published + progress.malformed
                and self.tap.read >= progress.examples
                and progress.learned >= self.tap.examples)

    def view(self) -> Group:
        return Group(self.progress.table(), models_table(self.metrics, self.tap.report(),
                                                         self.settings),
                     alerts_table(self.alerts[-6:], self.tap))


@dataclass
class DemoResult:
    """What the demo showed: the final counters, each model's metrics as read from Redis
    at the end (the summary prints these), the oracle's on the same examples, alerts."""

    progress: Progress
    models: dict[str, dict[str, float]]
    oracle: dict[str, float]
    alerts: list[dict]
    chart: Path
    drift_example: int | None  # where the drift falls on the examples axis


def run_demo(
    settings: Settings, *, users: int, items: int, impressions: int, consumers: int,
    console: Console | None = None, timeout_s: float = 150.0, drift_at: int | None = None,
    chart: Path = DEFAULT_CHART, seed: int = 0,
) -> DemoResult:
    """Run the whole demo (preferences shift at impression ``drift_at``, if given);
    print a summary, save the chart to ``chart`` and return what was shown.

    The topics get one partition per interactions consumer. With one (the default of
    ``learnloop demo``), the learner and the oracle read the examples in the same order,
    so their recent windows hold the same examples; with more, the learner interleaves
    partitions as its polls return them and the recent figures compare approximately.
    """
    console = console or Console()
    progress = Progress()
    simulator = Simulator(users=users, items=items, seed=seed, drift_at=drift_at,
                          **DEMO_PRODUCT)
    truth: dict = {}
    with ExitStack() as cleanup:
        live_settings = cleanup.enter_context(running_stack(demo_settings(settings).model_copy(
            update={**_CURVE_SETTINGS, "partitions": consumers})))
        client = redis_client(live_settings)
        processes = start_consumers(live_settings, consumers)
        processes += start_consumers(live_settings, 1, "learner", extra_env={
            "LEARNLOOP_MAX_POLL_RECORDS": str(LEARNER_POLL)})
        cleanup.callback(stop_processes, processes)
        tap = ExampleTap(live_settings, _oracle(live_settings, simulator, truth))
        cleanup.callback(tap.close)
        watch = Watch(live_settings, client, progress, tap)
        watch.curves.start()
        cleanup.callback(watch.curves.stop)
        publisher = cleanup.enter_context(Publisher(live_settings))
        progress.started = time.monotonic()
        with Live(watch.view(), console=console, refresh_per_second=2, transient=True) as live:
            events = until_last_impression(simulator.events(impressions, truth))
            publish_events(events, publisher, progress,
                           lambda: (watch.refresh(), live.update(watch.view())))
            publisher.flush()
            deadline = progress.started + timeout_s
            while not watch.done:
                if time.monotonic() > deadline:
                    raise LearnloopError(f"demo timed out: {progress}")
                if any(p.poll() is not None for p in processes):
                    raise LearnloopError("a consumer process exited early")
                time.sleep(REFRESH_S)
                watch.refresh()
                live.update(watch.view())
        return summarize(console, watch, simulator, chart)


def _oracle(settings: Settings, simulator: Simulator, truth: dict) -> Oracle:
    """The oracle of the objective the baseline (and so every compared model) learns."""
    name = settings.objective_of(settings.baseline)
    return Oracle(name, settings.objectives[name], simulator, truth, settings.recent_window,
                  UserCap(settings.max_examples_per_user, settings.user_cap_window_s))


def until_last_impression(events: Iterable[dict]) -> Iterator[dict]:
    """The simulated events up to the last impression: the product stops there. (The
    simulator would go on with the feedback still due: a tail of clicks and purchases
    only, whose event time would close every window at once — a burst of negatives no
    running product sees.)"""
    held: list[dict] = []
    for event in events:
        held.append(event)
        if event["type"] == "impression":
            yield from held
            held.clear()


def publish_events(events: Iterable[dict], publisher: Publisher, progress: Progress,
                   refresh) -> None:
    """Publish ``events`` with a malformed message every ``BAD_EVERY``; call ``refresh``
    every ``REFRESH_S`` seconds."""
    refreshed = time.monotonic()
    for n, body in enumerate(events, start=1):
        publisher.publish(Event.model_validate(body))
        progress.published += 1
        if n % BAD_EVERY == 0:
            bad = _BAD_MESSAGES[(n // BAD_EVERY) % len(_BAD_MESSAGES)]
            publisher.producer.send(publisher.topic, key=b"demo", value=bad)
            progress.malformed += 1
        if n % 100 == 0 and time.monotonic() - refreshed >= REFRESH_S:
            refresh()
            refreshed = time.monotonic()


def _table(title: str, columns: tuple[str, ...], left: int = 1) -> Table:
    """A compact table (80 columns hold it): the first ``left`` columns aligned left."""
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  collapse_padding=True)
    for n, column in enumerate(columns):
        table.add_column(column, justify="left" if n < left else "right", no_wrap=n == 0)
    return table


def _cell(metrics: dict[str, float], key: str) -> str:
    return f"{metrics[key]:.4f}" if key in metrics else "-"


def models_table(metrics: dict[str, dict[str, float]], oracle: dict[str, float],
                 settings: Settings) -> Table:
    """Each model's progressive metrics beside the baseline's and the oracle's."""
    table = _table("each model predicts, then learns, every example "
                   f"(recent: the last {settings.recent_window:,})",
                   ("model", "examples", "log loss", "(recent)", "ROC AUC", "(recent)", "lift"))
    keys = ("logloss", "recent_logloss", "roc_auc", "recent_roc_auc", "lift")
    rows = [(name + (" (baseline)" if name == settings.baseline else ""), metrics.get(name, {}))
            for name in settings.models]
    for label, m in (*rows, ("oracle (truth)", oracle)):
        m = m if m.get("examples") else {}  # no figures before the first example
        table.add_row(label, f"{int(m.get('examples', 0)):,}", *(_cell(m, k) for k in keys))
    return table


def alerts_table(alerts: list[dict], tap: ExampleTap) -> Table:
    """Drift alerts, oldest first, placed on the examples axis."""
    table = _table("drift alerts", ("at example", "model", "signal", "before", "after"),
                   left=3)
    for alert in alerts:
        table.add_row(f"~{tap.position(float(alert['event_time'])):,}", alert["model"],
                      alert["signal"], f"{float(alert['before']):.4f}",
                      f"{float(alert['after']):.4f}")
    return table


def summarize(console: Console, watch: Watch, simulator: Simulator, chart: Path) -> DemoResult:
    """Print what happened and save the chart; return the figures printed."""
    from learnloop.chart import Marker, learning_curves

    watch.refresh()
    progress, settings, tap = watch.progress, watch.settings, watch.tap
    elapsed = time.monotonic() - progress.started
    console.print(
        f"\n[bold]{progress.accounted:,}[/bold] messages in {elapsed:.1f}s "
        f"({progress.accounted / elapsed:,.0f}/s): {progress.applied:,} events applied, "
        f"{progress.exposures:,} exposures scored by [bold]{settings.champion}[/bold], "
        f"{progress.rejected:,} dead letters, {progress.duplicates:,} duplicates; "
        f"{progress.examples:,} labeled examples ({progress.positives:,} positive) learned "
        f"by every model."
    )
    console.print(models_table(watch.metrics, tap.report(), settings))
    drift_x = None if simulator.drift_ts is None else tap.position(simulator.drift_ts)
    if drift_x is not None:
        console.print(f"Preferences shifted at impression {simulator.drift_at:,} "
                      f"(example ~{drift_x:,}).")
    console.print(alerts_table(watch.alerts, tap) if watch.alerts else "No drift alert fired.")
    console.print(_reading(watch.metrics, tap.report(), settings))
    _show_one_user(console, watch.client, settings.champion, "u0")
    markers = [Marker(tap.position(float(a["event_time"])), a["model"],
                      float(a["after"]) > float(a["before"])) for a in watch.alerts]
    learning_curves(chart, watch.curves.points, tap.curve, drift_at=drift_x, alerts=markers,
                    window=settings.recent_window, baseline=settings.baseline)
    console.print(f"Learning curves: [bold]{chart.resolve()}[/bold]")
    console.print("The embedded stack stops with the demo; `learnloop up` keeps one running.")
    return DemoResult(progress, watch.metrics, tap.report(), list(watch.alerts), chart, drift_x)


def _show_one_user(console: Console, client: redis.Redis, model: str, user: str) -> None:
    """``user``'s top items by ``model``, and why the best one scored as it did."""
    best = read_top(client, model, user, 5)
    console.print(f"Top items of {user}: " + ", ".join(f"{i} ({s:.3f})" for i, s in best))
    found = read_score(client, model, user, best[0][0]) if best else None
    if found:
        console.print(f"Why {best[0][0]}: {orjson.dumps(found['explain']).decode()}")


def _reading(metrics: dict[str, dict[str, float]], oracle: dict[str, float],
             settings: Settings) -> str:
    """How far each model is from the best achievable (the oracle's log loss)."""
    best = oracle.get("logloss")
    if not best:
        return ""
    gaps = [f"{name} {100 * (m['logloss'] / best - 1):+.1f}%"
            for name, m in metrics.items() if "logloss" in m]
    return (f"Log loss above the oracle's {best:.4f} (the best achievable on these "
            f"examples): " + ", ".join(gaps) + ".")
