"""``learnloop run …`` processes, as an operator starts them, with their logs and RSS.

Like :func:`learnloop.demo.start_consumers` (same command, same environment, tied to
this process), but each process logs to a file: the log says when it was assigned which
partitions (to find the window where a consumer group is stable) and on which port its
``/metrics`` are served.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from learnloop.demo import stop_processes
from learnloop.embedded import _die_with_parent
from learnloop.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
_STAMP = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
_RESUMES = re.compile(_STAMP + r" learnloop\.interactions partition (\d+) resumes")
_METRICS = re.compile(r"metrics on http://[^:]+:(\d+)/metrics")


@dataclass
class Proc:
    """One ``learnloop run NAME`` process and its log file."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def assignments(self) -> list[tuple[float, int]]:
        """(wall time, partition) of every partition assignment this process logged."""
        return [(_epoch(m.group(1)), int(m.group(2)))
                for m in _RESUMES.finditer(self.log_text())]

    def metrics_port(self) -> int | None:
        found = _METRICS.search(self.log_text())
        return int(found.group(1)) if found else None

    def rss_bytes(self) -> int | None:
        """Resident set size now (from /proc), or None once the process is gone."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
        return None

    def counter(self, name: str) -> float | None:
        """A counter's value from the process's /metrics (sum over label sets)."""
        port = self.metrics_port()
        if port is None:
            return None
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as page:
            text = page.read().decode()
        values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith(name) and not line.startswith("#")]
        return sum(values) if values else None


def _epoch(stamp: str) -> float:
    """A ``logging`` asctime (local time, milliseconds) as epoch seconds."""
    return datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def start(settings: Settings, name: str, count: int, log_dir: Path) -> list[Proc]:
    """``count`` ``learnloop run NAME`` processes with ``settings``, dying with this one."""
    env = {**os.environ, **settings.env(),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    procs = []
    for _ in range(count):
        log = log_dir / f"{name}-{len(list(log_dir.glob(f'{name}-*.log')))}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, "-m", "learnloop.cli", "run", name], env=env, cwd=ROOT,
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=out,
                preexec_fn=_die_with_parent,
            )
        procs.append(Proc(name, popen, log))
    return procs


def stop(procs: list[Proc]) -> None:
    """SIGTERM (the consumers finish their batch and leave the group), then wait."""
    stop_processes([p.popen for p in procs])


def check_alive(procs: list[Proc]) -> None:
    for proc in procs:
        if not proc.alive():
            tail = "\n".join(proc.log_text().splitlines()[-15:])
            raise RuntimeError(f"learnloop run {proc.name} exited early "
                               f"(code {proc.popen.returncode}):\n{tail}")
