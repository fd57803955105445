"""kmock's Kubernetes emulator with the few API-server behaviours kopf relies on.

Stock ``kmock.KubernetesEmulator`` stores objects and streams changes; this subclass adds:
``uid``/``creationTimestamp``/``generation`` on create, ``generateName``, a ``resourceVersion`` bumped
on every write, ``generation`` bumped when the spec changes, 422 when a JSON-patch ``test`` op
fails, a collection ``resourceVersion`` (and the list's ``kind``) on LIST with equality
``?labelSelector=`` terms, and WATCH honouring ``?resourceVersion=``.

Also what the operator and kubectl need beyond that: the ``scale`` subresource of Deployments
(autoscaling/v1 Scale), a log of every API request as RBAC sees it (``requests``: verb, group,
resource[/subresource], user agent), and server-side printing (``kubectl get`` asks for a
meta.k8s.io Table; the columns are the CRD's additionalPrinterColumns), and the OpenAPI v3 index
of the loaded CRDs with the ``fieldValidation`` parameter, which tells ``kubectl apply`` to leave
validation to the server (the emulator does not validate; tests validate with jsonschema), and
their schemas for ``kubectl explain``; printer columns keep their ``priority`` (``-o wide``).
"""

from __future__ import annotations

import asyncio
import copy
import datetime
import re
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp.web
import jsonpatch
import kmock
import yaml
from kmock._internal import dicts, rendering

_Event = dict[str, Any]
_VERBS = {
    kmock.action.LIST: "list",
    kmock.action.WATCH: "watch",
    kmock.action.FETCH: "get",
    kmock.action.CREATE: "create",
    kmock.action.DELETE: "delete",
}
_STATUS_REASONS = {404: "NotFound", 409: "AlreadyExists", 422: "Invalid"}
_INFO = {"title": "Kubernetes", "version": "emulated"}
_JSONPATH_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[\?\(@\.([A-Za-z0-9_-]+)=="([^"]*)"\)\]')


@dataclass(frozen=True)
class ApiCall:
    """One API request as an RBAC authorizer sees it."""

    agent: str
    verb: str
    group: str
    resource: str  # plural or plural/subresource; "" for discovery (a non-resource URL)
    namespace: str | None
    name: str | None
    path: str


def jsonpath(obj: Any, path: str) -> Any:
    """The subset of kubectl's JSONPath that printer columns use: fields and ``[?(@.k=="v")]``."""
    values = [obj]
    for field, key, value in _JSONPATH_STEP.findall(path):
        if field:
            values = [v[field] for v in values if isinstance(v, dict) and field in v]
        else:
            values = [
                item for v in values if isinstance(v, list) for item in v if str(item.get(key)) == value
            ]
    return values[0] if values else None


