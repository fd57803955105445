"""tq_services: the family services (``tq serve FAMILY``) and the families' job handlers."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tq.schedules import ScheduleSpec


def load_handlers(families: Iterable[str] = ()) -> list[str]:
    """Import ``tq_services.<family>.handlers`` for each family that has one (default: every
    family of the registry), which registers its handlers on ``tq.handlers.default_handlers``.
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


def default_schedules(families: Iterable[str] = ()) -> list[ScheduleSpec]:
    """The periodic jobs the families declare: ``tq_services.<family>.schedules.SCHEDULES`` for
    each family that has one (default: every family). ``tq schedule install-defaults`` stores them."""
    from tq.registry import all_queues

    names = list(families) or sorted({spec.family for spec in all_queues()})
    out: list[ScheduleSpec] = []
    for family in names:
        module = f"{__name__}.{family}.schedules"
        if not family.isidentifier() or importlib.util.find_spec(f"{__name__}.{family}") is None:
            continue
        if importlib.util.find_spec(module) is None:
            continue
        out.extend(importlib.import_module(module).SCHEDULES)
    return out


async def seed(database_url: str, families: Iterable[str] = ()) -> list[str]:
    """Insert the demo rows ``make dev`` starts with: ``tq_services.<family>.seed.seed(session)``
    for each family that has one (default: every family). Each seeder is idempotent (it inserts
    only what is missing), so running this twice changes nothing. Returns the families seeded."""
    from tq.registry import all_queues

    from tq_services.store import sessions

    names = list(families) or sorted({spec.family for spec in all_queues()})
    done = []
    for family in names:
        module = f"{__name__}.{family}.seed"
        if not family.isidentifier() or importlib.util.find_spec(f"{__name__}.{family}") is None:
            continue
        if importlib.util.find_spec(module) is None:
            continue
        seeder = importlib.import_module(module)
        async with sessions(database_url)() as session, session.begin():
            await seeder.seed(session)
        done.append(family)
    return done
