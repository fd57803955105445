"""The Pillow work of optimize-image, synchronous (the handler runs it in a thread).

The original's EXIF orientation is applied to the pixels, then every variant is encoded from
those pixels with no metadata (no EXIF, XMP, comments; the ICC colour profile is kept, since it
is colour, not metadata). Widths above the original's collapse to the original width: an image
is never upscaled.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

from PIL import Image, ImageOps, UnidentifiedImageError, features

from tq_services.media.errors import CorruptImage, DecompressionBomb, NotAnImage, UnsupportedFormat

# Pillow's format name -> ours; other readable formats (GIF, BMP, TIFF, ...) keep a lossless PNG.
ORIGINAL_FORMATS = {"JPEG": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif", "MPO": "jpeg"}
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "avif": "avif"}
_PILLOW_NAMES = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP", "avif": "AVIF"}


@dataclass(frozen=True)
class Rendered:
    width: int
    height: int
    format: str
    data: bytes


@dataclass(frozen=True)
class Optimized:
    width: int  # of the original, orientation applied
    height: int
    format: str  # the original's format, ours (jpeg, png, ...)
    variants: list[Rendered]


def original_format(pillow_format: str | None) -> str:
    return ORIGINAL_FORMATS.get(pillow_format or "", "png")


def _open(data: bytes, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DecompressionBomb(f"decompression bomb refused: {exc}") from None
    except UnidentifiedImageError:
        raise NotAnImage(f"not an image Pillow can read ({len(data)} bytes)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"damaged image header: {type(exc).__name__}: {exc}") from None
    pixels = image.width * image.height
    if pixels > max_pixels:  # checked from the header, before a single pixel is decoded
        raise DecompressionBomb(
            f"image is {image.width}x{image.height} = {pixels} pixels; the limit is {max_pixels} "
            "(media_max_pixels): decompression bomb refused"
        )
    try:
        image.load()
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptImage(f"truncated or damaged image: {type(exc).__name__}: {exc}") from None
    return image


def _for_format(image: Image.Image, fmt: str) -> Image.Image:
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if fmt == "jpeg":
        if has_alpha:  # JPEG has no alpha: flatten onto white
            rgba = image.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            return flat
        return image if image.mode in ("RGB", "L") else image.convert("RGB")
    if image.mode in ("RGB", "RGBA", "L", "LA") and not (image.mode in ("RGB", "L") and has_alpha):
        return image
    return image.convert("RGBA" if has_alpha else "RGB")


def _encode(image: Image.Image, fmt: str, quality: int, icc: bytes | None) -> bytes:
    options: dict[str, Any] = {"quality": quality} if fmt in ("jpeg", "webp", "avif") else {"optimize": True}
    if fmt == "jpeg":
        options.update(optimize=True, progressive=True)
    if fmt == "webp":
        options["method"] = 4
    if icc:
        options["icc_profile"] = icc
    image.info = {}  # nothing of the original's metadata may ride along
    out = io.BytesIO()
    image.save(out, format=_PILLOW_NAMES[fmt], **options)
    return out.getvalue()


def check_formats(formats: list[str]) -> None:
    for fmt in formats:
        if fmt not in _PILLOW_NAMES or (fmt in ("webp", "avif") and not features.check(fmt)):
            raise UnsupportedFormat(f"this Pillow build cannot write {fmt}")


def target_widths(requested: list[int], original_width: int) -> list[int]:
    """The widths to render, ascending: each requested width, or the original's if smaller."""
    return sorted({min(w, original_width) for w in requested})


def optimize(
    data: bytes, widths: list[int], formats: list[str], *, quality: int, max_pixels: int
) -> Optimized:
    """Decode ``data`` and render every width in every format of ``formats`` and the original's."""
    with _open(data, max_pixels) as opened:
        fmt = original_format(opened.format)
        icc = opened.info.get("icc_profile")
        upright = ImageOps.exif_transpose(opened)
    out_formats = list(dict.fromkeys([*formats, fmt]))
    check_formats(out_formats)
    variants = []
    for width in target_widths(widths, upright.width):
        height = max(1, round(upright.height * width / upright.width))
        sized = (
            upright if width == upright.width else upright.resize((width, height), Image.Resampling.LANCZOS)
        )
        for out in out_formats:
            encoded = _encode(_for_format(sized.copy(), out), out, quality, icc)
            variants.append(Rendered(width, height, out, encoded))
    return Optimized(upright.width, upright.height, fmt, variants)
