"""Model registry: a name → a factory. Adding a model is adding a module here.

Every module of this package that defines ``NAME`` and ``create()`` is registered. A
module may also define ``after_drift()``: the fresh model a drift response starts (a
challenger, or a reset), when it should differ from ``create()`` — for instance a
learning rate that starts hot to learn the new concept fast.

>>> sorted(available())[:2]
['item_ctr', 'logreg']
>>> build("logreg").predict_one({"i_ctr": 0.1})
0.5
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import cache
from types import ModuleType

from learnloop.errors import UnknownModel
from models.base import OnlineModel


@cache
def _modules() -> dict[str, ModuleType]:
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "create"):
            found[module.NAME] = module
    return found


def available() -> list[str]:
    """Names of every registered model."""
    return list(_modules())


def build(name: str) -> OnlineModel:
    """A fresh instance of the model registered as ``name``."""
    return _module(name).create()


def build_after_drift(name: str) -> OnlineModel:
    """The fresh instance a drift response starts: ``after_drift()``, else ``create()``."""
    module = _module(name)
    return getattr(module, "after_drift", module.create)()


def _module(name: str) -> ModuleType:
    try:
        return _modules()[name]
    except KeyError:
        raise UnknownModel(f"no model named {name!r}; known: {sorted(available())}") from None
