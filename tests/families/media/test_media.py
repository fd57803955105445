"""The media family through the real engine (the suite's Redis; SQLite and PostgreSQL; Pillow on
images made here; a media store in a temporary directory).

optimize-image applies the EXIF orientation to the pixels, strips metadata (EXIF, XMP, comments),
renders every width in WebP and the original's format without upscaling, and lists the variants
on the File row; re-running replaces them atomically (new files, rows swapped in one transaction,
old files deleted) and a failing re-run keeps the old ones. A decompression bomb (by the pixel
limit or Pillow's own), a truncated file, a non-image, a missing original and a missing File row
dead-letter at once with the reason, which the File row keeps too.
"""

from __future__ import annotations

import io
import socket
import struct
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import tq_services.media.handlers  # noqa: F401  (registers the handler)
from PIL import Image
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from support import fast_settings, running, settled_job
from support.settings import clear_settings_caches
from tq import dlq, jobs
from tq.db import make_sessionmaker
from tq.envelope import JobState
from tq.handlers import default_handlers
from tq.producer import Producer
from tq.settings import Settings
from tq_services import load_handlers
from tq_services.media.errors import DecompressionBomb, SourceMissing
from tq_services.media.images import target_widths
from tq_services.media.models import File, FileVariant
from tq_services.media.s3 import EMPTY_SHA256, S3Store, sign_v4
from tq_services.media.settings import get_media_settings
from tq_services.media.store import LocalStore, store_for
from tq_services.store import dispose_engines

MQ = "media:optimize"
RED, BLUE = (220, 20, 20), (20, 20, 220)
ORIENTATION, MAKE, MODEL = 0x0112, 0x010F, 0x0110


@pytest.fixture
async def env(
    database_url: str, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Settings]:
    monkeypatch.setenv("TQ_MEDIA_ROOT", str(tmp_path / "media"))
    monkeypatch.setenv("TQ_MEDIA_MAX_PIXELS", "20000000")
    clear_settings_caches()
    yield fast_settings(redis_url, database_url=database_url)
    clear_settings_caches()
    await dispose_engines()


def _root(settings: Settings) -> Path:
    return Path(get_media_settings().media_root)


def _photo() -> bytes:
    """A 400x200 JPEG as a camera stores it: red left half, blue right half, EXIF orientation 6
    (display rotated 90 degrees clockwise: 200x400, red on top), camera make and model, XMP and a
    comment."""
    image = Image.new("RGB", (400, 200), BLUE)
    image.paste(RED, (0, 0, 200, 200))
    exif = Image.Exif()
    exif[ORIENTATION], exif[MAKE], exif[MODEL] = 6, "TestCam", "SecretModel 9"
    out = io.BytesIO()
    xmp = b'<x:xmpmeta xmlns:x="adobe:ns:meta/">TestCamXmp</x:xmpmeta>'
    image.save(out, "JPEG", quality=95, exif=exif.tobytes(), comment=b"TestCamComment", xmp=xmp)
    return out.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG header claiming ``width`` x ``height`` pixels over a few bytes of data: the
    shape of a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


async def _file(engine: AsyncEngine, root: Path, key: str, data: bytes | None) -> int:
    if data is not None:
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    async with make_sessionmaker(engine)() as session, session.begin():
        row = File(path=key)
        session.add(row)
    return row.id


async def _run(client: Any, settings: Settings, *payloads: dict[str, Any]) -> list[jobs.JobRecord]:
    p = Producer(client, settings)
    ids = [await p.enqueue(MQ, "optimize-image", payload) for payload in payloads]

    async with running(client, settings, default_handlers, MQ):
        return [await settled_job(client, MQ, job_id, timeout=60) for job_id in ids]


