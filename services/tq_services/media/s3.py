"""An S3-compatible media store (AWS S3, MinIO, Ceph RGW, R2, ...) over httpx, signed with AWS
Signature Version 4 by botocore's signer, path-style addressing: ``{media_s3_endpoint}/{bucket}/{key}``.

A missing object is ``SourceMissing``; another 4xx (credentials, bucket, policy) dead-letters as
``StoreRefused``; 5xx, timeouts and connection errors raise ``StoreUnavailable`` and are retried.
"""

from __future__ import annotations

import hashlib
import mimetypes
from datetime import UTC, datetime
from urllib.parse import quote

import httpx
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from tq.errors import NonRetryableError, TqError

from tq_services.media.errors import DecompressionBomb, SourceMissing

EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


class StoreRefused(NonRetryableError):
    """The object store refused a request for a reason retrying will not change (403, 400, ...)."""


class StoreUnavailable(TqError):
    """The object store failed or could not be reached: retried with backoff."""


def sign_v4(
    method: str,
    url: httpx.URL,
    headers: dict[str, str],
    *,
    access_key: str,
    secret_key: str,
    region: str,
    amz_date: str,
    service: str = "s3",
) -> str:
    """The ``Authorization`` header of a request whose ``headers`` (every one is signed; they
    must include ``x-amz-date`` and ``x-amz-content-sha256``) go to ``url``: botocore's S3
    Signature Version 4 (canonical request, scope, key derivation), the transport stays httpx."""
    request = AWSRequest(method=method, url=str(url), headers=headers)
    request.context["timestamp"] = amz_date  # what add_auth would take from the clock
    signer = S3SigV4Auth(Credentials(access_key, secret_key), service, region)
    signature = signer.signature(signer.string_to_sign(request, signer.canonical_request(request)), request)
    signed = signer.signed_headers(signer.headers_to_sign(request))
    return (
        f"AWS4-HMAC-SHA256 Credential={signer.scope(request)}, SignedHeaders={signed}, Signature={signature}"
    )


class S3Store:
    def __init__(
        self,
        endpoint: str,
        bucket: str,
        *,
        region: str,
        access_key: str,
        secret_key: str,
        timeout_s: float,
    ) -> None:
        self.base = endpoint.rstrip("/") + "/" + quote(bucket, safe="")
        self.region = region
        self.access_key = access_key
        self.secret_key = secret_key
        self.timeout_s = timeout_s

    def _url(self, key: str) -> httpx.URL:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise SourceMissing(f"media key {key!r} is not a valid object key")
        return httpx.URL(self.base + "/" + quote(key, safe="/-_.~"))

    def _headers(
        self, method: str, url: httpx.URL, payload_hash: str, extra: dict[str, str]
    ) -> dict[str, str]:
        headers = {
            **extra,
            "x-amz-content-sha256": payload_hash,
            "x-amz-date": datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ"),
        }
        headers["authorization"] = sign_v4(
            method,
            url,
            headers,
            access_key=self.access_key,
            secret_key=self.secret_key,
            region=self.region,
            amz_date=headers["x-amz-date"],
        )
        return headers

    def _failed(self, what: str, response: httpx.Response) -> Exception:
        text = f"object store answered {response.status_code} to {what}: {response.text[:300]}"
        return StoreUnavailable(text) if response.status_code >= 500 else StoreRefused(text)

    async def read(self, key: str, max_bytes: int) -> bytes:
        url = self._url(key)
        try:
            async with (
                httpx.AsyncClient(timeout=self.timeout_s) as client,
                client.stream("GET", url, headers=self._headers("GET", url, EMPTY_SHA256, {})) as r,
            ):
                if r.status_code == 404:
                    raise SourceMissing(f"original {key!r} is not in the object store")
                if r.status_code != 200:
                    await r.aread()
                    raise self._failed(f"GET {key}", r)
                data = bytearray()
                async for chunk in r.aiter_bytes():
                    data += chunk
                    if len(data) > max_bytes:
                        raise DecompressionBomb(
                            f"original {key!r} is over {max_bytes} bytes (media_max_source_bytes)"
                        )
                return bytes(data)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"object store unreachable: {type(exc).__name__}: {exc}") from None

    async def write(self, key: str, data: bytes) -> None:
        url = self._url(key)
        content_type = mimetypes.guess_type(key)[0] or "application/octet-stream"
        headers = self._headers("PUT", url, hashlib.sha256(data).hexdigest(), {"content-type": content_type})
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                r = await client.put(url, content=data, headers=headers)
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"object store unreachable: {type(exc).__name__}: {exc}") from None
        if r.status_code not in (200, 201):
            raise self._failed(f"PUT {key}", r)

    async def delete(self, key: str) -> None:
        url = self._url(key)
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s) as client:
                r = await client.delete(url, headers=self._headers("DELETE", url, EMPTY_SHA256, {}))
        except httpx.HTTPError as exc:
            raise StoreUnavailable(f"object store unreachable: {type(exc).__name__}: {exc}") from None
        if r.status_code not in (200, 204, 404):
            raise self._failed(f"DELETE {key}", r)
