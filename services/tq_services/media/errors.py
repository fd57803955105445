"""Why an image cannot be optimized: each dead-letters at once with its reason (retrying would
read the same bytes again)."""

from __future__ import annotations

from tq.errors import NonRetryableError


class MediaNotFound(NonRetryableError):
    """No File row has the job's media id."""


class SourceMissing(NonRetryableError):
    """The original is not in the media store (or its key leaves the store)."""


class NotAnImage(NonRetryableError):
    """The original is not an image format Pillow can read."""


class CorruptImage(NonRetryableError):
    """The original is truncated or damaged: decoding it fails part way."""


class DecompressionBomb(NonRetryableError):
    """The original claims more pixels than ``media_max_pixels`` (or is larger than
    ``media_max_source_bytes``): decoding it could exhaust memory."""


class UnsupportedFormat(NonRetryableError):
    """A requested output format this Pillow build cannot write."""