async def _row(engine: AsyncEngine, file_id: int) -> tuple[File, list[FileVariant]]:
    async with make_sessionmaker(engine)() as session:
        row = await session.get(File, file_id)
        assert row is not None
        variants = await session.scalars(
            select(FileVariant)
            .where(FileVariant.file_id == file_id)
            .order_by(FileVariant.width, FileVariant.format)
        )
        return row, list(variants)


def _near(pixel: Any, colour: tuple[int, int, int]) -> bool:
    return all(abs(int(a) - b) < 40 for a, b in zip(pixel[:3], colour, strict=True))


# ---- without the engine -------------------------------------------------------------------------
def test_target_widths_never_upscale() -> None:
    assert target_widths([1280, 320, 768], 1000) == [320, 768, 1000]
    assert target_widths([320, 768], 200) == [200]


async def test_local_store_refuses_keys_outside_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "media")
    await store.write("a/b.txt", b"x")
    assert await store.read("a/b.txt", 10) == b"x"
    for key in ("../escape.txt", "/etc/passwd", "a/../../escape.txt"):
        with pytest.raises(SourceMissing, match="not inside the media store"):
            await store.read(key, 10)
    assert not (tmp_path / "escape.txt").exists()


def test_load_handlers_finds_the_media_family() -> None:
    assert "tq_services.media.handlers" in load_handlers(["media"])
    assert (MQ, "optimize-image") in default_handlers


