"""Model registry: a name → a factory. Adding a model is adding a module here.

Every module of this package that defines ``NAME`` and ``create()`` is registered.

>>> sorted(available())[:2]
['item_ctr', 'logreg']
>>> build("logreg").predict_one({"i_ctr": 0.1})
0.5
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from functools import cache

from learnloop.errors import UnknownModel
from models.base import OnlineModel


@cache
def _factories() -> dict[str, Callable[[], OnlineModel]]:
    factories = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "create"):
            factories[module.NAME] = module.create
    return factories


def available() -> list[str]:
    """Names of every registered model."""
    return list(_factories())


def build(name: str) -> OnlineModel:
    """A fresh instance of the model registered as ``name``."""
    try:
        return _factories()[name]()
    except KeyError:
        raise UnknownModel(f"no model named {name!r}; known: {sorted(available())}") from None
