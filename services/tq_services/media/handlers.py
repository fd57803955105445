"""Handler of the media family, registered on the process-wide ``tq.handlers.default_handlers``.

optimize-image loads the original (``payload.source``, a key in the media store) of File
``media_id``, applies its EXIF orientation, strips its metadata and writes one variant per width
and format (the payload's formats, default WebP and JPEG, plus always the original's own format),
never upscaling. Replacing the variants of an earlier run is atomic: the new files are written under a
fresh prefix, the rows are swapped in one transaction, and only then are the old files deleted.

A missing File row or original, a non-image, a truncated or damaged image and a decompression
bomb dead-letter at once with the reason, which is also kept on the File row (status ``failed``);
its earlier variants stay as they were.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

from sqlalchemy import delete, select
from tq.errors import NonRetryableError
from tq.handlers import JobContext, default_handlers
from tq.models import utcnow
from tq.payloads import OptimizeImage
from tq.settings import get_settings

from tq_services.media.errors import MediaNotFound
from tq_services.media.images import EXTENSIONS, optimize
from tq_services.media.models import File, FileStatus, FileVariant
from tq_services.media.settings import get_media_settings
from tq_services.media.store import store_for
from tq_services.store import sessions

log = logging.getLogger("tq.media")

MEDIA_QUEUE = "media:optimize"
CONTENT_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "avif": "image/avif"}


@default_handlers.register(MEDIA_QUEUE, "optimize-image")
async def optimize_image(ctx: JobContext, payload: OptimizeImage) -> dict[str, Any]:
    settings = get_settings()
    media = get_media_settings()
    started = time.perf_counter()
    store = store_for(media)
    make_session = sessions(settings.database_url)
    async with make_session() as session, session.begin():
        if await session.get(File, payload.media_id) is None:
            raise MediaNotFound(f"file {payload.media_id} does not exist")
    try:
        original = await store.read(payload.source, media.media_max_source_bytes)
        await ctx.progress(0.1, f"source read ({len(original)} bytes): encoding variants")
        result = await asyncio.to_thread(
            optimize,
            original,
            list(payload.widths),
            list(payload.formats),
            quality=media.media_quality,
            max_pixels=media.media_max_pixels,
        )
    except NonRetryableError as exc:
        async with make_session() as session, session.begin():
            row = await session.get(File, payload.media_id)
            if row is not None:
                row.status, row.error, row.job_id = FileStatus.FAILED.value, str(exc)[:2000], ctx.job_id
        log.warning("media %s (%s) not optimized: %s", payload.media_id, payload.source, exc)
        raise

    prefix = f"variants/{payload.media_id}/{uuid.uuid4().hex[:12]}"
    written: list[FileVariant] = []
    try:
        count = len(result.variants)
        await ctx.progress(0.5, f"{count} variants encoded: storing")
        for done, variant in enumerate(result.variants, 1):
            key = f"{prefix}/{variant.width}.{EXTENSIONS[variant.format]}"
            await store.write(key, variant.data)
            await ctx.progress(0.5 + 0.45 * done / count, f"stored variant {done} of {count}: {key}")
            written.append(
                FileVariant(
                    path=key,
                    width=variant.width,
                    height=variant.height,
                    bytes=len(variant.data),
                    format=variant.format,
                )
            )
        async with make_session() as session, session.begin():
            row = await session.get(File, payload.media_id, with_for_update=True)
            if row is None:
                raise MediaNotFound(f"file {payload.media_id} was deleted while it was being optimized")
            old_paths = list(
                await session.scalars(select(FileVariant.path).where(FileVariant.file_id == payload.media_id))
            )
            await session.execute(delete(FileVariant).where(FileVariant.file_id == payload.media_id))
            for variant_row in written:
                variant_row.file_id = payload.media_id
                session.add(variant_row)
            row.path = payload.source
            row.content_type = CONTENT_TYPES[result.format]
            row.bytes = len(original)
            row.width, row.height, row.format = result.width, result.height, result.format
            row.status, row.error, row.job_id = FileStatus.OPTIMIZED.value, None, ctx.job_id
            row.optimized_at = utcnow()
    except BaseException:
        for variant_row in written:  # the rows never committed: their files must go too
            try:
                await store.delete(variant_row.path)
            except Exception as cleanup:  # the job's own error is the one to report
                log.warning(
                    "media %s: new variant %s not removed: %s", payload.media_id, variant_row.path, cleanup
                )
        raise
    for path in old_paths:  # committed: the old files are unreferenced now
        try:
            await store.delete(path)
        except Exception as exc:  # a leftover file is harmless; the job's effects are committed
            log.warning("media %s: old variant %s not deleted: %s", payload.media_id, path, exc)
    await ctx.progress(1.0, f"{len(written)} variants committed")
    elapsed_ms = (time.perf_counter() - started) * 1000
    bytes_out = sum(v.bytes for v in written)
    log.info(
        "media %s optimized: %dx%d %s, %d variants, %d -> %d bytes in %.0f ms",
        payload.media_id,
        result.width,
        result.height,
        result.format,
        len(written),
        len(original),
        bytes_out,
        elapsed_ms,
    )
    return {
        "media_id": payload.media_id,
        "width": result.width,
        "height": result.height,
        "format": result.format,
        "variants": len(written),
        "bytes_in": len(original),
        "bytes_out": bytes_out,
        "replaced": len(old_paths),
        "ms": round(elapsed_ms, 1),
    }
