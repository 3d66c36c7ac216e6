"""The embedded stack and connection checks: real processes, started and stopped cleanly."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import orjson
import pytest
import redis

import models
from learnloop.connect import admin_client, ensure_topics, partition_counts, running_stack
from learnloop.embedded import EmbeddedStack
from learnloop.errors import ConfigError, ServiceUnreachable, TopicMismatch
from learnloop.events import Event
from learnloop.scoring import Scorer, ScoreWriter, score_key
from learnloop.settings import load_settings
from tests.conftest import wait_for


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:  # a zombie is not alive
        return stat.read().split()[2] != "Z"


def test_stack_serves_both_and_leaves_no_process():
    with EmbeddedStack() as stack:
        pids = [p.pid for p in stack.processes]
        assert redis.Redis.from_url(stack.redis_url).ping()
        admin = admin_client(load_settings(**stack.env_settings()))
        assert isinstance(admin.list_topics(), list)
        admin.close()
    assert not any(_alive(pid) for pid in pids)


def test_topics_are_created_explicitly_and_a_partition_mismatch_fails(settings):
    admin = admin_client(settings)
    try:
        counts = partition_counts(admin, list(settings.topic_names()))
    finally:
        admin.close()
    assert counts == {name: settings.partitions for name in settings.topic_names()}
    assert ensure_topics(settings) == counts  # idempotent
    with pytest.raises(TopicMismatch, match="partition count"):
        ensure_topics(settings.model_copy(update={"partitions": settings.partitions + 1}))


def test_configured_but_unreachable_services_fail_clearly():
    dead = load_settings(kafka_bootstrap="127.0.0.1:1", redis_url="redis://:s3cret@127.0.0.1:1/0")
    with pytest.raises(ServiceUnreachable, match="Redis at 127.0.0.1:1") as caught:
        with running_stack(dead):
            pass
    assert "s3cret" not in str(caught.value)
    with pytest.raises(ConfigError, match="both"):
        with running_stack(load_settings(kafka_bootstrap="127.0.0.1:1")):
            pass


def test_killed_parent_leaves_no_orphans(tmp_path):
    """SIGKILL the process that owns the stack: the kernel takes the servers down too."""
    script = (
        "import sys, time\n"
        "from learnloop.embedded import EmbeddedStack\n"
        "stack = EmbeddedStack().start()\n"
        "print(*[p.pid for p in stack.processes], flush=True)\n"
        "time.sleep(60)\n"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    pids = [int(pid) for pid in owner.stdout.readline().split()]
    assert len(pids) == 2 and all(_alive(pid) for pid in pids)
    owner.send_signal(signal.SIGKILL)
    owner.wait()
    wait_for(lambda: not any(_alive(pid) for pid in pids), 10, "servers to exit")


def test_cli_up_prints_variables_and_stops_on_ctrl_c():
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEARNLOOP_")}
    up = subprocess.Popen([sys.executable, "-m", "learnloop.cli", "up"], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = [up.stdout.readline(), up.stdout.readline()]
    variables = dict(line.removeprefix("export ").strip().split("=", 1) for line in lines)
    client = redis.Redis.from_url(variables["LEARNLOOP_REDIS_URL"])
    assert client.ping()
    children = [int(p) for p in subprocess.run(
        ["pgrep", "-P", str(up.pid)], capture_output=True, text=True).stdout.split()]
    assert len(children) == 2
    up.send_signal(signal.SIGINT)
    assert up.wait(20) == 0
    time.sleep(0.1)
    assert not any(_alive(pid) for pid in children)


def test_refuses_a_redis_that_may_evict_any_key(stack, redis_conn):
    from learnloop.connect import redis_client

    settings = load_settings(**stack.env_settings())
    redis_conn.config_set("maxmemory-policy", "allkeys-lru")
    try:
        with pytest.raises(ConfigError, match="allkeys-lru"):
            redis_client(settings)
    finally:
        redis_conn.config_set("maxmemory-policy", "noeviction")
    assert redis_client(settings).ping()


def test_a_logreg_score_with_its_explanation_stays_a_compact_hash(settings, redis_conn):
    """The embedded Redis keeps a score hash whose explanation is past 64 bytes in its
    compact encoding (REDIS_TUNING), as docker-compose.yml's does."""
    model = models.build("logreg")
    rng = random.Random(3)
    inputs = [{f"u_click_{n}": rng.random() for n in range(8)} for _ in range(50)]
    for x in inputs:
        model.learn_one(x, rng.random() < 0.3)
    exposure = Event(event_id="e1", type="impression", user_id="u1", item_id="i1", ts=1e9)
    score = Scorer(model, "1").score(exposure, inputs[0], "interactions/0/7")
    assert len(score.explain) == 5 and len(orjson.dumps(score.explain)) > 64
    writer = ScoreWriter(redis_conn, settings)
    redis_conn.script_load(writer.script.script)
    pipe = redis_conn.pipeline(transaction=False)
    writer.queue(pipe, "interactions", 0, [(7, score)], 7)
    assert pipe.execute() == [1]
    key = score_key("logreg", "u1", "i1")
    assert redis_conn.object("encoding", key) in {b"listpack", b"ziplist"}  # Redis 7, 6
    assert redis_conn.memory_usage(key) < 500
