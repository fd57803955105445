"""The operator process: ``tq operator``, or ``kopf run -A -m tq_operator.main`` (``-n NS`` per namespace).

Watches QueueConfigs and JobSchedules in the namespaces of ``TQ_OPERATOR_NAMESPACES`` (the chart:
the release's own namespace, so two releases in one cluster never touch each other's), or in every
namespace when it is empty. Namespaced, it neither lists namespaces nor watches CRDs (kopf's
scanning is off: the namespaces are taken as given), so it needs no permission for them. Keeps one Redis
client (``tq.settings``) in the memo and logs in like kubectl does: the in-cluster service account, else
the KUBECONFIG/~/.kube/config file.

Leader election (``configure_peering``): with ``TQ_OPERATOR_PEERING`` (default ``tq-operator``)
every replica joins that ClusterKopfPeering and starts paused until it has seen the peers; a
replica pauses while a live peer has a higher priority. The priority is the replica's seniority
(the oldest live replica leads, so a new replica never takes over from a working leader), unless
``TQ_OPERATOR_PRIORITY`` pins it, e.g. high for a debugging session that must pause the cluster's
operator. A leader that stops deregisters at once; one that dies is dropped after the peering
lifetime (60 s). An empty ``TQ_OPERATOR_PEERING`` runs standalone: one replica only.

Operability: kopf's liveness endpoint ``/healthz`` on ``TQ_OPERATOR_HEALTH_PORT`` (the chart's
liveness and readiness probes), the ``tq_operator_*`` metrics (``tq_operator.metrics``) on
``TQ_OPERATOR_METRICS_PORT``, and Events whose source is ``tq-operator`` (and the pod's name).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from typing import Any

import kopf
from tq.connection import async_client
from tq.settings import get_settings

from tq_operator import (
    handlers,  # noqa: F401  (registers the QueueConfig handlers)
    metrics,
    schedule_handlers,  # noqa: F401  (registers the JobSchedule handlers)
)
from tq_operator.settings import OperatorSettings, get_operator_settings, watched_namespaces
from tq_operator.spec import GROUP

FINALIZER = f"{GROUP}/finalizer"
# The source of the Events it posts (`kubectl describe`'s "From", an Event's reportingComponent).
EVENT_SOURCE = "tq-operator"
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
    # kopf sets peering.clusterwide from how it was started (-A or -n) before the startup handlers;
    # configure_peering then joins the (cluster-scoped) peering object whatever the mode.
    settings.scanning.disabled = not settings.peering.clusterwide
    configure_peering(settings, get_operator_settings(), time.time())
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    # Only the Events the handlers post on purpose (Paused, Replayed, ...), not every log line;
    # their source names the operator and its pod.
    settings.posting.level = logging.WARNING
    settings.posting.reporting_component = EVENT_SOURCE
    settings.posting.reporting_instance = os.environ.get("POD_NAME") or socket.gethostname()
    settings.posting.event_name_prefix = f"{EVENT_SOURCE}-"
    settings.watching.server_timeout = 300
    # A QueueConfig deleted while its refresh timer runs waits for the timer to stop before the
    # finalizer is released; poll for that every second, not kopf's 60 s (`helm uninstall`'s hook
    # and `kubectl delete --wait` would wait a minute).
    settings.background.cancellation_polling = 1.0
    memo["redis"] = async_client(get_settings())  # a cluster client with TQ_REDIS_CLUSTER
    port = get_operator_settings().operator_metrics_port
    if port:
        memo["metrics_server"] = metrics.serve(port)


@kopf.on.probe(id="queueconfigs")
def queueconfigs_probe(by_queue: kopf.Index[Any, Any] | None = None, **_: Any) -> int:
    """Reported by the liveness endpoint (``/healthz``): the QueueConfigs the operator indexed."""
    return sum(len(list(v)) for v in by_queue.values()) if by_queue is not None else 0


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    client = memo.get("redis")
    if client is not None:
        await client.aclose()
    server = memo.get("metrics_server")
    if server is not None:
        await asyncio.to_thread(server.shutdown)  # waits for its serving thread's next poll
        server.server_close()


def operator_options(operator: OperatorSettings) -> dict[str, Any]:
    """``kopf.operator``'s arguments for ``operator``: the namespaces, the liveness endpoint."""
    namespaces = watched_namespaces(operator)
    options: dict[str, Any] = {"namespaces": namespaces} if namespaces else {"clusterwide": True}
    if operator.operator_health_port:
        options["liveness_endpoint"] = f"http://0.0.0.0:{operator.operator_health_port}/healthz"
    return options


def run() -> None:
    """Run until SIGTERM/SIGINT, watching ``TQ_OPERATOR_NAMESPACES`` (empty: every namespace); peering is
    set up by the startup handler."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(kopf.operator(**operator_options(get_operator_settings())))
