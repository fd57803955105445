"""The wire: the SSRF guard and one POST with httpx.

``check_url`` refuses anything but http(s) and, unless ``webhook_allow_private_networks`` is on,
a host resolving to any address that is not globally routable: loopback, private (RFC 1918, ULA),
link-local (cloud metadata at 169.254.169.254), shared (CGNAT), multicast, reserved, unspecified,
also when mapped into IPv6. Every address a name resolves to must pass, and it returns the
address checked: ``post`` connects to that very address (Host header and TLS name unchanged), so a
name that resolves differently a moment later (DNS rebinding) cannot steer the POST elsewhere.

``post`` sends the body without following redirects, within ``webhook_timeout_s`` in all, and
keeps at most ``webhook_max_response_bytes`` of the answer (the rest is never read).
Transport failures (timeouts, connection errors, DNS) are ``DeliveryDeferred``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from tq_services.webhooks.errors import DeliveryDeferred, UnsafeUrl
from tq_services.webhooks.settings import WebhookSettings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Answer:
    status_code: int
    body: str
    response_ms: float
    retry_after: str | None = None  # the raw Retry-After header, if any


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds a Retry-After header asks to wait: delta-seconds or an HTTP date (RFC 9110 10.2.3).
    None when absent or unreadable; a date in the past is 0."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def is_public(ip: Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


async def check_url(url: str, allow_private: bool) -> str | None:
    """Raise ``UnsafeUrl`` unless ``url`` may be delivered to (see the module's docstring); return
    the checked address to connect to, or None when private networks are allowed (no pinning)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise UnsafeUrl(f"invalid webhook URL {url!r}: {exc}") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise UnsafeUrl(f"webhook URL must be http(s) with a host: {url!r}")
    if allow_private:
        return None
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:  # socket.gaierror: perhaps temporary
        raise DeliveryDeferred(f"cannot resolve {host}: {exc}") from None
    if not infos:
        raise DeliveryDeferred(f"cannot resolve {host}: no addresses")
    checked: list[Address] = []
    for *_, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        if not is_public(ip):
            raise UnsafeUrl(
                f"SSRF: webhook URL host {host} resolves to the non-public address {ip} "
                "(TQ_WEBHOOK_ALLOW_PRIVATE_NETWORKS is off)"
            )
        checked.append(ip)
    return str(checked[0])


def pinned(url: str, address: str, headers: dict[str, str]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``url`` aimed at ``address``: (URL with the address as host, headers with the original Host,
    request extensions naming the original host for TLS SNI and certificate checks)."""
    parsed = httpx.URL(url)
    host_header = parsed.netloc.decode("ascii")
    if "@" in host_header:
        host_header = host_header.rsplit("@", 1)[1]
    target = str(parsed.copy_with(host=address))
    extensions = {"sni_hostname": parsed.host} if parsed.scheme == "https" else {}
    return target, {**headers, "Host": host_header}, extensions


async def post(
    settings: WebhookSettings, url: str, body: bytes, headers: dict[str, str], address: str | None = None
) -> Answer:
    """POST ``body``; with ``address`` (from ``check_url``) the connection goes to that address."""
    limit = settings.webhook_max_response_bytes
    started = time.perf_counter()
    extensions: dict[str, Any] = {}
    if address is not None:
        url, headers, extensions = pinned(url, address, headers)
    try:
        async with (
            asyncio.timeout(settings.webhook_timeout_s),
            httpx.AsyncClient(timeout=settings.webhook_timeout_s, follow_redirects=False) as client,
            client.stream("POST", url, content=body, headers=headers, extensions=extensions) as r,
        ):
            kept = bytearray()
            if limit:
                async for chunk in r.aiter_bytes():
                    kept += chunk
                    if len(kept) >= limit:
                        break
            status = r.status_code
            retry_after = r.headers.get("retry-after")
    except (TimeoutError, httpx.TimeoutException) as exc:
        elapsed = (time.perf_counter() - started) * 1000
        raise DeliveryDeferred(
            f"webhook receiver timed out after {elapsed:.0f} ms: {type(exc).__name__}"
        ) from None
    except (httpx.HTTPError, OSError) as exc:
        raise DeliveryDeferred(f"webhook receiver unreachable: {type(exc).__name__}: {exc}"[:1000]) from None
    elapsed = (time.perf_counter() - started) * 1000
    return Answer(status, bytes(kept[:limit]).decode("utf-8", "replace"), round(elapsed, 3), retry_after)
