"""Regenerate the sample replay report under docs/ from the simulator's events.

    .venv/bin/python scripts/replay_example.py [--impressions 20000] [--keep-events PATH]

The same as ``learnloop replay simulated-events.jsonl --models logreg --objectives
docs/replay-objectives.json``, written as docs/replay-example.md and its charts.
Deterministic: running it again rewrites the same bytes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from learnloop.replay.engine import replay, replay_settings  # noqa: E402
from learnloop.replay.report import write_report  # noqa: E402
from learnloop.replay.sources import read_records  # noqa: E402
from learnloop.simulate import Simulator  # noqa: E402

DOCS = ROOT / "docs"
#: Two lines a product might really send by mistake, so the report shows how they count.
BAD_LINES = [b'{"event_id": "imp-x", "ts": "yesterday", "user_id": "u1", "type": "impression"}',
             b"{truncated"]


def write_events(path: Path, impressions: int) -> None:
    """The simulator's impressions (one a second) and clicks, two bad lines among them."""
    simulator = Simulator(users=2000, items=500, seed=11, seconds_between_impressions=1.0)
    lines = [orjson.dumps(event) for event in simulator.events(impressions)]
    for n, bad in enumerate(BAD_LINES, start=1):
        lines.insert(n * len(lines) // (len(BAD_LINES) + 1), bad)
    path.write_bytes(b"\n".join(lines) + b"\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=20_000)
    parser.add_argument("--keep-events", type=Path, help="Also keep the events file here.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        events = args.keep_events or Path(tmp) / "simulated-events.jsonl"
        write_events(events, args.impressions)
        objectives = json.loads((DOCS / "replay-objectives.json").read_text())
        records = read_records(events)
        result = replay(records, replay_settings(["logreg"], objectives), events.name)
    path = write_report(result, DOCS, "replay-example")
    print(f"{len(records):,} records in {result.seconds:.1f}s "
          f"({len(records) / result.seconds:,.0f}/s); wrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
