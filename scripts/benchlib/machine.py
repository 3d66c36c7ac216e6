"""What the benchmark ran on: CPU, cores, load, Python and the versions that matter."""

from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path

import redis


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def describe(client: redis.Redis) -> dict:
    """The machine and software versions; ``client`` is the embedded Redis."""
    server = client.info("server")
    from learnloop.connect import kafka_crcs_in_c
    from learnloop.embedded import tansu_binary

    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "river": _version("river"),
        "redis_py": _version("redis"),
        "kafka_python": _version("kafka-python"),
        "kafka_crcs_in_c": kafka_crcs_in_c(),  # without the crc32c extension: twice the CPU
        "orjson": _version("orjson"),
        "redis_server": server.get("redis_version", "unknown"),
        "kafka_broker": Path(tansu_binary()).name,
        "load_average_at_start": load_average(),
    }
