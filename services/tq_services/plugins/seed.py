"""Demo rows for ``make dev``: one plugin, compiled from the WAT below at seed time.

``demo-article-reader`` reads the article whose id is the number in its input
(``{"article_id": 1}``) through the ``article.read`` capability, emits one event
(``event.emit``) and returns the article as its output (``null`` when there is none).
"""

from __future__ import annotations

import hashlib

import wasmtime
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from tq_services.plugins.models import Plugin
from tq_services.plugins.sandbox import inspect_module

DEMO_NAME = "demo-article-reader"
DEMO_VERSION = "1.0.0"
DEMO_PERMISSIONS = ["article.read", "event.emit"]

# The ABI's plumbing every module needs: memory, a bump allocator, and reading the first decimal
# number out of the JSON input (small WAT plugins have no JSON parser).
WAT_PRELUDE = r"""
  (memory (export "memory") 2)
  (global $heap (mut i32) (i32.const 4096))
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $len)))
    (block $fits
      (br_if $fits (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
      (if (i32.eq (memory.grow (i32.add (i32.const 1) (i32.div_u
            (i32.sub (global.get $heap) (i32.mul (memory.size) (i32.const 65536))) (i32.const 65536))))
            (i32.const -1))
        (then unreachable)))
    (local.get $p))
  (func $number (param $ptr i32) (param $len i32) (result i64)
    (local $i i32) (local $c i32) (local $n i64)
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
      (local.set $c (i32.load8_u (i32.add (local.get $ptr) (local.get $i))))
      (if (i32.and (i32.ge_u (local.get $c) (i32.const 48)) (i32.le_u (local.get $c) (i32.const 57)))
        (then (local.set $n (i64.add (i64.mul (local.get $n) (i64.const 10))
                                     (i64.extend_i32_u (i32.sub (local.get $c) (i32.const 48)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next)))
    (local.get $n))
  (func $pack (param $ptr i32) (param $len i32) (result i64)
    (i64.or (i64.shl (i64.extend_i32_u (local.get $ptr)) (i64.const 32)) (i64.extend_i32_u (local.get $len))))
"""

_EVENT = '{"plugin":"demo-article-reader","read":true}'
_EVENT_WAT = _EVENT.replace('"', '\\"')  # a WAT string literal

DEMO_WAT = (
    r"""(module
  (import "tq" "article_read" (func $article_read (param i64 i32 i32) (result i32)))
  (import "tq" "event_emit" (func $event_emit (param i32 i32) (result i32)))
"""
    + WAT_PRELUDE
    + f"""  (data (i32.const 16) "null")
  (data (i32.const 32) "{_EVENT_WAT}")
"""
    + rf"""  (func (export "run") (param $ptr i32) (param $len i32) (result i64)
    (local $buf i32) (local $n i32)
    (local.set $buf (call $alloc (i32.const 65536)))
    (local.set $n (call $article_read (call $number (local.get $ptr) (local.get $len))
                                      (local.get $buf) (i32.const 65536)))
    (if (i32.lt_s (local.get $n) (i32.const 0))
      (then (return (call $pack (i32.const 16) (i32.const 4)))))
    (if (i32.gt_s (local.get $n) (i32.const 65536)) (then unreachable))
    (drop (call $event_emit (i32.const 32) (i32.const {len(_EVENT)})))
    (call $pack (local.get $buf) (local.get $n)))
)
"""
)


def demo_module() -> bytes:
    module = bytes(wasmtime.wat2wasm(DEMO_WAT))
    inspect_module(module, "run")
    return module


async def seed(session: AsyncSession) -> None:
    found = await session.execute(select(Plugin.id).where(Plugin.name == DEMO_NAME))
    if found.first() is not None:
        return
    module = demo_module()
    session.add(
        Plugin(
            name=DEMO_NAME,
            version=DEMO_VERSION,
            module=module,
            sha256=hashlib.sha256(module).hexdigest(),
            size_bytes=len(module),
            exports=["run"],
            permissions=DEMO_PERMISSIONS,
            enabled=True,
        )
    )
