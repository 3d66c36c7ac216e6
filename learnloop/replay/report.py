"""The replay report: Markdown tables, and the charts beside it.

Everything in it comes from the events and the settings — no run time, no host, no
absolute path — so two replays of the same file write the same bytes.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from learnloop.evaluation import lift
from learnloop.replay import charts
from learnloop.replay.engine import ReplayResult

#: Bad lines listed one by one in the report (all of them are counted).
LISTED_BAD_LINES = 20
#: Drift alerts listed one by one.
LISTED_ALERTS = 20


def table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table; numbers right-aligned.

    >>> print(table(["model", "examples"], [["logreg", "1,000"]]))
    | model | examples |
    |---|---:|
    | logreg | 1,000 |
    """
    align = ["---:" if rows and _numeric(rows[0][n]) else "---" for n in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def _numeric(cell: object) -> bool:
    text = str(cell).replace(",", "").replace("%", "").replace(" s", "").lstrip("+-")
    return text.replace(".", "", 1).isdigit() or text == "–"


def _n(value: float) -> str:
    return f"{int(value):,}"


def _f(value: float) -> str:
    return f"{value:.4f}"


def _when(ts: float | None) -> str:
    if ts is None:
        return "–"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") + "Z"


def _lift(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:+.2f}%"


def model_rows(result: ReplayResult) -> list[list[object]]:
    """One row per model (baseline first): metrics and lift over the baseline."""
    reports = result.reports()
    settings, state = result.settings, result.state
    baseline = settings.baseline
    base = reports.get(baseline, {})
    rows = []
    for name in sorted(reports, key=lambda m: (m != baseline, m not in settings.models)):
        r = reports[name]
        comparable = state.objective_of(name) == state.objective_of(baseline) and base
        label = f"{name} (baseline)" if name == baseline else name
        if name in state.challengers:  # scored from the drift that started it
            label = f"{name} (challenger of {state.challengers[name]['parent']})"
        rows.append([
            label, state.objective_of(name), _n(r["examples"]), _f(r["logloss"]),
            _f(r["recent_logloss"]), _f(r["roc_auc"]), _f(r["recent_roc_auc"]),
            _f(r["accuracy"]), _f(r["positive_rate"]),
            _lift(lift(r, base) if comparable else None),
            _lift(lift(r, base, "recent_") if comparable else None),
        ])
    return rows


def verdicts(result: ReplayResult) -> list[str]:
    """One sentence per model: does it beat the baseline, overall and recently?"""
    reports = result.reports()
    baseline = result.settings.baseline
    base = reports[baseline]
    out = []
    for name, r in reports.items():
        if name == baseline or result.state.objective_of(name) != result.state.objective_of(
                baseline) or not r["examples"]:
            continue
        overall, recent = lift(r, base), lift(r, base, "recent_")
        verb = "beats" if overall > 0 else "does not beat"
        out.append(f"- **{name}** {verb} the baseline: log loss {_lift(-overall)} overall "
                   f"({_lift(-recent)} over the last {result.settings.recent_window:,} "
                   f"examples); ROC AUC {_f(r['roc_auc'])} vs {_f(base['roc_auc'])}.")
    return out


def events_section(result: ReplayResult) -> list[str]:
    tally = result.tally
    applied = sum(tally.by_type.values())
    lines = [
        "## Events", "",
        f"{_n(tally.records)} records: {_n(applied)} events applied, "
        f"{_n(len(tally.bad_lines))} rejected, {_n(tally.duplicates)} duplicates "
        f"(a repeated `event_id`). Event time {_when(tally.first_ts)} → "
        f"{_when(tally.last_ts)}.", "",
        table(["type", "events"], [[t, _n(c)] for t, c in sorted(tally.by_type.items())]),
        "",
    ]
    if tally.bad_lines:
        rejected = tally.rejected()
        lines += ["### Rejected lines", "",
                  "Bad lines do not stop a replay: each is counted under the reason the live "
                  "consumer would dead-letter it with.", "",
                  table(["reason", "lines"], [[r, _n(c)] for r, c in sorted(rejected.items())]),
                  ""]
        shown = tally.bad_lines[:LISTED_BAD_LINES]
        lines += [f"- line {bad.line}: `{bad.reason}`: {bad.detail}" for bad in shown]
        if len(tally.bad_lines) > len(shown):
            lines.append(f"- … and {len(tally.bad_lines) - len(shown):,} more")
        lines.append("")
    return lines


def join_section(result: ReplayResult) -> list[str]:
    tally = result.tally
    rows = []
    for name in result.settings.objectives:
        unattributed = {r: c for (o, r), c in tally.unattributed.items() if o == name}
        rows.append([
            name, _n(tally.examples[(name, 1)]), _n(tally.examples[(name, 0)]),
            ", ".join(f"{r} {c:,}" for r, c in sorted(unattributed.items())) or "0",
            _n(tally.late_exposures.get(name, 0)), _n(tally.pending.get(name, 0)),
        ])
    delays = [[o, fb, _n(q["examples"]), *(f"{q[k]:.1f} s" for k in ("p50", "p90", "p99", "max"))]
              for (o, fb), q in tally.delay_quantiles().items()]
    lines = [
        "## The join", "",
        table(["objective", "positive examples", "negative examples", "unattributed feedback",
               "late exposures (not learned)", "pending at the end"], rows), "",
        "Pending exposures' windows had not closed by the file's last event time: they are "
        "not examples yet. Negatives are exposures whose window closed without feedback.",
        "",
    ]
    if tally.capped:
        lines += [f"{tally.capped:,} examples were held back by the per-user cap.", ""]
    if delays:
        lines += ["### Label delay (feedback event time − exposure event time)", "",
                  table(["objective", "feedback", "labels", "p50", "p90", "p99", "max"],
                        delays), ""]
    return lines


def alerts_section(result: ReplayResult) -> list[str]:
    if not result.alerts:
        return ["## Drift alerts", "", "None.", ""]
    rows = [[_n(at), _when(a.event_time), a.model, a.signal, f"{a.before:.4f}", f"{a.after:.4f}"]
            for at, a in result.alerts[:LISTED_ALERTS]]
    kinds = Counter(a.signal.split(":")[0] for _, a in result.alerts)
    lines = ["## Drift alerts", "",
             f"{len(result.alerts):,} alerts ({result.settings.drift_detector}, cooldown "
             f"{result.settings.drift_cooldown_s:g} s of event time): "
             + ", ".join(f"{kind} {count:,}" for kind, count in sorted(kinds.items()))
             + ". *concept* is a change in a model's loss, *label* in the positive rate, "
             "*feature* in an input's distribution.", "",
             table(["at example", "event time", "model or objective", "signal", "before",
                    "after"], rows), ""]
    if len(result.alerts) > len(rows):
        lines += [f"… and {len(result.alerts) - len(rows):,} more.", ""]
    return lines


def settings_section(result: ReplayResult) -> list[str]:
    s = result.settings
    objectives = {n: o.model_dump(mode="json") for n, o in s.objectives.items()}
    return [
        "## Settings", "",
        f"- models: {', '.join(s.models)}; baseline: {s.baseline}",
        f"- recent window: {s.recent_window:,} examples; half-lives: "
        f"{', '.join(f'{h:,} s' for h in s.half_lives_s)}; batch: {s.max_poll_records:,} "
        "records",
        f"- per-user cap: {s.max_examples_per_user or 'off'}; drift detector: "
        f"{s.drift_detector}; responses: {json.dumps(dict(s.drift_responses))}",
        "- objectives:", "", "```json", json.dumps(objectives, indent=2, sort_keys=True),
        "```", "",
    ]


def render(result: ReplayResult, images: dict[str, str]) -> str:
    """The report as Markdown; ``images`` maps a chart's title to its file name."""
    s = result.settings
    lines = [
        f"# Replay of `{result.source}`", "",
        "Recorded events run through learnloop's own code path: the Redis join and feature "
        "script, then the learner. One partition, records in file order, event time only. "
        "Progressive validation: each model predicts every example before it learns from "
        f"it; *recent* is the last {s.recent_window:,} examples. Lift is the relative "
        "log-loss improvement over the baseline (> 0 beats it).", "",
        "## Models", "",
        table(["model", "objective", "examples", "log loss", "recent log loss", "ROC AUC",
               "recent ROC AUC", "accuracy", "positive rate", "lift", "recent lift"],
              model_rows(result)), "",
        *verdicts(result), "",
    ]
    lines += [f"![{title}]({file})\n" for title, file in images.items()]
    if not images:
        lines += ["(No charts: install the `charts` extra, `pip install 'learnloop[charts]'`.)",
                  ""]
    lines += [*events_section(result), *join_section(result), *alerts_section(result),
              *settings_section(result)]
    return "\n".join(lines).rstrip() + "\n"


def write_report(result: ReplayResult, out: Path, name: str = "replay") -> Path:
    """Write ``{name}.md`` and its charts (``{name}-*.png``) into ``out``; the Markdown's
    path."""
    out.mkdir(parents=True, exist_ok=True)
    images = {}
    if charts.available():
        s, baseline = result.settings, result.settings.baseline
        drift_at = [at for at, a in result.alerts if a.signal == "concept"]
        images["learning curves"] = f"{name}-learning-curve.png"
        charts.learning_curves(out / images["learning curves"], result.curves, baseline,
                               s.recent_window, drift_at)
        images["calibration"] = f"{name}-calibration.png"
        points = {m: charts.calibration_points(score.predictions, score.labels)
                  for m, score in result.state.scores.items()}
        charts.calibration(out / images["calibration"], points, baseline)
    path = out / f"{name}.md"
    path.write_text(render(result, images), encoding="utf-8")
    return path
