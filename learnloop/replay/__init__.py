"""Replay evaluation: recorded events through the live join, features and learner, with a
Markdown report comparing every model with the baseline (``learnloop replay``).

- :mod:`~learnloop.replay.sources` — JSON lines, or CSV with a column mapping;
- :mod:`~learnloop.replay.engine` — the deterministic run on a private redis-server;
- :mod:`~learnloop.replay.tally` — what the events were (types, bad lines, the join);
- :mod:`~learnloop.replay.report` and :mod:`~learnloop.replay.charts` — the report.
"""
