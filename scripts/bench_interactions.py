"""Throughput of one interactions consumer process on the embedded stack.

Pre-publishes simulated events, then starts one `learnloop run interactions` process
and times from its first applied event to the last (group join excluded).

    python scripts/bench_interactions.py --impressions 50000
"""

from __future__ import annotations

import argparse
import json
import time

from kafka import KafkaProducer

from learnloop.connect import redis_client, running_stack
from learnloop.demo import Progress, start_consumers, stop_processes
from learnloop.settings import load_settings
from learnloop.simulate import Simulator


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--impressions", type=int, default=50_000)
    parser.add_argument("--consumers", type=int, default=1)
    args = parser.parse_args()
    with running_stack(load_settings()) as settings:
        client = redis_client(settings)
        producer = KafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=20,
                                 batch_size=256 * 1024)
        import orjson

        total = 0
        for body in Simulator(users=5000, items=1000).events(args.impressions):
            producer.send(settings.topic_interactions, key=body["user_id"].encode(),
                          value=orjson.dumps(body))
            total += 1
        producer.flush()
        processes = start_consumers(settings, args.consumers)
        progress = Progress()
        try:
            while progress.accounted == 0:
                progress.refresh(client)
                time.sleep(0.01)
            started, first = time.monotonic(), progress.accounted
            while progress.accounted < total:
                progress.refresh(client)
                time.sleep(0.01)
            elapsed = time.monotonic() - started
        finally:
            stop_processes(processes)
        print(json.dumps({
            "events": total, "consumers": args.consumers, "seconds": round(elapsed, 3),
            "events_per_s": round((total - first) / elapsed),
        }))


if __name__ == "__main__":
    main()
