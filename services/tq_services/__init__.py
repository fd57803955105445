"""tq_services: the family services (``tq serve FAMILY``) and the families' job handlers.

A family may have any of the modules ``handlers``, ``schedules`` and ``seed``; the functions here
find them for the command line (``family_modules``)."""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tq.schedules import ScheduleSpec


def family_modules(part: str, families: Iterable[str] = ()) -> list[tuple[str, ModuleType]]:
    """``(family, tq_services.<family>.<part>)`` imported for each named family (default: every
    family of the registry) that has such a module; unknown names are passed over."""
    from tq.registry import all_queues

    names = list(families) or sorted({spec.family for spec in all_queues()})
    found = []
    for family in names:
        package = f"{__name__}.{family}"
        if not family.isidentifier() or importlib.util.find_spec(package) is None:
            continue
        if importlib.util.find_spec(f"{package}.{part}") is None:
            continue
        found.append((family, importlib.import_module(f"{package}.{part}")))
    return found


def load_handlers(families: Iterable[str] = ()) -> list[str]:
    """Import ``tq_services.<family>.handlers`` for each family that has one (default: every
    family of the registry), which registers its handlers on ``tq.handlers.default_handlers``.
    Returns the modules imported."""
    return [module.__name__ for _, module in family_modules("handlers", families)]


def default_schedules(families: Iterable[str] = ()) -> list[ScheduleSpec]:
    """The periodic jobs the families declare: ``tq_services.<family>.schedules.SCHEDULES`` for
    each family that has one (default: every family). ``tq schedule install-defaults`` stores them."""
    return [spec for _, module in family_modules("schedules", families) for spec in module.SCHEDULES]


async def seed(database_url: str, families: Iterable[str] = ()) -> list[str]:
    """Insert the demo rows ``make dev`` starts with: ``tq_services.<family>.seed.seed(session)``
    for each family that has one (default: every family). Each seeder is idempotent (it inserts
    only what is missing), so running this twice changes nothing. Returns the families seeded."""
    from tq_services.store import sessions

    done = []
    for family, seeder in family_modules("seed", families):
        async with sessions(database_url)() as session, session.begin():
            await seeder.seed(session)
        done.append(family)
    return done
