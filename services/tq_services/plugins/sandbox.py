"""Running a plugin's WebAssembly module with wasmtime, in a sandbox.

The ABI. A module exports ``memory``, ``alloc(len: i32) -> i32`` (room for the host to write
into) and entrypoints ``(input_ptr: i32, input_len: i32) -> i64``: the input is the job's JSON,
the result packs the output's location as ``ptr << 32 | len``; the output must be JSON. It may
import from module ``tq`` only the host functions in ``HOST_FUNCTIONS``:

- ``article_read(id: i64, out_ptr: i32, out_cap: i32) -> i32`` (capability ``article.read``):
  writes the article as JSON if it fits, returns its length (larger than ``out_cap``: call again
  with more room), -1 when there is no such article;
- ``event_emit(ptr: i32, len: i32) -> i32`` (capability ``event.emit``): a JSON object, published
  as a ``job.progress`` event after the run; 0 when accepted;
- ``log(ptr: i32, len: i32)`` (no capability): a line in the worker's log.

There is no WASI: no file system, clock, randomness or network. Every host function is linked, and
each checks the plugin's permission set on every call: an ungranted call stops the run
(``permission_denied``). Limits per run: ``plugin_fuel`` (roughly instructions), linear memory up
to ``plugin_max_memory_bytes``, and ``plugin_timeout_s`` of wall clock enforced by epoch
interruption (a timer bumps the engine's epoch; the store's deadline is one tick). Each run gets its
own engine, so one run's timer never interrupts another.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import wasmtime

from tq_services.plugins.errors import InvalidPlugin, PermissionDenied, PluginStopped

log = logging.getLogger("tq.plugins")

HOST_MODULE = "tq"
PAGE = 65_536
MAX_EVENTS = 100
MAX_EVENT_BYTES = 64 * 1024
MAX_LOG_BYTES = 2048

# Value types by name: wasmtime's ValType objects do not compare equal across instances.
I32, I64 = "i32", "i64"
_VALTYPES = {I32: wasmtime.ValType.i32, I64: wasmtime.ValType.i64}


@dataclass(frozen=True)
class HostFunction:
    permission: str | None
    params: tuple[str, ...]
    results: tuple[str, ...]


HOST_FUNCTIONS: dict[str, HostFunction] = {
    "article_read": HostFunction("article.read", (I64, I32, I32), (I32,)),
    "event_emit": HostFunction("event.emit", (I32, I32), (I32,)),
    "log": HostFunction(None, (I32, I32), ()),
}
CAPABILITIES = frozenset(f.permission for f in HOST_FUNCTIONS.values() if f.permission)
"""The permissions a plugin may be granted: one per host capability."""


@dataclass(frozen=True)
class Limits:
    fuel: int
    memory_bytes: int
    timeout_s: float
    max_output_bytes: int


@dataclass
class Outcome:
    output: Any
    fuel_consumed: int
    events: list[dict[str, Any]] = field(default_factory=list)


ArticleReader = Callable[[int], Coroutine[Any, Any, dict[str, Any] | None]]


def _engine() -> wasmtime.Engine:
    config = wasmtime.Config()
    config.consume_fuel = True
    config.epoch_interruption = True
    return wasmtime.Engine(config)


def inspect_module(module_bytes: bytes, entrypoint: str | None = None) -> list[str]:
    """Compile and check a module against the ABI; returns its exported entrypoints.
    ``InvalidPlugin`` says what is wrong."""
    try:
        module = wasmtime.Module(_engine(), module_bytes)
    except wasmtime.WasmtimeError as exc:
        raise InvalidPlugin(f"not a valid WebAssembly module: {str(exc).splitlines()[0]}") from None
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get("memory"), wasmtime.MemoryType):
        raise InvalidPlugin("the module must export its linear memory as 'memory'")
    alloc = exports.get("alloc")
    if not isinstance(alloc, wasmtime.FuncType) or _sig(alloc) != ((I32,), (I32,)):
        raise InvalidPlugin("the module must export 'alloc(len: i32) -> i32'")
    entrypoints = sorted(
        name
        for name, ty in exports.items()
        if isinstance(ty, wasmtime.FuncType) and _sig(ty) == ((I32, I32), (I64,))
    )
    if not entrypoints:
        raise InvalidPlugin("the module exports no entrypoint '(ptr: i32, len: i32) -> i64'")
    if entrypoint is not None and entrypoint not in entrypoints:
        raise InvalidPlugin(f"the module has no entrypoint {entrypoint!r}; it has {', '.join(entrypoints)}")
    for imp in module.imports:
        host = HOST_FUNCTIONS.get(imp.name or "") if imp.module == HOST_MODULE else None
        ty = imp.type
        if host is None or not isinstance(ty, wasmtime.FuncType) or _sig(ty) != (host.params, host.results):
            known = ", ".join(f"{HOST_MODULE}.{n}" for n in HOST_FUNCTIONS)
            raise InvalidPlugin(
                f"the module imports {imp.module}.{imp.name}, which the host does not offer ({known})"
            )
    return entrypoints


def _sig(ty: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in ty.params), tuple(str(r) for r in ty.results)


class _Guest:
    """The host side of one run: permission checks and guest memory access."""

    def __init__(
        self,
        permissions: frozenset[str],
        read_article: ArticleReader,
        loop: asyncio.AbstractEventLoop,
        timeout_s: float,
    ) -> None:
        self.permissions = permissions
        self.read_article = read_article
        self.loop = loop
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self.memory: wasmtime.Memory | None = None

    def check(self, name: str) -> None:
        permission = HOST_FUNCTIONS[name].permission
        if permission is not None and permission not in self.permissions:
            raise PermissionDenied(
                f"the plugin called {HOST_MODULE}.{name} without the permission {permission!r}"
            )

    def read(self, caller: wasmtime.Caller, ptr: int, length: int, limit: int) -> bytes:
        if length < 0 or length > limit or ptr < 0:
            raise PluginStopped("trapped", f"a host call passed a bad buffer ({ptr}, {length})")
        memory = self._memory(caller)
        if ptr + length > memory.data_len(caller):
            raise PluginStopped("trapped", f"a host call passed a buffer outside memory ({ptr}, {length})")
        return bytes(memory.read(caller, ptr, ptr + length))

    def _memory(self, caller: wasmtime.Caller) -> wasmtime.Memory:
        memory = caller.get("memory")
        if not isinstance(memory, wasmtime.Memory):
            raise PluginStopped("trapped", "the module has no exported memory")
        return memory

    # ---- the host functions ---------------------------------------------------------------------
    def article_read(self, caller: wasmtime.Caller, article_id: int, out_ptr: int, out_cap: int) -> int:
        self.check("article_read")
        future = asyncio.run_coroutine_threadsafe(self.read_article(article_id), self.loop)
        article = future.result(timeout=self.timeout_s)
        if article is None:
            return -1
        data = json.dumps(article, ensure_ascii=False, separators=(",", ":"), default=str).encode()
        if len(data) <= out_cap:
            memory = self._memory(caller)
            if out_ptr < 0 or out_ptr + len(data) > memory.data_len(caller):
                raise PluginStopped("trapped", "article_read was given a buffer outside memory")
            memory.write(caller, data, out_ptr)
        return len(data)

    def event_emit(self, caller: wasmtime.Caller, ptr: int, length: int) -> int:
        self.check("event_emit")
        if len(self.events) >= MAX_EVENTS:
            raise PluginStopped("invalid_output", f"the plugin emitted more than {MAX_EVENTS} events")
        try:
            event = json.loads(self.read(caller, ptr, length, MAX_EVENT_BYTES))
        except ValueError:
            raise PluginStopped("invalid_output", "event_emit was given invalid JSON") from None
        if not isinstance(event, dict):
            raise PluginStopped("invalid_output", "event_emit takes a JSON object")
        self.events.append(event)
        return 0

    def log_line(self, caller: wasmtime.Caller, ptr: int, length: int) -> None:
        self.check("log")
        line = self.read(caller, ptr, min(length, MAX_LOG_BYTES), MAX_LOG_BYTES)
        log.info("plugin says: %s", line.decode("utf-8", "replace"))


def _linker(engine: wasmtime.Engine, guest: _Guest) -> wasmtime.Linker:
    linker = wasmtime.Linker(engine)
    impls: dict[str, Callable[..., Any]] = {
        "article_read": guest.article_read,
        "event_emit": guest.event_emit,
        "log": guest.log_line,
    }
    for name, spec in HOST_FUNCTIONS.items():
        ty = wasmtime.FuncType([_VALTYPES[p]() for p in spec.params], [_VALTYPES[r]() for r in spec.results])
        linker.define_func(HOST_MODULE, name, ty, impls[name], access_caller=True)
    return linker


def _classify_trap(exc: wasmtime.Trap, memory_used: int, limits: Limits) -> PluginStopped:
    code = exc.trap_code
    message = str(exc).strip() or repr(exc)
    if code is wasmtime.TrapCode.INTERRUPT:
        return PluginStopped("timed_out", f"the plugin ran past its {limits.timeout_s:g}s wall-clock limit")
    if code is wasmtime.TrapCode.OUT_OF_FUEL:
        return PluginStopped("out_of_fuel", f"the plugin used up its fuel ({limits.fuel})")
    if memory_used + PAGE > limits.memory_bytes:
        # memory.grow failed at the limit and the guest gave up: the limit is why it stopped.
        return PluginStopped(
            "out_of_memory",
            f"the plugin trapped with its memory at the {limits.memory_bytes}-byte limit: {message}",
        )
    return PluginStopped("trapped", f"the plugin trapped ({code.name if code else 'trap'}): {message}")


def run_module(
    module_bytes: bytes,
    entrypoint: str,
    input_data: Any,
    permissions: frozenset[str],
    limits: Limits,
    read_article: ArticleReader,
    loop: asyncio.AbstractEventLoop,
) -> Outcome:
    """Run ``entrypoint`` of the module on ``input_data`` (blocking: call it in a thread).
    Raises ``PluginStopped`` with the reason when the run is stopped."""
    engine = _engine()
    try:
        module = wasmtime.Module(engine, module_bytes)
    except wasmtime.WasmtimeError as exc:
        raise PluginStopped("trapped", f"the module does not compile: {str(exc).splitlines()[0]}") from None
    store = wasmtime.Store(engine)
    store.set_fuel(limits.fuel)
    store.set_epoch_deadline(1)
    store.set_limits(memory_size=limits.memory_bytes)
    guest = _Guest(permissions, read_article, loop, limits.timeout_s)
    timer = threading.Timer(limits.timeout_s, engine.increment_epoch)
    timer.daemon = True
    timer.start()
    memory: wasmtime.Memory | None = None
    try:
        try:
            instance = _linker(engine, guest).instantiate(store, module)
        except wasmtime.WasmtimeError as exc:
            text = str(exc)
            if "memory" in text and ("limit" in text or "exceed" in text):
                raise PluginStopped(
                    "out_of_memory", f"the module needs more memory than allowed: {text}"
                ) from None
            raise PluginStopped(
                "trapped", f"the module could not be instantiated: {text.splitlines()[0]}"
            ) from None
        exports = instance.exports(store)
        memory_ext, alloc, func = exports.get("memory"), exports.get("alloc"), exports.get(entrypoint)
        if not isinstance(memory_ext, wasmtime.Memory) or not isinstance(alloc, wasmtime.Func):
            raise PluginStopped("trapped", "the module lacks 'memory' or 'alloc'")
        if not isinstance(func, wasmtime.Func):
            raise PluginStopped("trapped", f"the module has no entrypoint {entrypoint!r}")
        memory = memory_ext
        data = json.dumps(input_data, separators=(",", ":"), ensure_ascii=False).encode()
        ptr = alloc(store, len(data))
        if not isinstance(ptr, int) or ptr < 0 or ptr + len(data) > memory.data_len(store):
            raise PluginStopped("invalid_output", f"alloc({len(data)}) returned a bad pointer {ptr!r}")
        memory.write(store, data, ptr)
        packed = func(store, ptr, len(data))
        if not isinstance(packed, int):
            raise PluginStopped("invalid_output", "the entrypoint returned no i64")
        out_ptr, out_len = (packed >> 32) & 0xFFFFFFFF, packed & 0xFFFFFFFF
        if out_len > limits.max_output_bytes:
            raise PluginStopped(
                "invalid_output", f"the output is {out_len} bytes; the limit is {limits.max_output_bytes}"
            )
        if out_ptr + out_len > memory.data_len(store):
            raise PluginStopped("invalid_output", f"the output ({out_ptr}, {out_len}) lies outside memory")
        raw = bytes(memory.read(store, out_ptr, out_ptr + out_len))
        try:
            output = json.loads(raw)
        except ValueError:
            raise PluginStopped("invalid_output", f"the output is not JSON: {raw[:200]!r}") from None
        return Outcome(output=output, fuel_consumed=limits.fuel - store.get_fuel(), events=guest.events)
    except wasmtime.Trap as exc:
        used = memory.data_len(store) if memory is not None else 0
        raise _classify_trap(exc, used, limits) from None
    except PermissionDenied as exc:
        raise PluginStopped("permission_denied", str(exc)) from None
    finally:
        timer.cancel()
