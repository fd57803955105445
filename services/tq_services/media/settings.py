"""The media family's settings: optimize-image and its store (``TQ_MEDIA_*``)."""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import Field, PositiveFloat, PositiveInt, SecretStr
from tq.settings import TqSettings


class MediaSettings(TqSettings):
    media_storage: Literal["local", "s3"] = Field(
        "local",
        description="where originals and variants live: `local` (a directory) or `s3` (an S3-compatible "
        "bucket)",
    )
    media_root: str = Field("media", description="the directory of the local media store")
    media_s3_endpoint: str | None = Field(
        None, description="the S3-compatible endpoint (path-style: `ENDPOINT/BUCKET/KEY`)"
    )
    media_s3_bucket: str | None = Field(None, description="the bucket of originals and variants")
    media_s3_region: str = Field(
        "us-east-1", description="the region requests are signed for (AWS Signature Version 4)"
    )
    media_s3_access_key_id: str | None = Field(None, description="object store access key id")
    media_s3_secret_access_key: SecretStr | None = Field(
        None, description="object store secret key (from a Secret in a cluster)"
    )
    media_s3_timeout_s: PositiveFloat = Field(30.0, description="one object store request")
    media_max_pixels: PositiveInt = Field(
        40_000_000,
        description="images claiming more pixels are refused as decompression bombs (read from the "
        "header, before decoding)",
    )
    media_max_source_bytes: PositiveInt = Field(50_000_000, description="larger originals are refused")
    media_quality: int = Field(80, ge=1, le=100, description="lossy encoder quality (WebP, JPEG, AVIF)")


@lru_cache(maxsize=1)
def get_media_settings() -> MediaSettings:
    return MediaSettings()
