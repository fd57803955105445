"""The operator process: ``tq operator`` or ``kopf run -A -m tq_operator.main``.

Watches QueueConfigs in every namespace, keeps one Redis client (``tq.settings``) in the memo and
logs in like kubectl does: the in-cluster service account, else the KUBECONFIG/~/.kube/config file.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf
from tq.connection import async_client
from tq.settings import get_settings

from tq_operator import handlers  # noqa: F401  (registers the handlers)
from tq_operator.spec import GROUP

FINALIZER = f"{GROUP}/finalizer"
# kopf's own bookkeeping annotations; not GROUP itself: kopf ignores every annotation under its
# storage prefix when it diffs, and the replay/purge annotations live under GROUP.
KOPF_PREFIX = f"kopf.{GROUP}"


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
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
    """Run until SIGTERM/SIGINT, watching every namespace."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    asyncio.run(kopf.operator(clusterwide=True, standalone=True))
