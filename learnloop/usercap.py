"""A per-user cap on the examples that reach the models: one user flooding feedback
cannot steer them.

At most ``limit`` examples per user per tumbling window of *label* (event) time,
``floor(label_ts / window_s)``; the rest are held back: counted, but neither learned nor
evaluated nor shown to the drift detectors (progressive metrics decide promotions and
drift alerts start resets and challengers, so a flood must not reach those either).

Decisions depend only on each user's own examples, in order. Those all come from one
examples partition (a user's events share an interactions partition, and examples keep
its number), so every run decides the same, however the learner interleaves partitions.
Per partition the two newest windows are kept: the previous one still takes late
examples, and an example older than both counts against the older one (it never opens a
fresh budget). The state is plain data, pickled into the learner's checkpoint, so a
restart neither forgets counts nor counts twice; it holds the users seen in the last two
windows of each partition.

>>> cap = UserCap(limit=2, window_s=60)
>>> [cap.admit(0, "u1", ts) for ts in (0.0, 1.0, 2.0, 61.0)]
[True, True, False, True]
>>> cap.admit(0, "u2", 5.0), cap.admit(0, "u1", 5.0)  # window 0 is still open for late ones
(True, False)
>>> UserCap(None, 60).admit(0, "u1", 0.0)  # no limit: everything reaches the models
True
"""

from __future__ import annotations

import math


class UserCap:
    """Admits at most ``limit`` examples per user per ``window_s`` of label time."""

    def __init__(self, limit: int | None, window_s: int) -> None:
        self.limit = limit
        self.window_s = window_s
        self.windows: dict[int, dict[int, dict[str, int]]] = {}  # partition → window → counts

    @classmethod
    def resume(cls, previous: UserCap | None, limit: int | None, window_s: int) -> UserCap:
        """The cap for new settings, keeping ``previous`` counts when the window is the same."""
        cap = previous if previous is not None and previous.window_s == window_s else cls(
            limit, window_s)
        cap.limit = limit
        return cap

    def admit(self, partition: int, user: str, label_ts: float) -> bool:
        """Count one example of ``user``; False when the user's window is full."""
        if self.limit is None:
            return True
        counts = self._window(self.windows.setdefault(partition, {}),
                              math.floor(label_ts / self.window_s))
        seen = counts.get(user, 0)
        if seen >= self.limit:
            return False
        counts[user] = seen + 1
        return True

    @staticmethod
    def _window(windows: dict[int, dict[str, int]], window: int) -> dict[str, int]:
        """The counts of ``window`` (or of the oldest kept one); drops windows it passes."""
        newest = max(windows, default=window)
        if window > newest:
            for old in [w for w in windows if w < window - 1]:
                del windows[old]
        else:
            window = max(window, newest - 1)
        return windows.setdefault(window, {})

    def users(self) -> int:
        """How many (partition, window, user) counts are held: the state's size."""
        return sum(len(c) for windows in self.windows.values() for c in windows.values())
