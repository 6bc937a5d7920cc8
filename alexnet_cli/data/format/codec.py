"""A 256x256 RGB image <-> the bytes a shard stores: baseline JPEG 4:4:4 or raw uint8.

One decoder for every reader (training, evaluation, inspect): simplejpeg's libjpeg-turbo with
the accurate integer IDCT, which gives Pillow's pixels exactly, in HWC order, optionally
written straight into a caller's buffer (no allocation per image).
"""

from __future__ import annotations

import numpy as np

from alexnet_cli.config import JPEG_QUALITY
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.errors import InputError

try:
    import simplejpeg
except ImportError:  # training with --decode gpu needs no CPU decoder (a GPU machine may lack it)
    simplejpeg = None

CODECS = ("jpeg", "raw")
JPEG_SUBSAMPLING = "444"  # 4:4:4: see config.JPEG_QUALITY


def encode_image(pixels: np.ndarray, codec: str, quality: int = JPEG_QUALITY) -> np.ndarray:
    """One 256x256x3 uint8 image as the bytes a shard stores (a uint8 array)."""
    if codec == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1)
    if codec == "jpeg":
        data = _simplejpeg().encode_jpeg(
            np.ascontiguousarray(pixels), quality=quality, colorspace="RGB", colorsubsampling=JPEG_SUBSAMPLING
        )
        return np.frombuffer(data, np.uint8)
    raise ValueError(f"unknown codec {codec!r}")


def decode_image(data: np.ndarray, codec: str, out: np.ndarray | None = None) -> np.ndarray:
    """Inverse of encode_image: 256x256x3 uint8 (HWC), written into `out` when given."""
    if codec == "raw":
        pixels = data.reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
        if out is None:
            return pixels
        out[...] = pixels
        return out
    if codec == "jpeg":
        return (simplejpeg or _simplejpeg()).decode_jpeg(data, "RGB", buffer=out)
    raise ValueError(f"unknown codec {codec!r}")


def _simplejpeg():
    if simplejpeg is None:
        raise InputError("simplejpeg is not installed: pip install simplejpeg (or train with --decode gpu)")
    return simplejpeg