def _age(timestamp: str) -> str:
    created = datetime.datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    seconds = int((datetime.datetime.now(datetime.UTC) - created).total_seconds())
    if seconds < 120:
        return f"{seconds}s"
    return f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"


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
        self.requests: list[ApiCall] = []
        self.printer_columns: dict[kmock.resource, list[dict[str, Any]]] = {}
        self.crds: dict[kmock.resource, dict[str, Any]] = {}

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
        self.printer_columns[resource] = version.get("additionalPrinterColumns", [])
        self.crds[resource] = crd
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
        if request.url.path == "/openapi/v2":
            return self._openapi_v2(request)
        if request.url.path == "/openapi/v3":
            return aiohttp.web.json_response(self._openapi_index())
        if request.url.path.startswith("/openapi/v3/apis/"):
            group_version = request.url.path.removeprefix("/openapi/v3/apis/")
            return aiohttp.web.json_response(self._openapi_group_version(group_version))
        if request.resource is not None:
            self._log_call(request)
            try:
                if request.subresource == "scale" and request.resource.plural == "deployments":
                    return aiohttp.web.json_response(await self._serve_scale(request))
                if "as=Table" in request.headers.get("Accept", "") and request.action in (
                    kmock.action.LIST,
                    kmock.action.FETCH,
                ):
                    return aiohttp.web.json_response(await self._serve_table(request))
            except kmock.KubernetesError as exc:
                return await self._render_error(exc)
        if request.resource is not None and request.action == kmock.action.CREATE:
            self._on_create(request)
        elif request.resource is not None and request.action == kmock.action.UPDATE and request.name:
            self._on_update(request)
        return await super()._handle(request)

    def _log_call(self, request: rendering.Request) -> None:
        assert request.resource is not None and request.action is not None
        plural = request.resource.plural or ""
        verb = _VERBS.get(request.action) or ("update" if request.method == "PUT" else "patch")
        if verb == "delete" and not request.name:
            verb = "deletecollection"
        if not plural:  # discovery: RBAC sees a non-resource URL and an HTTP verb
            verb = str(request.method.value).lower()
        self.requests.append(
            ApiCall(
                agent=request.headers.get("User-Agent", ""),
                verb=verb,
                group=request.resource.group or "",
                resource=f"{plural}/{request.subresource}" if request.subresource else plural,
                namespace=request.namespace,
                name=request.name,
                path=request.url.path,
            )
        )

    async def _serve_scale(self, request: rendering.Request) -> dict[str, Any]:
        key = (request.resource, request.namespace, request.name)
        async with self._lock:
            if key not in self._objects or self._objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            deployment = self._objects[key]
            if request.action == kmock.action.UPDATE:
                replicas = self._requested_replicas(request.data)
                generation = int(deployment.raw.get("metadata", {}).get("generation", 1)) + 1
                deployment.patch({"spec": {"replicas": replicas}, "metadata": {"generation": generation}})
                await self._buses[request.resource].put({"type": "MODIFIED", "object": deployment.raw})
            raw = deployment.raw
        meta = raw.get("metadata", {})
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {k: meta.get(k) for k in ("name", "namespace", "uid", "resourceVersion")},
            "spec": {"replicas": raw.get("spec", {}).get("replicas", 1)},
            "status": {"replicas": raw.get("status", {}).get("replicas", 0)},
        }

    @staticmethod
    def _openapi_v2(request: rendering.Request) -> aiohttp.web.StreamResponse:
        """An OpenAPI v2 document without definitions: older kubectl (Debian's 1.20) needs one to
        apply, and skips client-side validation of kinds it does not define."""
        if "protobuf" not in request.headers.get("Accept", ""):
            return aiohttp.web.json_response({"swagger": "2.0", "info": _INFO, "paths": {}})

        def field(number: int, payload: bytes) -> bytes:  # a length-delimited protobuf field
            return bytes([number << 3 | 2, len(payload)]) + payload

        # gnostic's openapi_v2.Document: swagger = 1, info = 2 (Info: title = 1, version = 2).
        info = field(1, _INFO["title"].encode()) + field(2, _INFO["version"].encode())
        body = field(1, b"2.0") + field(2, info)
        return aiohttp.web.Response(
            body=body, content_type="application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
        )

    def _openapi_index(self) -> dict[str, Any]:
        gvs = {f"apis/{r.group}/{r.version}" for r in self.crds}
        return {"paths": {gv: {"serverRelativeURL": f"/openapi/v3/{gv}"} for gv in sorted(gvs)}}

    def _openapi_group_version(self, group_version: str) -> dict[str, Any]:
        """What kubectl's query-parameter check reads (each operation, its GVK and parameters) and
        the CRDs' schemas (``kubectl explain``)."""
        paths: dict[str, Any] = {}
        schemas: dict[str, Any] = {}
        for resource, crd in self.crds.items():
            if f"{resource.group}/{resource.version}" != group_version:
                continue
            gvk = {"group": resource.group, "version": resource.version, "kind": crd["spec"]["names"]["kind"]}
            scope = "/namespaces/{namespace}" if crd["spec"]["scope"] == "Namespaced" else ""
            base = f"/apis/{group_version}{scope}/{resource.plural}"

            def operation(verb: str, gvk: dict[str, str] = gvk) -> dict[str, Any]:
                return {
                    "x-kubernetes-action": verb,
                    "x-kubernetes-group-version-kind": gvk,
                    "parameters": [{"name": "fieldValidation", "in": "query", "schema": {"type": "string"}}],
                    "responses": {"200": {"description": "OK"}},
                }

            paths[base] = {"post": operation("post")}
            paths[base + "/{name}"] = {"put": operation("put"), "patch": operation("patch")}
            # the CRD's schema, found by its GVK: what `kubectl explain` reads
            version = next(v for v in crd["spec"]["versions"] if v["name"] == resource.version)
            if "schema" in version:
                name = ".".join([*reversed(resource.group.split(".")), resource.version, gvk["kind"]])
                schemas[name] = {
                    **version["schema"]["openAPIV3Schema"],
                    "x-kubernetes-group-version-kind": [gvk],
                }
        return {"openapi": "3.0.0", "info": _INFO, "paths": paths, "components": {"schemas": schemas}}

    @staticmethod
    def _requested_replicas(data: Any) -> int:
        if isinstance(data, list):  # JSON patch
            ops = [
                op for op in data if op.get("path") == "/spec/replicas" and op.get("op") in ("add", "replace")
            ]
            value = ops[-1]["value"] if ops else None
        else:  # merge patch or a whole Scale
            value = ((data or {}).get("spec") or {}).get("replicas")
        if not isinstance(value, int) or value < 0:
            raise kmock.KubernetesError(status=422, reason="Invalid", message=f"bad spec.replicas: {value!r}")
        return value

    async def _serve_table(self, request: rendering.Request) -> dict[str, Any]:
        """What the API server answers ``kubectl get``: the printer columns, evaluated per object."""
        assert request.resource is not None
        if request.action == kmock.action.FETCH:
            key = (request.resource, request.namespace, request.name)
            if key not in self._objects or self._objects[key].deleted:
                raise kmock.KubernetesObjectNotFoundError()
            objs = [self._objects[key].raw]
        else:
            objs = list((await self._serve_list(request))["items"])
        columns = [
            c
            for c in self.printer_columns.get(request.resource, [])
            if c["jsonPath"] != ".metadata.creationTimestamp"
        ]
        definitions = [
            {"name": "Name", "type": "string", "format": "name", "description": "name", "priority": 0}
        ]
        definitions += [
            {
                "name": c["name"],
                "type": c["type"],
                "format": "",
                "description": c.get("description", ""),
                "priority": c.get("priority", 0),  # > 0: only with `kubectl get -o wide`
            }
            for c in columns
        ]
        definitions.append(
            {"name": "Age", "type": "string", "format": "", "description": "age", "priority": 0}
        )
        rows = []
        for obj in objs:
            meta = obj.get("metadata", {})
            cells = [meta.get("name")] + [jsonpath(obj, c["jsonPath"]) for c in columns]
            cells.append(_age(meta["creationTimestamp"]) if meta.get("creationTimestamp") else "<unknown>")
            partial = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": meta}
            rows.append({"cells": cells, "object": partial})
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": str(self.rv)},
            "columnDefinitions": definitions,
            "rows": rows,
        }

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
        elif isinstance(exc, kmock.KubernetesError) and exc.status in _STATUS_REASONS:
            # The API server's machine-readable reasons: older kubectl reads only these, not the code.
            exc = kmock.KubernetesError(
                status=exc.status, reason=_STATUS_REASONS[exc.status], message=exc.message
            )
        return await super()._render_error(exc)

    def _visible(self, request: rendering.Request, resource: kmock.resource, obj: dict[str, Any]) -> bool:
        namespace = obj.get("metadata", {}).get("namespace")
        return resource == request.resource and request.namespace in (None, namespace)

    @staticmethod
    def _selected(request: rendering.Request, obj: dict[str, Any]) -> bool:
        """``?labelSelector=`` with equality terms only (``k=v,k2=v2``), as ``kubectl -l`` sends them."""
        selector = request.params.get("labelSelector") or ""
        labels = obj.get("metadata", {}).get("labels") or {}
        terms = [t.split("=", 1) for t in selector.split(",") if t]
        return all(labels.get(k.strip()) == v.strip().lstrip("=") for k, v in terms)

    async def _serve_list(self, request: rendering.Request) -> rendering.Payload:
        if request.resource not in self._get_resources():
            raise kmock.KubernetesResourceNotFoundError()
        async with self._lock:
            items = [
                obj.raw
                for (resource, _, _), obj in self.objects.items()
                if not obj.deleted
                and self._visible(request, resource, obj.raw)
                and self._selected(request, obj.raw)
            ]
            payload: dict[str, Any] = {"metadata": {"resourceVersion": str(self.rv)}, "items": items}
            info = self.resources.get(request.resource)
            if info is not None and info.kind:  # kubectl's decoder needs the list's kind
                group, version = request.resource.group, request.resource.version
                payload["kind"] = f"{info.kind}List"
                payload["apiVersion"] = f"{group}/{version}" if group else str(version)
            return payload

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
