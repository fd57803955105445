"""Fetching and checking a module for install-plugin / update-plugin.

``module_url`` is ``file://`` (a path on the worker, e.g. modules shipped in the image) or
http(s), fetched with httpx without following redirects. Either way at most
``plugin_max_module_bytes`` are read: a larger module is refused, not truncated. The payload's
sha256 must match the bytes, then ``sandbox.inspect_module`` checks the ABI.
"""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from urllib.parse import unquote, urlsplit

import httpx

from tq_services.plugins.errors import InvalidPlugin, ModuleFetchFailed
from tq_services.plugins.sandbox import CAPABILITIES, inspect_module
from tq_services.plugins.settings import PluginSettings


def _too_large(limit: int) -> InvalidPlugin:
    return InvalidPlugin(f"the module is larger than {limit} bytes (TQ_PLUGIN_MAX_MODULE_BYTES)")


def _read_file(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise InvalidPlugin(f"cannot read the module file {path}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise _too_large(limit)
    return data


async def fetch(url: str, settings: PluginSettings) -> bytes:
    limit = settings.plugin_max_module_bytes
    parts = urlsplit(url)
    if parts.scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidPlugin(f"file URLs name a local path, not a host: {url!r}")
        return await asyncio.to_thread(_read_file, Path(unquote(parts.path)), limit)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InvalidPlugin(f"module_url must be file:// or http(s)://, got {url!r}")
    timeout = settings.plugin_download_timeout_s
    try:
        async with (
            asyncio.timeout(timeout),
            httpx.AsyncClient(timeout=timeout, follow_redirects=False) as client,
            client.stream("GET", url) as answer,
        ):
            if answer.status_code >= 500 or answer.status_code in (408, 429):
                raise ModuleFetchFailed(f"GET {url} answered {answer.status_code}")
            if answer.status_code != 200:
                raise InvalidPlugin(f"GET {url} answered {answer.status_code}")
            declared = answer.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise _too_large(limit)
            data = bytearray()
            async for chunk in answer.aiter_bytes():
                data += chunk
                if len(data) > limit:
                    raise _too_large(limit)
    except (TimeoutError, httpx.TimeoutException):
        raise ModuleFetchFailed(f"GET {url} timed out after {timeout:g}s") from None
    except (httpx.HTTPError, OSError) as exc:
        raise ModuleFetchFailed(f"GET {url} failed: {type(exc).__name__}: {exc}"[:1000]) from None
    return bytes(data)


def check_permissions(permissions: list[str]) -> list[str]:
    unknown = sorted(set(permissions) - CAPABILITIES)
    if unknown:
        raise InvalidPlugin(
            f"unknown permission(s) {', '.join(unknown)}; the host offers {', '.join(sorted(CAPABILITIES))}"
        )
    return sorted(set(permissions))


async def load_module(url: str, sha256: str, settings: PluginSettings) -> tuple[bytes, list[str]]:
    """The module's bytes and entrypoints, checked; ``InvalidPlugin`` says why not."""
    data = await fetch(url, settings)
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise InvalidPlugin(f"sha256 mismatch: the payload says {sha256}, the module at {url} is {digest}")
    entrypoints = await asyncio.to_thread(inspect_module, data)
    return data, entrypoints
