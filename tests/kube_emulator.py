"""kmock's Kubernetes emulator with the few API-server behaviours kopf relies on (see KMOCK.md).

Stock ``kmock.KubernetesEmulator`` stores objects and streams changes; this subclass adds:
``uid``/``creationTimestamp``/``generation`` on create, ``generateName``, a ``resourceVersion`` bumped
on every write, ``generation`` bumped when the spec changes, 422 when a JSON-patch ``test`` op
fails, a collection ``resourceVersion`` on LIST and WATCH honouring ``?resourceVersion=``.
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import secrets
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock._internal import dicts, rendering

_Event = dict[str, Any]


class _Recorder:
    """Stands in for kmock's per-resource bus: stamps a resourceVersion and logs every event."""

    def __init__(self, emulator: KubeEmulator, resource: kmock.resource) -> None:
        self.emulator = emulator
        self.resource = resource

    async def put(self, event: _Event) -> None:
        await self.emulator._record(self.resource, event)


class _Buses(dict[Any, _Recorder]):
    def __init__(self, emulator: KubeEmulator) -> None:
        super().__init__()
        self.emulator = emulator

    def __missing__(self, resource: kmock.resource) -> _Recorder:
        recorder = self[resource] = _Recorder(self.emulator, resource)
        return recorder


class KubeEmulator(kmock.KubernetesEmulator):
    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        self._buses = _Buses(self)
        self.rv = 0
        self.log: list[tuple[int, kmock.resource, _Event]] = []
        self.changed = asyncio.Condition()

    def load_crd(self, path: Path) -> kmock.resource:
        crd = yaml.safe_load(path.read_text())
        spec = crd["spec"]
        version = spec["versions"][0]
        resource = kmock.resource(
            group=spec["group"], version=version["name"], plural=spec["names"]["plural"]
        )
        self.resources[resource] = kmock.ResourceInfo(
            namespaced=spec["scope"] == "Namespaced",
            kind=spec["names"]["kind"],
            singular=spec["names"]["singular"],
            shortnames=set(spec["names"].get("shortNames", [])),
            verbs={"get", "list", "watch", "create", "update", "patch", "delete"},
            subresources=set(version.get("subresources", {})),
        )
        return resource

    async def _record(self, resource: kmock.resource, event: _Event) -> None:
        # Called by the stock handler with its lock held: the order of the log is the order of writes.
        self.rv += 1
        meta = event["object"].setdefault("metadata", {})
        meta["resourceVersion"] = str(self.rv)  # the stored version shares this dict
        self.log.append((self.rv, resource, copy.deepcopy(event)))
        async with self.changed:
            self.changed.notify_all()

    async def _handle(self, request: rendering.Request) -> aiohttp.web.StreamResponse:
        if request.resource is not None and request.action == kmock.action.CREATE:
            self._on_create(request)
        elif request.resource is not None and request.action == kmock.action.UPDATE and request.name:
            self._on_update(request)
        return await super()._handle(request)

    @staticmethod
    def _on_create(request: rendering.Request) -> None:
        meta = request.data.setdefault("metadata", {})
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)
        if request.namespace and not meta.get("namespace"):
            meta["namespace"] = request.namespace
        meta["uid"] = str(uuid.uuid4())
        meta.setdefault("generation", 1)
        meta["creationTimestamp"] = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def _on_update(self, request: rendering.Request) -> None:
        key = (request.resource, request.namespace, request.name)
        if request.subresource or key not in self.objects or self.objects[key].deleted:
            return
        current = self.objects[key].raw
        try:
            after = dicts.patch_dict(copy.deepcopy(current), request.data or {})
        except jsonpatch.JsonPatchException:
            return  # the stock handler fails the same way, answered as 422 below
        if after.get("spec") != current.get("spec"):
            generation = int(current.get("metadata", {}).get("generation", 1)) + 1
            if isinstance(request.data, list):
                request.data.append({"op": "add", "path": "/metadata/generation", "value": generation})
            else:
                request.data.setdefault("metadata", {})["generation"] = generation

    async def _render_error(self, exc: Exception) -> aiohttp.web.StreamResponse:
        if isinstance(exc, jsonpatch.JsonPatchException | jsonpatch.JsonPointerException):
            exc = kmock.KubernetesError(status=422, reason="Invalid", message=str(exc))
        return await super()._render_error(exc)

    def _visible(self, request: rendering.Request, resource: kmock.resource, obj: dict[str, Any]) -> bool:
        namespace = obj.get("metadata", {}).get("namespace")
        return resource == request.resource and request.namespace in (None, namespace)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = [
                obj.raw
                for (resource, _, _), obj in self.objects.items()
                if not obj.deleted and self._visible(request, resource, obj.raw)
            ]
            return {"metadata": {"resourceVersion": str(self.rv)}, "items": items}

    async def _serve_watch(self, request: rendering.Request) -> AsyncIterator[rendering.Payload]:
        yield b""
        since = request.params.get("resourceVersion")
        async with self._lock:
            seen = len(self.log)
            if since and since != "0":
                backlog = [
                    e for rv, r, e in self.log if rv > int(since) and self._visible(request, r, e["object"])
                ]
            else:
                backlog = [
                    {"type": "ADDED", "object": obj.raw}
                    for (resource, _, _), obj in self.objects.items()
                    if not obj.deleted and self._visible(request, resource, obj.raw)
                ]
        for event in backlog:
            yield event
        while True:
            async with self.changed:
                await self.changed.wait_for(lambda n=seen: len(self.log) > n)
            fresh, seen = self.log[seen:], len(self.log)
            for _, resource, event in fresh:
                if self._visible(request, resource, event["object"]):
                    yield event