# ---- through the engine -------------------------------------------------------------------------
async def test_orientation_applied_metadata_stripped_no_upscaling(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    root = _root(env)
    original = _photo()
    with Image.open(io.BytesIO(original)) as check:  # the test image really carries it all
        assert check.getexif()[ORIENTATION] == 6 and check.info["comment"] == b"TestCamComment"
        assert b"TestCamXmp" in original and b"SecretModel 9" in original
    file_id = await _file(db_engine, root, "uploads/photo.jpg", original)
    [rec] = await _run(
        redis_client, env, {"media_id": file_id, "source": "uploads/photo.jpg", "widths": [100, 150, 320]}
    )
    assert rec.state is JobState.COMPLETED, rec
    assert rec.result["variants"] == 6 and rec.result["width"] == 200 and rec.result["height"] == 400
    assert (rec.progress, rec.progress_message) == (1.0, "6 variants committed")  # ctx.progress

    row, variants = await _row(db_engine, file_id)
    assert (row.status, row.width, row.height, row.format, row.bytes) == (
        "optimized",
        200,
        400,
        "jpeg",
        len(original),
    )
    assert row.content_type == "image/jpeg" and row.error is None and row.job_id == rec.id
    # 320 would upscale: it becomes the original width, 200
    assert [(v.width, v.height, v.format) for v in variants] == [
        (100, 200, "jpeg"),
        (100, 200, "webp"),
        (150, 300, "jpeg"),
        (150, 300, "webp"),
        (200, 400, "jpeg"),
        (200, 400, "webp"),
    ]
    for v in variants:
        data = (root / v.path).read_bytes()
        assert v.bytes == len(data) and v.path.startswith(f"variants/{file_id}/")
        for secret in (b"TestCam", b"SecretModel", b"xmpmeta", b"Exif\0\0"):
            assert secret not in data, (v, secret)
        with Image.open(io.BytesIO(data)) as image:
            assert image.format == v.format.upper() and image.size == (v.width, v.height)
            assert len(image.getexif()) == 0 and not {"exif", "xmp", "comment"} & set(image.info)
            rgb = image.convert("RGB")
            # rotated: the stored left half (red) is on top, the right half (blue) below
            assert _near(rgb.getpixel((v.width // 2, v.height // 8)), RED), v
            assert _near(rgb.getpixel((v.width // 2, v.height * 7 // 8)), BLUE), v


async def test_rerun_replaces_variants_and_a_failed_rerun_keeps_them(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    root = _root(env)
    image = Image.new("RGBA", (300, 150), (0, 128, 0, 128))  # a PNG with alpha
    buf = io.BytesIO()
    image.save(buf, "PNG")
    file_id = await _file(db_engine, root, "uploads/logo.png", buf.getvalue())

    payload = {"media_id": file_id, "source": "uploads/logo.png", "widths": [64], "formats": ["webp"]}
    [first] = await _run(redis_client, env, payload)
    assert first.state is JobState.COMPLETED, first
    _, before = await _row(db_engine, file_id)
    assert [(v.width, v.format) for v in before] == [(64, "png"), (64, "webp")]  # WebP + the original's
    with Image.open(root / before[0].path) as png:
        assert png.mode == "RGBA" and png.getpixel((5, 5))[3] == 128  # transparency kept

    payload = {"media_id": file_id, "source": "uploads/logo.png", "widths": [32, 48], "formats": ["jpeg"]}
    [second] = await _run(redis_client, env, payload)
    assert (
        second.state is JobState.COMPLETED
        and second.result["replaced"] == 2
        and second.result["variants"] == 4
    ), second
    row, after = await _row(db_engine, file_id)
    assert [(v.width, v.height, v.format) for v in after] == [
        (32, 16, "jpeg"),
        (32, 16, "png"),  # the original's format, always
        (48, 24, "jpeg"),
        (48, 24, "png"),
    ]
    assert all((root / v.path).is_file() for v in after)
    assert not any((root / v.path).exists() for v in before)  # old files deleted after the swap
    assert not {v.path for v in before} & {v.path for v in after}  # written beside, never over

    (root / "uploads/logo.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # truncated
    [third] = await _run(redis_client, env, payload)
    assert third.state is JobState.DEAD and third.attempts == 1, third
    row, kept = await _row(db_engine, file_id)
    assert [v.id for v in kept] == [v.id for v in after]  # a failed re-run keeps the variants
    assert all((root / v.path).is_file() for v in kept)
    assert row.status == "failed" and row.error is not None and "truncated" in row.error
    leftovers = {p.relative_to(root).as_posix() for p in (root / "variants").rglob("*") if p.is_file()}
    assert leftovers == {v.path for v in kept}


async def test_bad_inputs_dead_letter_at_once_with_the_reason(
    env: Settings, redis_client: Any, db_engine: AsyncEngine
) -> None:
    root = _root(env)
    truncated = _photo()[:1500]
    cases = {
        "bomb-by-limit": (
            _png_header_only(6000, 6000),
            "DecompressionBomb",
            "36000000 pixels; the limit is 20000000",
        ),
        "bomb-by-pillow": (_png_header_only(40000, 40000), "DecompressionBomb", "decompression bomb"),
        "truncated": (truncated, "CorruptImage", "truncated"),
        "not-an-image": (b"%PDF-1.7 certainly not an image\n" * 20, "NotAnImage", "not an image"),
        "missing": (None, "SourceMissing", "is not in the media store"),
    }
    ids = {
        name: await _file(db_engine, root, f"uploads/{name}.bin", data) for name, (data, *_) in cases.items()
    }
    payloads = [{"media_id": ids[name], "source": f"uploads/{name}.bin"} for name in cases]
    records = await _run(redis_client, env, *payloads, {"media_id": 987654, "source": "uploads/x.jpg"})
    letters = {letter.job_id: letter for letter in (await dlq.list_dead(redis_client, MQ)).items}
    for (name, (_, error_type, reason)), rec in zip(cases.items(), records, strict=False):
        assert rec.state is JobState.DEAD and rec.attempts == 1, (name, rec)
        letter = letters[rec.id]
        assert letter.error_type == error_type and reason in letter.error.lower(), (name, letter.error)
        row, variants = await _row(db_engine, ids[name])
        assert (row.status, row.error, variants) == ("failed", letter.error, []), name
    unknown = records[-1]
    assert unknown.state is JobState.DEAD and letters[unknown.id].error_type == "MediaNotFound"
    assert letters[unknown.id].error == "file 987654 does not exist"
    assert not (root / "variants").exists()  # nothing was written for any of them


# ---- S3-compatible storage ----------------------------------------------------------------------
def test_sigv4_matches_the_aws_documented_example() -> None:
    """AWS's worked example of a signed S3 GET (Signature Version 4 documentation, "GET Object")."""
    headers = {
        "range": "bytes=0-9",
        "x-amz-content-sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "x-amz-date": "20130524T000000Z",
    }
    authorization = sign_v4(
        "GET",
        httpx.URL("https://examplebucket.s3.amazonaws.com/test.txt"),
        headers,
        access_key="AKIAIOSFODNN7EXAMPLE",
        secret_key="wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
        region="us-east-1",
        amz_date="20130524T000000Z",
    )
    assert authorization == (
        "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
        "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
    )


@pytest.fixture
def s3_endpoint() -> Iterator[str]:
    """A local S3 server (moto's, speaking the S3 REST protocol) on a free port."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


async def test_optimize_image_on_s3_compatible_storage(
    database_url: str,
    redis_url: str,
    redis_client: Any,
    db_engine: AsyncEngine,
    s3_endpoint: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "TQ_MEDIA_STORAGE": "s3",
        "TQ_MEDIA_S3_ENDPOINT": s3_endpoint,
        "TQ_MEDIA_S3_BUCKET": "tq-media",
        "TQ_MEDIA_S3_ACCESS_KEY_ID": "test-key",
        "TQ_MEDIA_S3_SECRET_ACCESS_KEY": "test-secret",
    }.items():
        monkeypatch.setenv(name, value)
    clear_settings_caches()
    settings = fast_settings(redis_url, database_url=database_url)
    store = store_for(get_media_settings())
    assert isinstance(store, S3Store)
    try:
        bucket = httpx.URL(f"{s3_endpoint}/tq-media")
        async with httpx.AsyncClient() as client:  # CreateBucket
            r = await client.put(bucket, headers=store._headers("PUT", bucket, EMPTY_SHA256, {}))
            assert r.status_code == 200, r.text
        original = _photo()
        await store.write("uploads/photo.jpg", original)
        assert await store.read("uploads/photo.jpg", 10_000_000) == original
        with pytest.raises(DecompressionBomb):
            await store.read("uploads/photo.jpg", 100)
        file_id = await _file(db_engine, Path("."), "uploads/photo.jpg", None)
        gone_id = await _file(db_engine, Path("."), "uploads/none.jpg", None)
        first, missing = await _run(
            redis_client,
            settings,
            {"media_id": file_id, "source": "uploads/photo.jpg", "widths": [50, 100], "formats": ["webp"]},
            {"media_id": gone_id, "source": "uploads/none.jpg"},
        )
        assert first.state is JobState.COMPLETED and first.result["variants"] == 4, first
        _, before = await _row(db_engine, file_id)
        for v in before:
            with Image.open(io.BytesIO(await store.read(v.path, 10_000_000))) as image:
                assert image.size == (v.width, v.height) and len(image.getexif()) == 0
        [second] = await _run(
            redis_client, settings, {"media_id": file_id, "source": "uploads/photo.jpg", "widths": [80]}
        )
        assert second.state is JobState.COMPLETED and second.result["replaced"] == 4, second
        for v in before:  # the old objects were deleted after the swap
            with pytest.raises(SourceMissing):
                await store.read(v.path, 10_000_000)
        _, after = await _row(db_engine, file_id)
        assert [(v.width, v.height, v.format) for v in after] == [(80, 160, "jpeg"), (80, 160, "webp")]
        assert missing.state is JobState.DEAD
        [letter] = (await dlq.list_dead(redis_client, MQ)).items
        assert letter.error_type == "SourceMissing" and "not in the object store" in letter.error
    finally:
        clear_settings_caches()
        await dispose_engines()
