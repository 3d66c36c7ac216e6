"""What the scorers serve: the champion's name (promote / rollback) and its newest version.

- ``serving`` — hash: ``champion`` (overrides the settings' champion once promoted);
- ``serving:history`` — stream of promotions and rollbacks: action, from, to, who, why.

Scorers call :meth:`ChampionLoader.refresh` every few seconds: a new champion name or a
new checkpoint version swaps the served model without a restart.
"""

from __future__ import annotations

import getpass
import logging
import time
from dataclasses import dataclass

import redis

import models
from learnloop.checkpoints import CheckpointStore
from learnloop.errors import UnknownModel
from learnloop.settings import Settings
from models.base import OnlineModel

log = logging.getLogger("learnloop.serving")
HISTORY = "serving:history"


def current_champion(client: redis.Redis, settings: Settings) -> str:
    """The served model's name: the last promotion, else the settings' champion."""
    raw = client.hget("serving", "champion")
    return raw.decode() if raw else settings.champion


def known_models(client: redis.Redis, settings: Settings) -> list[str]:
    """Configured models, then any the learner added (drift challengers), by name."""
    learned = sorted(k.decode().removeprefix("model:metrics:")
                     for k in client.scan_iter(match="model:metrics:*"))
    return list(dict.fromkeys([*settings.models, *learned]))


def promote(client: redis.Redis, settings: Settings, name: str, why: str,
            action: str = "promote", who: str | None = None,
            known: list[str] | None = None, marker: str | None = None) -> dict:
    """Serve ``name`` from now on; recorded with who, when and why (and ``marker`` set in
    the same transaction, for callers that must never promote twice)."""
    known = known if known is not None else known_models(client, settings)
    if name not in known:
        raise UnknownModel(f"{name!r} is not a known model: {known}")
    entry = {"action": action, "from": current_champion(client, settings), "to": name,
             "who": who or _who(), "why": why, "at": repr(time.time())}
    pipe = client.pipeline(transaction=True)
    pipe.hset("serving", "champion", name)
    pipe.xadd(HISTORY, entry, maxlen=1000, approximate=True)
    if marker:
        pipe.set(marker, 1)
    pipe.execute()
    return entry


def rollback(client: redis.Redis, settings: Settings, why: str) -> dict:
    """Serve again what was served before the last promotion or rollback."""
    last = client.xrevrange(HISTORY, count=1)
    if not last:
        raise UnknownModel("nothing to roll back: no promotion was recorded")
    previous = last[0][1][b"from"].decode()
    return promote(client, settings, previous, why, action="rollback")


def history(client: redis.Redis, count: int = 20) -> list[dict]:
    """The newest promotions and rollbacks, newest first."""
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _id, fields in client.xrevrange(HISTORY, count=count)]


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


@dataclass
class Served:
    """The model a scorer serves right now."""

    name: str
    version: int  # 0 = fresh, never trained
    published_at: float | None
    model: OnlineModel


class ChampionLoader:
    """Keeps a scorer's champion current: name from ``serving``, state from checkpoints."""

    def __init__(self, client: redis.Redis, settings: Settings,
                 checkpoints: CheckpointStore | None) -> None:
        self.client = client
        self.settings = settings
        self.checkpoints = checkpoints
        name = current_champion(client, settings)
        self.served = Served(name, 0, None, models.build(name))
        self.refresh()

    def refresh(self) -> bool:
        """Swap in a newer checkpoint or another champion; True if the served model changed."""
        name = current_champion(self.client, self.settings)
        if self.checkpoints is None:
            if name == self.served.name:
                return False
            self.served = Served(name, 0, None, models.build(name))
            return True
        newer_than = self.served.version if name == self.served.name else None
        loaded = self.checkpoints.load_newest_valid(newer_than=newer_than)
        if loaded is None or name not in loaded.state.models:
            if name == self.served.name:
                return False
            self.served = Served(name, 0, None, models.build(name))
        else:
            self.served = Served(name, loaded.version, loaded.published_at,
                                 loaded.state.models[name])
        log.info("serving %s version %d", name, self.served.version)
        return True
