"""The pieces of ``scripts/bench.py``, the benchmark harness (issue #6).

- :mod:`.workload` — the simulated event mix and pre-publishing it;
- :mod:`.procs` — ``learnloop run …`` processes with their logs and RSS;
- :mod:`.throughput` — one interactions consumer (or several), then the learner;
- :mod:`.reference` — the same model calls in-process, River alone (efficiency);
- :mod:`.peer` — a tutorial-style per-event loop on the same events;
- :mod:`.freshness` — event → score and label → serving model, under a paced load;
- :mod:`.footprint` — Redis bytes per active user and per pending exposure;
- :mod:`.machine`, :mod:`.report` — what it ran on, and the table of targets.
"""
