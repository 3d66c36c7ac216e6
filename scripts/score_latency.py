"""Event published by a plain Kafka client → score readable in Redis, one event at a time.

Starts the embedded stack and one `learnloop run interactions` process, then publishes
raw JSON bytes with kafka-python and polls Redis for the score key.

    python scripts/score_latency.py --events 200
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import orjson
from kafka import KafkaProducer

from learnloop.connect import redis_client, running_stack
from learnloop.demo import start_consumers, stop_processes
from learnloop.scoring import score_key
from learnloop.settings import load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    with running_stack(load_settings()) as settings:
        client = redis_client(settings)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=0)
        processes = start_consumers(settings, 1)
        latencies = []
        try:
            for n in range(-1, args.events):  # n = -1 warms up (waits for the group join)
                user, item = f"u{n % 50}", f"i{n}"
                body = {"event_id": f"lat-{n}", "ts": time.time(), "user_id": user,
                        "item_id": item, "type": "impression"}
                key = score_key(settings.champion, user, item)
                sent = time.perf_counter()
                producer.send(settings.topic_interactions, key=user.encode(),
                              value=orjson.dumps(body))
                producer.flush()
                while not client.exists(key):
                    time.sleep(0.0005)
                if n >= 0:
                    latencies.append(time.perf_counter() - sent)
        finally:
            stop_processes(processes)
    cut = statistics.quantiles(latencies, n=100)
    print(json.dumps({"events": len(latencies), "p50_ms": round(cut[49] * 1000, 1),
                      "p99_ms": round(cut[98] * 1000, 1),
                      "max_ms": round(max(latencies) * 1000, 1)}))


if __name__ == "__main__":
    main()
