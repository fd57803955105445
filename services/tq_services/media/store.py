"""Where originals and variants live: keys (relative paths) in a local directory, ``media_root``
(the default), or in an S3-compatible bucket (``media_storage = "s3"``, see ``tq_services.media.s3``).

Writes go to a temporary file renamed into place, so a reader never sees half a variant. Keys
that would leave the root (absolute, ``..``) are refused.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from pathlib import Path
from typing import Protocol

from tq.errors import NonRetryableError

from tq_services.media.errors import DecompressionBomb, SourceMissing
from tq_services.media.settings import MediaSettings


class MediaStore(Protocol):
    async def read(self, key: str, max_bytes: int) -> bytes: ...

    async def write(self, key: str, data: bytes) -> None: ...

    async def delete(self, key: str) -> None: ...


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser().resolve()

    def path(self, key: str) -> Path:
        target = (self.root / key).resolve()
        if not key or Path(key).is_absolute() or not target.is_relative_to(self.root):
            raise SourceMissing(f"media key {key!r} is not inside the media store")
        return target

    async def read(self, key: str, max_bytes: int) -> bytes:
        path = self.path(key)

        def load() -> bytes:
            try:
                size = path.stat().st_size
                if size > max_bytes:
                    raise DecompressionBomb(
                        f"original {key!r} is {size} bytes; the limit is {max_bytes} (media_max_source_bytes)"
                    )
                return path.read_bytes()
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise SourceMissing(f"original {key!r} is not in the media store") from None

        return await asyncio.to_thread(load)

    async def write(self, key: str, data: bytes) -> None:
        path = self.path(key)

        def save() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.part")
            try:
                partial.write_bytes(data)
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)

        await asyncio.to_thread(save)

    async def delete(self, key: str) -> None:
        path = self.path(key)
        await asyncio.to_thread(path.unlink, True)


def store_for(settings: MediaSettings) -> MediaStore:
    if settings.media_storage == "local":
        return LocalStore(settings.media_root)
    from tq_services.media.s3 import S3Store

    if not (settings.media_s3_endpoint and settings.media_s3_bucket):
        raise NonRetryableError("media_storage is s3 but TQ_MEDIA_S3_ENDPOINT or TQ_MEDIA_S3_BUCKET is unset")
    secret = settings.media_s3_secret_access_key
    return S3Store(
        settings.media_s3_endpoint,
        settings.media_s3_bucket,
        region=settings.media_s3_region,
        access_key=settings.media_s3_access_key_id or "",
        secret_key=secret.get_secret_value() if secret else "",
        timeout_s=settings.media_s3_timeout_s,
    )
