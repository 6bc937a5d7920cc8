"""Pixel statistics (section 4.1): exact integer sums that merge in any order, and the mean
image and RGB PCA they give."""

from __future__ import annotations

from dataclasses import dataclass, field

import h5py
import numpy as np

from alexnet_cli.data.format.hdf5 import checked_array
from alexnet_cli.data.imaging import IMAGE_SIZE

_PAIRS = [(i, j) for i in range(3) for j in range(i, 3)]


@dataclass
class PixelSums:
    """n, sum x and sum x x^T over uint8 RGB pixels, plus the per-position sum (the mean image).

    Integer sums: all of ImageNet's 1.28M 256x256 crops give sum x x^T < 2^63, and integer
    addition is associative, so shards and workers merge exactly, in any order.
    """

    n: int = 0  # pixels
    images: int = 0
    sum: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    sumsq: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), np.int64))
    image_sum: np.ndarray = field(default_factory=lambda: np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.int64))

    def add_image(self, pixels: np.ndarray) -> None:
        """Add one 256x256x3 uint8 image."""
        self.add_images([pixels])

    def add_images(self, images: list[np.ndarray]) -> None:
        """Add 256x256x3 uint8 images (in one call: cheaper per image than `add_image`)."""
        for start in range(0, len(images), 257):
            # per-position sums of up to 257 images fit uint16 (257 * 255 < 2^16): a cheap
            # SIMD add per image, widened to int64 once per block; sum x follows from it
            block = np.zeros(self.image_sum.shape, np.uint16)
            for pixels in images[start : start + 257]:
                np.add(block, pixels, out=block)
                # channels x pixels in uint16: every product of two uint8 values fits
                # (255^2 < 2^16), so each entry of sum x x^T is one SIMD multiply and an exact
                # integer sum of contiguous rows (2x faster than an int64 matmul), in uint32:
                # one 256x256 crop sums to at most 65536 * 255^2 < 2^32 (25% cheaper than uint64)
                c = np.ascontiguousarray(pixels.reshape(-1, 3).T, dtype=np.uint16)
                for i, j in _PAIRS:
                    self.sumsq[i, j] += int(np.multiply(c[i], c[j]).sum(dtype=np.uint32))
                self.n += c.shape[1]
                self.images += 1
            self.image_sum += block
            self.sum += block.reshape(-1, 3).sum(0, dtype=np.int64)
        self.sumsq = np.triu(self.sumsq) + np.triu(self.sumsq, 1).T

    def merge(self, other: PixelSums) -> PixelSums:
        return PixelSums(
            self.n + other.n,
            self.images + other.images,
            self.sum + other.sum,
            self.sumsq + other.sumsq,
            self.image_sum + other.image_sum,
        )

    def mean_rgb(self) -> np.ndarray:
        """Per-channel mean in pixel units (0..255)."""
        return self.sum / max(self.n, 1)

    def mean_image(self) -> np.ndarray:
        return (self.image_sum / max(self.images, 1)).astype(np.float32)

    def covariance(self) -> np.ndarray:
        """3x3 covariance of pixels scaled to [0, 1]."""
        n = max(self.n, 1)
        mean = self.sum / n
        return (self.sumsq / n - np.outer(mean, mean)) / 255.0**2

    def pca(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending) and eigenvectors (columns = components) of the covariance."""
        values, vectors = np.linalg.eigh(self.covariance())
        order = np.argsort(values)[::-1]
        vectors = vectors[:, order]
        # eigh's signs are arbitrary: make each component's largest entry positive so the
        # stored file does not depend on LAPACK's whims.
        signs = np.sign(vectors[np.abs(vectors).argmax(0), range(3)])
        return values[order], vectors * signs


def write_sums(group: h5py.Group, sums: PixelSums) -> None:
    group.attrs["pixels"] = sums.n
    group.attrs["images"] = sums.images
    group.create_dataset("pixel_sum", data=sums.sum)
    group.create_dataset("pixel_sumsq", data=sums.sumsq)
    group.create_dataset("image_sum", data=sums.image_sum)


def read_sums(group: h5py.Group) -> PixelSums:
    return PixelSums(
        int(group.attrs["pixels"]),
        int(group.attrs["images"]),
        checked_array(group, "pixel_sum", (3,), np.int64),
        checked_array(group, "pixel_sumsq", (3, 3), np.int64),
        checked_array(group, "image_sum", (IMAGE_SIZE, IMAGE_SIZE, 3), np.int64),
    )


@dataclass
class Stats:
    mean_rgb: np.ndarray  # [3], pixel units 0..255
    mean_image: np.ndarray  # [256, 256, 3] float32, pixel units
    eigenvalues: np.ndarray  # [3], descending, of the [0,1]-scaled pixel covariance
    eigenvectors: np.ndarray  # [3, 3], columns = components
