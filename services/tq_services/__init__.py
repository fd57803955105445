"""tq_services: the family services (``tq serve FAMILY``) and the families' job handlers."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable


def load_handlers(families: Iterable[str] = ()) -> list[str]:
    """Import ``tq_services.<family>.handlers`` for each family that has one (default: every
    family of the registry), which registers its handlers on ``tq.handlers.handlers``.
    Returns the modules imported."""
    from tq.registry import all_queues

    names = list(families) or sorted({spec.family for spec in all_queues()})
    loaded = []
    for family in names:
        package = f"{__name__}.{family}"
        if not family.isidentifier() or importlib.util.find_spec(package) is None:
            continue
        module = f"{package}.handlers"
        if importlib.util.find_spec(module) is None:
            continue
        importlib.import_module(module)
        loaded.append(module)
    return loaded
