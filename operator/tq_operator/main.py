"""The operator process: ``tq operator`` or ``kopf run -A -m tq_operator.main``.

Watches QueueConfigs in every namespace, keeps one Redis client (``tq.settings``) in the memo and
logs in like kubectl does: the in-cluster service account, else the KUBECONFIG/~/.kube/config file.

Leader election (``configure_peering``): with ``TQ_OPERATOR_PEERING`` (default ``tq-operator``)
every replica joins that ClusterKopfPeering and starts paused until it has seen the peers; a
replica pauses while a live peer has a higher priority. The priority is the replica's seniority
(the oldest live replica leads, so a new replica never takes over from a working leader), unless
``TQ_OPERATOR_PRIORITY`` pins it, e.g. high for a debugging session that must pause the cluster's
operator. A leader that stops deregisters at once; one that dies is dropped after the peering
lifetime (60 s). An empty ``TQ_OPERATOR_PEERING`` runs standalone: one replica only.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import kopf
from tq.connection import async_client
from tq.settings import get_settings

from tq_operator import handlers  # noqa: F401  (registers the handlers)
from tq_operator.settings import OperatorSettings, get_operator_settings
from tq_operator.spec import GROUP

FINALIZER = f"{GROUP}/finalizer"
# kopf's own bookkeeping annotations; not GROUP itself: kopf ignores every annotation under its
# storage prefix when it diffs, and the replay/purge annotations live under GROUP.
KOPF_PREFIX = f"kopf.{GROUP}"
# Seniority priorities are below every pinned one (-(ms since epoch) * 1000 - tiebreak, about
# -1.8e15: exact as a JSON number), so any TQ_OPERATOR_PRIORITY >= 0 outranks the replicas.
_TIEBREAK = 1000


def seniority_priority(started: float, tiebreak: int) -> int:
    """Higher for replicas that started earlier; ``tiebreak`` separates ones started in the same ms."""
    return -(int(started * 1000) * _TIEBREAK + tiebreak)


def configure_peering(settings: kopf.OperatorSettings, operator: OperatorSettings, started: float) -> None:
    peering = settings.peering
    if not operator.operator_peering:
        peering.standalone = True
        peering.mandatory = False
        return
    peering.standalone = False
    peering.mandatory = True  # start paused until the peers are known; no peering object: stay paused
    peering.clusterwide = True
    peering.name = operator.operator_peering
    if operator.operator_priority is not None:
        peering.priority = operator.operator_priority
    else:
        peering.priority = seniority_priority(started, random.randrange(_TIEBREAK))


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    configure_peering(settings, get_operator_settings(), time.time())
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    # Only the Events the handlers post on purpose (Paused, Replayed, ...), not every log line.
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    memo["redis"] = async_client(get_settings())  # a cluster client with TQ_REDIS_CLUSTER


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    client = memo.get("redis")
    if client is not None:
        await client.aclose()


def run() -> None:
    """Run until SIGTERM/SIGINT, watching every namespace; peering is set up by the startup handler."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(kopf.operator(clusterwide=True))
