"""A short summary of a py-spy raw profile (collapsed stacks, idle samples included):
where the consumer loop's wall time goes — waiting on Redis and Kafka included — by
function, inclusive and self, in percent of that thread's samples; and how busy the other
threads of the process (kafka-python's sender, …) were when not idle."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path

_LINE = re.compile(r" \(([^()]*?)(?::\d+)?\)$")


def _frame(raw: str) -> str:
    """``func (file:line)`` → ``func (file)``."""
    return _LINE.sub(lambda m: f" ({m.group(1)})", raw.strip())


def summarize(path: Path, focus: str = "InteractionsConsumer.run", top: int = 20) -> dict:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    others: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [_frame(f) for f in stack.split(";")]
        start = next((i for i, f in enumerate(frames) if f.startswith(focus + " ")), None)
        if start is None:
            if not _idle(frames[-1]):
                others[next((f for f in frames if ".run" in f and "threading" not in f),
                            frames[-1])] += n
            continue
        frames = frames[start:]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return {"samples": 0}

    def pct(counter: Counter[str], limit: int) -> list[list]:
        return [[name, round(100 * n / total, 1)] for name, n in counter.most_common(limit)]

    return {"samples": total, "focus": focus, "inclusive_pct": pct(inclusive, top),
            "self_pct": pct(own, top), "other_threads_busy_pct": pct(others, 5)}


def _idle(frame: str) -> bool:
    return any(word in frame for word in ("select", "wait", "sleep", "accept", "poll ("))
