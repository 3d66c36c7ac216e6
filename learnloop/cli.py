"""The ``learnloop`` command line."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from learnloop.errors import LearnloopError
from learnloop.settings import Settings, load_settings

app = typer.Typer(help="learnloop: streaming feedback and online learning.", no_args_is_help=True)
run_app = typer.Typer(help="Run one of learnloop's consumers in the foreground.")
app.add_typer(run_app, name="run")
models_app = typer.Typer(help="List models with their metrics; promote or roll back.")
app.add_typer(models_app, name="models")
console = Console(stderr=True)


def _settings() -> Settings:
    try:
        return load_settings()
    except LearnloopError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _fail(exc: LearnloopError) -> typer.Exit:
    console.print(f"[red]error:[/red] {exc}")
    return typer.Exit(1)


def _print_env(env: dict[str, str]) -> None:
    console.print("[bold]Embedded stack is up. Reach it with:[/bold]")
    for name, value in env.items():
        typer.echo(f"export {name}={value}")


@app.command()
def up() -> None:
    """Start the embedded broker and redis-server (or check the configured ones) and wait."""
    from learnloop.connect import running_stack

    settings = _settings()
    stop = threading.Event()
    from learnloop.service import stop_on_signals

    stop_on_signals(stop)
    try:
        with running_stack(settings) as live:
            if settings.embedded:  # configured services: their secrets are never echoed
                _print_env(live.env())
            console.print("Topics ready. Ctrl-C stops.")
            stop.wait()
    except LearnloopError as exc:
        raise _fail(exc) from None


def _run(names: list[str]) -> None:
    from learnloop.connect import running_stack
    from learnloop.service import run_consumers, stop_on_signals

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)
    settings = _settings()
    stop = threading.Event()
    stop_on_signals(stop)
    try:
        with running_stack(settings) as live:
            if settings.embedded:
                _print_env(live.env())
            run_consumers(names, live, stop)
    except LearnloopError as exc:
        raise _fail(exc) from None


@run_app.command("interactions")
def run_interactions() -> None:
    """Run one interactions consumer (joins the consumer group)."""
    _run(["interactions"])


@run_app.command("learner")
def run_learner() -> None:
    """Run the learner: every model on every example, checkpoints to Redis."""
    _run(["learner"])


@run_app.command("all")
def run_all() -> None:
    """Run an interactions consumer and the learner in one process."""
    _run(["interactions", "learner"])


@app.command()
def publish(
    source: Annotated[str, typer.Argument(help="JSON-lines file, or - for standard input.")],
) -> None:
    """Validate JSON-lines events and publish the valid ones; report bad lines by number."""
    from learnloop.events import EventDecoder
    from learnloop.publish import BadLine, Publisher, validate_lines

    settings = _settings()
    if settings.kafka_bootstrap is None:
        console.print("[red]LEARNLOOP_KAFKA_BOOTSTRAP is not set[/red] (see `learnloop up`)")
        raise typer.Exit(2)
    decoder = EventDecoder.from_settings(settings)
    stream = sys.stdin.buffer if source == "-" else Path(source).open("rb")  # noqa: SIM115
    sent = bad = 0
    with stream, Publisher(settings) as publisher:
        for _line, item in validate_lines(stream, decoder):
            if isinstance(item, BadLine):
                bad += 1
                console.print(f"line {item.line}: {item.reason}: {item.detail}")
            else:
                publisher.publish(item)
                sent += 1
    console.print(f"published {sent} events, rejected {bad} lines")
    if bad:
        raise typer.Exit(1)


def _redis():
    from learnloop.connect import redis_client

    try:
        return redis_client(_settings())
    except LearnloopError as exc:
        raise _fail(exc) from None


def _scores():
    from learnloop.reader import ScoreReader

    return ScoreReader(_redis(), _settings())


def _no_score(user: str, item: str | None) -> typer.Exit:
    console.print(f"no score for user {user!r}" + (f" and item {item!r}" if item else ""))
    return typer.Exit(1)


ModelOption = Annotated[
    str | None, typer.Option(help="Model name (default: the served champion).")]


@app.command()
def score(
    user: str, item: Annotated[str | None, typer.Argument()] = None, model: ModelOption = None,
) -> None:
    """Print the latest score of USER (for ITEM) as JSON."""
    from dataclasses import asdict

    found = _scores().score(user, item, model)
    if found is None:
        raise _no_score(user, item)
    typer.echo(json.dumps(asdict(found), indent=2))


@app.command()
def top(
    user: str, k: Annotated[int, typer.Option("-k", help="How many items.")] = 10,
    model: ModelOption = None,
) -> None:
    """Print USER's best-scored items, best first."""
    for item, value in _scores().top(user, k, model):
        typer.echo(f"{item}\t{value:.6f}")


