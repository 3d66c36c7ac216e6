"""Where the CPU went during a measured window: learnloop's processes, Redis, the broker,
the benchmark itself, and everything else on the machine (concurrent work skews
results on a 2-core machine; this says by how much)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import redis

from learnloop.settings import Settings

_TICK = os.sysconf("SC_CLK_TCK")


def process_seconds(pid: int) -> float | None:
    """User + system CPU seconds of ``pid`` (all its threads), or None if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle (all cores), from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / _TICK


def stack_pids(settings: Settings, client: redis.Redis) -> dict[str, list[int]]:
    """The embedded redis-server's and broker's process ids."""
    pids = {"redis": [int(client.info("server")["process_id"])], "broker": []}
    port = settings.kafka_bootstrap.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and b"tansu" in cmdline[0] and any(
                    arg.endswith(f":{port}".encode()) for arg in cmdline):
                pids["broker"].append(int(entry.name))
    return pids


class CpuMeter:
    """Snapshots of CPU seconds per component; :meth:`between` gives cores used."""

    def __init__(self, components: dict[str, list[int]]) -> None:
        self.components = {**components, "bench": [os.getpid()]}
        self.snapshots: list[tuple[float, dict[str, float]]] = []

    def snapshot(self) -> None:
        values = {name: sum(s for s in (process_seconds(p) for p in pids) if s is not None)
                  for name, pids in self.components.items()}
        values["machine"] = machine_busy_seconds()
        self.snapshots.append((time.time(), values))

    def between(self, start: float, end: float) -> dict[str, float]:
        """Average cores used per component from the snapshot nearest ``start`` to the one
        nearest ``end``; ``other`` is the rest of the machine's busy time."""
        if len(self.snapshots) < 2:
            return {}
        first = min(self.snapshots, key=lambda s: abs(s[0] - start))
        last = min(self.snapshots, key=lambda s: abs(s[0] - end))
        if last[0] <= first[0]:
            first, last = self.snapshots[0], self.snapshots[-1]
        seconds = last[0] - first[0]
        cores = {name: round((last[1][name] - first[1][name]) / seconds, 2)
                 for name in last[1]}
        cores["other"] = round(cores["machine"] - sum(
            v for k, v in cores.items() if k != "machine"), 2)
        cores["over_s"] = round(seconds, 2)
        return cores
