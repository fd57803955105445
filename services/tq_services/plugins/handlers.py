"""Handlers of the plugins family, registered on the process-wide ``tq.handlers.default_handlers``.

execute-plugin runs the plugin's module in the sandbox (``sandbox``) and writes a
PluginExecutionLog row for every run, whatever its end. A run that is stopped (trap, fuel, time,
memory, an ungranted capability, invalid output) is logged with the reason and dead-lettered
without retry; events the plugin emitted are published as ``job.progress`` only after a
successful run. install-plugin and update-plugin fetch, verify (sha256, size, ABI) and store a
module (``modules``).
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from typing import Any

from sqlalchemy import select
from tq.envelope import EventType
from tq.handlers import JobContext, default_handlers
from tq.payloads import ExecutePlugin, InstallPlugin, UpdatePlugin
from tq.settings import get_settings

from tq_services.content.models import Article
from tq_services.plugins.errors import InvalidPlugin, PluginStopped, PluginUnavailable
from tq_services.plugins.models import Plugin, PluginExecutionLog
from tq_services.plugins.modules import check_permissions, load_module
from tq_services.plugins.sandbox import Limits, Outcome, run_module
from tq_services.plugins.settings import get_plugin_settings
from tq_services.store import sessions

log = logging.getLogger("tq.plugins")

PLUGIN_QUEUE = "plugins:execute"
STACK_MAX = 8000


@default_handlers.register(PLUGIN_QUEUE, "execute-plugin")
async def execute_plugin(ctx: JobContext, payload: ExecutePlugin) -> dict[str, Any]:
    settings = get_settings()
    plugins = get_plugin_settings()
    maker = sessions(settings.database_url)
    async with maker() as session, session.begin():
        plugin = await session.get(Plugin, payload.plugin_id)
        if plugin is None:
            raise PluginUnavailable(f"plugin {payload.plugin_id} does not exist")
        name, version, module, enabled = plugin.name, plugin.version, plugin.module, plugin.enabled
        permissions = frozenset(plugin.permissions)

    async def read_article(article_id: int) -> dict[str, Any] | None:
        async with maker() as s:
            article = await s.get(Article, article_id)
            if article is None:
                return None
            return {
                "id": article.id,
                "title": article.title,
                "body": article.body,
                "locale": article.locale,
                "status": article.status,
                "tags": article.tags,
            }

    limits = Limits(
        fuel=plugins.plugin_fuel,
        memory_bytes=plugins.plugin_max_memory_bytes,
        timeout_s=plugins.plugin_timeout_s,
        max_output_bytes=plugins.plugin_max_output_bytes,
    )
    started = time.perf_counter()
    outcome: Outcome | None = None
    stopped: PluginStopped | None = None
    stack: str | None = None
    try:
        if not enabled:
            raise PluginStopped("disabled", f"plugin {name!r} is disabled")
        loop = asyncio.get_running_loop()
        outcome = await asyncio.to_thread(
            run_module, module, payload.entrypoint, payload.input, permissions, limits, read_article, loop
        )
    except PluginStopped as exc:
        stopped, stack = exc, traceback.format_exc()
    duration_ms = round((time.perf_counter() - started) * 1000, 3)
    status = stopped.status if stopped is not None else "succeeded"
    async with maker() as session, session.begin():
        session.add(
            PluginExecutionLog(
                plugin_id=payload.plugin_id,
                plugin_version=version,
                entrypoint=payload.entrypoint,
                status=status,
                duration_ms=duration_ms,
                fuel_consumed=outcome.fuel_consumed if outcome is not None else None,
                output=outcome.output if outcome is not None else None,
                error_stack=f"{stopped}\n{stack}"[:STACK_MAX] if stopped is not None else None,
                job_id=ctx.job_id,
                trace_id=ctx.trace_id,
            )
        )
    if stopped is not None:
        log.warning("plugin %s %s (%s) stopped: %s: %s", name, version, payload.entrypoint, status, stopped)
        raise PluginStopped(status, f"plugin {name!r} {version} stopped ({status}): {stopped}")
    assert outcome is not None
    for event in outcome.events:
        await ctx.publish(EventType.JOB_PROGRESS, plugin_id=payload.plugin_id, plugin=name, event=event)
    return {
        "plugin_id": payload.plugin_id,
        "version": version,
        "status": status,
        "duration_ms": duration_ms,
        "fuel_consumed": outcome.fuel_consumed,
        "events": len(outcome.events),
        "output": outcome.output,
    }


@default_handlers.register(PLUGIN_QUEUE, "install-plugin")
async def install_plugin(ctx: JobContext, payload: InstallPlugin) -> dict[str, Any]:
    settings = get_settings()
    permissions = check_permissions(payload.permissions)
    module, entrypoints = await load_module(payload.module_url, payload.sha256, get_plugin_settings())
    async with sessions(settings.database_url)() as session, session.begin():
        existing = (
            await session.execute(select(Plugin).where(Plugin.name == payload.name))
        ).scalar_one_or_none()
        if existing is not None:
            if existing.sha256 == payload.sha256 and existing.version == payload.version:
                return {"plugin_id": existing.id, "installed": False, "version": existing.version}  # a re-run
            raise InvalidPlugin(
                f"a plugin named {payload.name!r} is installed (id {existing.id}, "
                f"version {existing.version}): use update-plugin"
            )
        plugin = Plugin(
            name=payload.name,
            version=payload.version,
            module=module,
            sha256=payload.sha256,
            size_bytes=len(module),
            exports=entrypoints,
            permissions=permissions,
            enabled=True,
        )
        session.add(plugin)
        await session.flush()
        plugin_id = plugin.id
    log.info("plugin %s %s installed as %d (%d bytes)", payload.name, payload.version, plugin_id, len(module))
    return {"plugin_id": plugin_id, "installed": True, "version": payload.version, "entrypoints": entrypoints}


@default_handlers.register(PLUGIN_QUEUE, "update-plugin")
async def update_plugin(ctx: JobContext, payload: UpdatePlugin) -> dict[str, Any]:
    settings = get_settings()
    module, entrypoints = await load_module(payload.module_url, payload.sha256, get_plugin_settings())
    async with sessions(settings.database_url)() as session, session.begin():
        plugin = await session.get(Plugin, payload.plugin_id)
        if plugin is None:
            raise PluginUnavailable(f"plugin {payload.plugin_id} does not exist")
        previous = plugin.version
        plugin.version, plugin.module, plugin.sha256 = payload.version, module, payload.sha256
        plugin.size_bytes, plugin.exports = len(module), entrypoints
    log.info("plugin %d updated from %s to %s", payload.plugin_id, previous, payload.version)
    return {
        "plugin_id": payload.plugin_id,
        "version": payload.version,
        "previous": previous,
        "entrypoints": entrypoints,
    }
