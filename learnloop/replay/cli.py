"""``learnloop replay``: read the file, replay it, write the report, print a summary."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from learnloop.errors import ConfigError
from learnloop.replay.engine import replay, replay_settings
from learnloop.replay.report import model_rows, write_report
from learnloop.replay.sources import CsvMapping, read_records

#: Bad lines printed to the terminal (the report lists some too; all are counted).
PRINTED_BAD_LINES = 20


def load_objectives(path: Path | None) -> dict | None:
    """The objectives in a JSON file (as ``LEARNLOOP_OBJECTIVES``), or None."""
    if path is None:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"--objectives {path.name}: {exc}") from None


def run_replay(events: Path, *, models: str | None, out: Path, objectives: Path | None,
               fmt: str | None, csv: tuple[str | None, str | None, str | None, str],
               console: Console) -> Path:
    """The command: returns the report's path."""
    names = [m.strip() for m in models.split(",") if m.strip()] if models else None
    settings = replay_settings(names, load_objectives(objectives))
    mapping = CsvMapping.parse(*csv) if fmt == "csv" else None
    records = read_records(events, fmt, mapping)
    console.print(f"replaying {len(records):,} records of {events.name} "
                  f"(models: {', '.join(settings.models)}) …")
    result = replay(records, settings, events.name)
    bad = result.tally.bad_lines
    for line in bad[:PRINTED_BAD_LINES]:
        console.print(f"line {line.line}: {line.reason}: {line.detail}", markup=False)
    if len(bad) > PRINTED_BAD_LINES:
        console.print(f"… and {len(bad) - PRINTED_BAD_LINES:,} more bad lines")
    table = Table(title=f"{result.state.examples:,} examples (recent: the last "
                        f"{settings.recent_window:,})")
    for column in ("model", "examples", "log loss", "recent", "ROC AUC", "lift", "recent lift"):
        table.add_column(column)
    for row in model_rows(result):  # the report's columns, fewer: a terminal is narrower
        table.add_row(*(str(row[n]) for n in (0, 2, 3, 4, 5, 9, 10)))
    Console().print(table)
    rate = len(records) / result.seconds if result.seconds else 0.0
    console.print(f"{len(records):,} records in {result.seconds:.1f}s ({rate:,.0f}/s), "
                  f"{len(bad):,} rejected")
    path = write_report(result, out)
    console.print(f"report: {path}")
    return path