@app.command()
def explain(
    user: str, item: Annotated[str | None, typer.Argument()] = None, model: ModelOption = None,
    k: Annotated[int, typer.Option("-k", help="Without ITEM: USER's k best items.")] = 1,
) -> None:
    """Why USER got its latest score for ITEM (without ITEM: for its best-scored items):
    top contributions with their input values and the ages of their features."""
    from learnloop.explain import render

    scores = _scores()
    items = [item] if item else [i for i, _ in scores.top(user, k, model)] or [None]
    found = [e for i in items if (e := scores.explain(user, i, model)) is not None]
    if not found:
        raise _no_score(user, item)
    for explanation in found:
        Console().print(render(explanation))


@app.command()
def schema() -> None:
    """Print the JSON Schema of an interaction event."""
    from learnloop.events import event_json_schema

    typer.echo(json.dumps(event_json_schema(), indent=2))


Users = Annotated[int, typer.Option(help="Simulated users.")]
Items = Annotated[int, typer.Option(help="Simulated items (at the start).")]
Seed = Annotated[int, typer.Option(help="Random seed: the same seed, the same events.")]


@app.command()
def demo(
    users: Users = 2000, items: Items = 500,
    events: Annotated[int, typer.Option(help="Impressions to publish.")] = 15_000,
    consumers: Annotated[int, typer.Option(
        help="Interactions consumer processes (one partition each).")] = 1,
    drift_at: Annotated[int | None, typer.Option(
        help="Impression at which preferences shift (default: half-way).")] = None,
    drift: Annotated[bool, typer.Option(help="Inject the drift at all.")] = True,
    chart: Annotated[Path, typer.Option(help="Where to save the learning-curves PNG.")] = Path(
        "out/demo-chart.png"),
    seed: Seed = 0,
) -> None:
    """Embedded stack + consumers + a simulated product with a drift; a live view, then a
    summary and a chart of the learning curves."""
    from learnloop.demo import run_demo

    try:
        run_demo(_settings(), users=users, items=items, impressions=events, consumers=consumers,
                 drift_at=(events // 2 if drift_at is None else drift_at) if drift else None,
                 chart=chart, seed=seed)
    except LearnloopError as exc:
        raise _fail(exc) from None


@app.command()
def simulate(
    impressions: Annotated[int, typer.Option(help="Impressions to generate.")] = 10_000,
    users: Users = 2000, items: Items = 500, seed: Seed = 0,
    seconds_between: Annotated[float, typer.Option(
        help="Mean event time between impressions (seconds).")] = 0.5,
    appeal_spread: Annotated[float, typer.Option(
        help="Spread of the items' appeal (logit of their click rate).")] = 1.0,
    purchase_rate: Annotated[float, typer.Option(
        help="Typical P(purchase | click); 0: no purchases.")] = 0.0,
    new_item_every: Annotated[int | None, typer.Option(
        help="A new item joins every this many impressions.")] = None,
    drift_at: Annotated[int | None, typer.Option(
        help="Impression at which preferences shift (default: none).")] = None,
    out: Annotated[str, typer.Option(help="JSON-lines file, or - for standard output.")] = "-",
    truth: Annotated[Path | None, typer.Option(
        help="Also write each impression's true P(click) and P(purchase | click) here "
             "(JSON lines), e.g. for an oracle in replay evaluation.")] = None,
    publish_events: Annotated[bool, typer.Option(
        "--publish", help="Publish to LEARNLOOP_KAFKA_BOOTSTRAP instead of writing.")] = False,
) -> None:
    """Simulated product events from a known ground truth, as JSON lines (or --publish)."""
    from contextlib import nullcontext

    from learnloop.simulate import Simulator, write_json_lines

    sim = Simulator(users=users, items=items, seed=seed,
                    seconds_between_impressions=seconds_between, appeal_spread=appeal_spread,
                    purchase_rate=purchase_rate, new_item_every=new_item_every,
                    drift_at=drift_at)
    recorded: dict | None = {} if truth else None
    stream = sim.events(impressions, truth=recorded)
    if publish_events:
        count = _publish_simulated(stream)
    else:
        with nullcontext(sys.stdout.buffer) if out == "-" else Path(out).open("wb") as sink:
            count = write_json_lines(stream, sink)
    if truth is not None:
        with truth.open("wb") as sink:
            write_json_lines(({"exposure_id": k, "click": t.click, "purchase": t.purchase}
                              for k, t in recorded.items()), sink)
    drifted = "" if sim.drift_ts is None else f"; preferences shifted at ts {sim.drift_ts}"
    console.print(f"{count} events ({impressions} impressions){drifted}")


def _publish_simulated(events) -> int:
    from learnloop.events import Event
    from learnloop.publish import Publisher

    settings = _settings()
    if settings.kafka_bootstrap is None:
        console.print("[red]LEARNLOOP_KAFKA_BOOTSTRAP is not set[/red] (see `learnloop up`)")
        raise typer.Exit(2)
    count = 0
    with Publisher(settings) as publisher:
        for body in events:
            publisher.publish(Event.model_validate(body))
            count += 1
    return count


@app.command()
def replay(
    events: Annotated[Path, typer.Argument(help="JSON lines (the schema), or CSV.",
                                           metavar="EVENTS", exists=True, dir_okay=False)],
    models: Annotated[str | None, typer.Option(
        help="Models to compare, comma-separated (default LEARNLOOP_MODELS); the baseline "
             "is always added.")] = None,
    out: Annotated[Path, typer.Option(help="Directory for replay.md and its charts.")] = Path(
        "replay-report"),
    objectives: Annotated[Path | None, typer.Option(
        help="JSON file of objectives, as LEARNLOOP_OBJECTIVES (default: that).",
        exists=True, dir_okay=False)] = None,
    fmt: Annotated[str | None, typer.Option(
        "--format", help="jsonl or csv (default: csv for *.csv/*.tsv or any --csv-* "
                         "option, else jsonl).")] = None,
    csv_map: Annotated[str | None, typer.Option(
        help="FIELD=COLUMN,… e.g. user_id=uid,item_id=product,ts=time,type=event,"
             "context.device=dev (unmapped fields: the column of their own name).")] = None,
    csv_set: Annotated[str | None, typer.Option(
        help="FIELD=VALUE,… the same value on every row, e.g. type=impression.")] = None,
    csv_types: Annotated[str | None, typer.Option(
        help="VALUE=TYPE,… rename values of the type column, e.g. view=impression,"
             "buy=purchase.")] = None,
    csv_delimiter: Annotated[str, typer.Option(help="One character, or 'tab'.")] = ",",
) -> None:
    """Replay recorded events through the join, features and learner; write a report."""
    from learnloop.replay.cli import run_replay

    csv = csv_map or csv_set or csv_types or csv_delimiter != ","
    try:
        run_replay(events, models=models, out=out, objectives=objectives,
                   fmt=fmt or ("csv" if csv else None),
                   csv=(csv_map, csv_set, csv_types, csv_delimiter), console=console)
    except LearnloopError as exc:
        raise _fail(exc) from None


@models_app.callback(invoke_without_command=True)
def models_list(ctx: typer.Context) -> None:
    """Every configured model: served or not, version, examples and progressive metrics."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from learnloop.reader import read_model_metrics
    from learnloop.serving import current_champion, known_models

    settings, client = _settings(), _redis()
    champion = current_champion(client, settings)
    table = Table(title="models (progressive validation; recent = last "
                        f"{settings.recent_window} examples)")
    for column in ("model", "role", "objective", "version", "examples", "log loss",
                   "recent log loss", "ROC AUC", "accuracy", "lift vs baseline"):
        table.add_column(column)
    for name in known_models(client, settings):  # drift challengers included
        m = read_model_metrics(client, name)
        role = "champion" if name == champion else (
            "baseline" if name == settings.baseline else "challenger")
        cells = [f"{m[k]:.4f}" if k in m else "-" for k in
                 ("logloss", "recent_logloss", "roc_auc", "accuracy", "lift")]
        table.add_row(name, role, settings.objective_of(name), str(int(m.get("version", 0))),
                      str(int(m.get("examples", 0))), *cells)
    Console().print(table)


@models_app.command("promote")
def models_promote(
    name: str, why: Annotated[str, typer.Option(help="Recorded with the promotion.")] = "",
) -> None:
    """Serve NAME from now on (scorers swap within LEARNLOOP_MODEL_RELOAD_S)."""
    from learnloop.serving import promote

    try:
        entry = promote(_redis(), _settings(), name, why)
    except LearnloopError as exc:
        raise _fail(exc) from None
    console.print(f"promoted {entry['to']} (was {entry['from']}) by {entry['who']}")


@models_app.command("rollback")
def models_rollback(
    why: Annotated[str, typer.Option(help="Recorded with the rollback.")] = "",
) -> None:
    """Serve again what was served before the last promotion."""
    from learnloop.serving import rollback

    try:
        entry = rollback(_redis(), _settings(), why)
    except LearnloopError as exc:
        raise _fail(exc) from None
    console.print(f"rolled back to {entry['to']} (was {entry['from']}) by {entry['who']}")


@models_app.command("history")
def models_history() -> None:
    """Promotions and rollbacks, newest first."""
    from learnloop.serving import history

    for entry in history(_redis()):
        typer.echo(json.dumps(entry))


@app.command()
def drift(count: Annotated[int, typer.Option("-n", help="How many alerts.")] = 20) -> None:
    """Recent drift alerts, newest first."""
    from rich.table import Table

    from learnloop.alerts import recent_alerts

    table = Table(title="drift alerts (newest first)")
    columns = ("event_time", "model", "signal", "detector", "before", "after", "where")
    for column in columns:
        table.add_column(column)
    for alert in recent_alerts(_redis(), count):
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(float(alert["event_time"])))
        table.add_row(when, alert["model"], alert["signal"], alert["detector"],
                      f"{float(alert['before']):.4f}", f"{float(alert['after']):.4f}",
                      alert["where"])
    Console().print(table)


@app.command()
def status() -> None:
    """Lag, staleness and model versions at a glance."""
    from learnloop.status import collect

    settings = _settings()
    if settings.kafka_bootstrap is None:
        console.print("[red]LEARNLOOP_KAFKA_BOOTSTRAP is not set[/red] (see `learnloop up`)")
        raise typer.Exit(2)
    info = collect(settings, _redis())
    out = Console()
    out.print(f"[bold]serving[/bold] {info['champion']}")
    ckpt = info["checkpoint"]
    age = "-" if ckpt["age_s"] is None else f"{ckpt['age_s']:.0f}s ago"
    since = ckpt["example_messages_not_yet_checkpointed"]
    out.print(f"[bold]checkpoint[/bold] v{ckpt['version'] or 0}, {ckpt['examples']} examples, "
              f"published {age}; {since} example messages since")
    for p in info["interactions"]:
        lag_s = "-" if p["event_time_lag_s"] is None else f"{p['event_time_lag_s']:.0f}s"
        out.print(f"partition {p['partition']}: lag {p['lag_offsets']} messages, "
                  f"newest event {lag_s} old")
    for alert in info["drift_alerts"]:
        out.print(f"[yellow]drift[/yellow] {alert['model']} {alert['signal']} "
                  f"{float(alert['before']):.3f} → {float(alert['after']):.3f}")


if __name__ == "__main__":
    app()
