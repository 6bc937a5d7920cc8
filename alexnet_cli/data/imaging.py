"""Any image file -> the paper's 256x256 RGB crop (section 2), without torch.

Section 2: "given a rectangular image, we first rescaled the image such that the shorter side
was of length 256, and then cropped out the central 256x256 patch". prep, predict and the demo
all call `load_256`, so a file gets the same pixels whichever command reads it.

Speed (prep runs this 1.28 million times), each step checked against the plain Pillow path:
- Baseline JPEGs (RGB or grayscale, no EXIF rotation) are decoded by simplejpeg; it wraps the
  same libjpeg-turbo as Pillow and gives bit-identical pixels, without Pillow's RGBX
  round trip (25% less decode time). Everything else (PNG, CMYK, rotated, 16-bit, damaged
  JPEGs that Pillow still accepts) goes through Pillow.
- Images whose shorter side is at least 4x the target are decoded at 1/2, 1/4 or 1/8 scale in
  the DCT (libjpeg's scaled IDCT), never below 2x the target, so the antialiased resize still
  does the real reduction: -0.1 dB PSNR against a full decode (docs/format.md). Scaling right
  down to the target (Pillow's plain `draft`) costs 4 dB on those images, so we do not.
- Only the source box that maps onto the central crop is resampled, with an antialiased
  bilinear (triangle) filter whose support grows with the reduction factor, as Pillow's. The
  SIMD implementation of the `fast_image_resize` crate (cykooz-resizer) is 3-4x faster than
  Pillow's and within +-2 of it; where no wheel exists (Linux aarch64) Pillow's is used.
"""

from __future__ import annotations

import functools
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

try:
    import simplejpeg
except ImportError:  # a GPU machine decoding with --decode gpu may lack it: Pillow, same pixels
    simplejpeg = None

try:
    import cykooz_resizer as _fir
except ImportError:  # no wheel for this platform: Pillow's resize, same filter
    _fir = None

IMAGE_SIZE = 256  # section 2: every image becomes its central 256x256 patch
RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking (the support widens)
RESAMPLE_NAME = (
    "antialiased bilinear (fast_image_resize convolution)" if _fir else "antialiased bilinear (PIL)"
)
DCT_MIN_FACTOR = 2  # decode at reduced DCT scale only down to this multiple of the target side
_EXIF_ORIENTATION = 0x0112


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow can decode (zero bytes, truncated, not an image...).
    `reason` is the short cause alone, for skip lists."""

    def __init__(self, name: str, reason: str | None = None):
        super().__init__(name if reason is None else f"{name}: {reason}")
        self.reason = name if reason is None else reason


def center_box(
    width: int, height: int, size: int = IMAGE_SIZE
) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """Resized (w, h) with the shorter side `size`, and the source box that maps onto the
    central size x size patch of it (so only that box needs resampling)."""
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return (new_w, new_h), box


def dct_scale(width: int, height: int, size: int = IMAGE_SIZE) -> int:
    """The JPEG DCT reduction (1, 2, 4 or 8) that keeps the shorter side >= DCT_MIN_FACTOR * size."""
    for scale in (8, 4, 2):
        if min(width, height) // scale >= DCT_MIN_FACTOR * size:
            return scale
    return 1


def to_rgb(im: Image.Image) -> Image.Image:
    """RGB whatever the mode: grayscale, palette, CMYK, 16-bit, with or without alpha.
    Transparent pixels become white, the usual background of web images."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if arr.max() > 255 else 255.0
        return Image.fromarray((arr * (255.0 / peak)).round().clip(0, 255).astype(np.uint8)).convert("RGB")
    if im.mode == "P" and "transparency" in im.info or im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def resize_box(
    pixels: np.ndarray, box: tuple[float, float, float, float], size: int = IMAGE_SIZE
) -> np.ndarray:
    """Resample `box` (left, top, right, bottom) of an HxWx3 uint8 image to size x size."""
    h, w = pixels.shape[:2]
    left, top, right, bottom = box
    if _fir is None:
        return np.asarray(Image.fromarray(pixels).resize((size, size), RESAMPLE, box=box))
    src = _fir.ImageData(w, h, _fir.PixelType.U8x3, np.ascontiguousarray(pixels).tobytes())
    dst = _fir.ImageData(size, size, _fir.PixelType.U8x3)
    # the box is exact in real arithmetic; clamp float round-off so it stays inside the image
    crop = _fir.CropBox(left, top, min(right, w) - left, min(bottom, h) - top)
    _resizer().resize(
        src, dst, _fir.ResizeOptions(_fir.ResizeAlg.convolution(_fir.FilterType.bilinear), crop_box=crop)
    )
    return np.frombuffer(bytearray(dst.get_buffer()), np.uint8).reshape(size, size, 3)


@functools.lru_cache(maxsize=1)
def _resizer():
    return _fir.Resizer()


def decode_rgb(im: Image.Image, data: bytes | None, size: int = IMAGE_SIZE) -> np.ndarray:
    """An opened (not yet loaded) image -> upright HxWx3 uint8 RGB, DCT-reduced when large.

    `data`: the file's bytes when at hand, for the simplejpeg fast path."""
    scale = dct_scale(*im.size, size=size) if im.format == "JPEG" else 1
    if data is not None and simplejpeg is not None and _is_plain_jpeg(im):
        w, h = im.size
        try:
            return simplejpeg.decode_jpeg(data, "RGB", min_height=-(-h // scale), min_width=-(-w // scale))
        except ValueError:
            pass  # libjpeg warned (e.g. extraneous bytes): Pillow decides, as for every other file
    if scale > 1:
        im.draft(im.mode, (im.size[0] // scale, im.size[1] // scale))
    return np.asarray(to_rgb(ImageOps.exif_transpose(im)))


def _is_plain_jpeg(im: Image.Image) -> bool:
    """A JPEG simplejpeg decodes to the same pixels as Pillow: YCbCr/gray, upright."""
    return im.format == "JPEG" and im.mode in ("RGB", "L") and im.getexif().get(_EXIF_ORIENTATION, 1) == 1


def load_256(source: str | os.PathLike | bytes, size: int = IMAGE_SIZE) -> np.ndarray:
    """Read a file (or its bytes) and return its size x size x 3 uint8 crop."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            pixels = decode_rgb(im, data, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ImageDecodeError(name, describe_decode_error(e)) from None
    _, box = center_box(pixels.shape[1], pixels.shape[0], size=size)
    return resize_box(pixels, box, size)


def describe_decode_error(e: BaseException) -> str:
    """A short reason for a skip list: 'truncated', 'not an image', ..."""
    text = str(e)
    if isinstance(e, Image.DecompressionBombError):
        return f"too many pixels (Pillow's decompression-bomb limit): {text}"
    if "truncated" in text or "broken data stream" in text or "image file is truncated" in text:
        return "truncated image"
    if "cannot identify image file" in text:
        return "not an image (or an unsupported format)"
    return text or type(e).__name__
