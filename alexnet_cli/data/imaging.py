"""Any image file -> the paper's 256x256 RGB crop (section 2), without torch.

Section 2: "given a rectangular image, we first rescaled the image such that the shorter side
was of length 256, and then cropped out the central 256x256 patch". prep, predict and the demo
all call `load_256`, so a file gets the same pixels whichever command reads it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

SIZE = 256
RESAMPLE = Image.Resampling.BILINEAR  # antialiased when shrinking (Pillow widens the kernel)
RESAMPLE_NAME = "PIL bilinear (antialiased)"


class ImageDecodeError(ValueError):
    """The bytes are not an image Pillow can decode (zero bytes, truncated, not an image...)."""


def center_box(width: int, height: int, size: int = SIZE) -> tuple[tuple[int, int], tuple[float, float, float, float]]:
    """Resized (w, h) with the shorter side `size`, and the source box that maps onto the
    central size x size patch of it (so only that box needs resampling)."""
    scale = size / min(width, height)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    left, top = (new_w - size) // 2, (new_h - size) // 2
    box = (left / scale, top / scale, (left + size) / scale, (top + size) / scale)
    return (new_w, new_h), box


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


def crop_256(im: Image.Image, size: int = SIZE) -> np.ndarray:
    """A decoded image -> size x size x 3 uint8: shorter side to `size`, central patch."""
    im = to_rgb(ImageOps.exif_transpose(im))
    _, box = center_box(*im.size, size=size)
    return np.asarray(im.resize((size, size), RESAMPLE, box=box))


def load_256(source: str | os.PathLike | bytes, size: int = SIZE) -> np.ndarray:
    """Read a file (or its bytes) and return its size x size x 3 uint8 crop."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else Path(source)
        with Image.open(fp) as im:
            im.load()
            return crop_256(im, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise
        raise ImageDecodeError(f"{name}: {describe_decode_error(e)}") from None


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
