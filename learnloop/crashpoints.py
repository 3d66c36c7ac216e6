"""Named crash points for the chaos tests.

``LEARNLOOP_CRASH_AT=name:n`` (comma-separated for several) makes the process SIGKILL
itself the ``n``-th time it passes ``crash_point(name)`` — a crash exactly between two
effects (say, after the Redis write and before the Kafka commit), which a kill from
outside only hits by luck. Unset, as always outside the tests, a crash point costs one
dictionary lookup.

>>> plan = parse("interactions.before_commit:3, checkpoint.written:1")
>>> plan == {"interactions.before_commit": 3, "checkpoint.written": 1}
True
"""

from __future__ import annotations

import os
import signal

from learnloop.errors import ConfigError

ENV = "LEARNLOOP_CRASH_AT"


def parse(spec: str) -> dict[str, int]:
    """``name:n,…`` → {name: n}."""
    plan = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        name, _, count = part.rpartition(":")
        if not name or not count.isdigit() or int(count) < 1:
            raise ConfigError(f"{ENV}: expected name:n with n >= 1, got {part!r}")
        plan[name] = int(count)
    return plan


_remaining = parse(os.environ.get(ENV, ""))


def crash_point(name: str) -> None:
    """SIGKILL this process if the crash plan says so (see the module docstring)."""
    left = _remaining.get(name)
    if left is None:
        return
    if left > 1:
        _remaining[name] = left - 1
        return
    os.kill(os.getpid(), signal.SIGKILL)
