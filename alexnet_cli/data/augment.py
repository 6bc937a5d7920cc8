"""Section 4.1's data augmentation, split between the loader and the training device.

* Per image, a random 224x224 patch of the stored 256x256 image and a coin-flip horizontal
  reflection ("translations and horizontal reflections"), and three PCA-lighting coefficients
  alpha_i ~ N(0, 0.1) ("drawn only once for all the pixels of a particular training image
  until that image is used for training again").
* Every draw is a pure function of (seed, epoch, image index): the same image in the same
  epoch gets the same patch, whatever the worker count, batch size, rank or resume point.
* The loader cuts and reflects the uint8 patch (`crop_flip`, a copy of a few rows); the
  device does the float work on whole batches (`train_input`): subtract the mean image,
  cropped and reflected like each patch, then add the lighting offset. Subtracting the
  cropped mean equals section 2's "subtract the mean at 256x256, then crop" that
  transforms.normalize does for evaluation, so train and eval see the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alexnet_cli.data.format import IMAGE_SIZE
from alexnet_cli.data.transforms import CROP, center_crop, normalize, pixel_mean_std

LIGHTING_STD = 0.1  # section 4.1: alpha_i ~ N(0, 0.1)
# Streams of the run's seed, so that no two kinds of randomness share numbers.
AUGMENT_STREAM = 1


@dataclass(frozen=True)
class ImageDraw:
    """One image's augmentation for one use."""

    top: int
    left: int
    flip: bool
    alpha: tuple[float, float, float]


def draw(seed: int, epoch: int, index: int, lighting_std: float = LIGHTING_STD,
         size: int = IMAGE_SIZE, crop: int = CROP) -> ImageDraw:
    """The patch, reflection and lighting coefficients of image `index` in `epoch`."""
    rng = np.random.default_rng((AUGMENT_STREAM, seed, epoch, index))
    top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    flip = bool(rng.random() < 0.5)
    alpha = tuple(float(a) for a in rng.normal(0.0, lighting_std, size=3))
    return ImageDraw(top, left, flip, alpha)


def crop_flip(image: torch.Tensor, top: int, left: int, flip: bool, crop: int = CROP) -> torch.Tensor:
    """A [3, H, W] image's crop x crop patch at (top, left), mirrored left-right if `flip`."""
    patch = image[:, top : top + crop, left : left + crop]
    return patch.flip(-1) if flip else patch


def pca_from_stats(eigenvalues, eigenvectors) -> dict[str, Any]:
    """The checkpoint's `pca` entry from prep's statistics (for pixels scaled to [0, 1])."""
    return {
        "eigenvalues": [float(v) for v in np.asarray(eigenvalues).reshape(3)],
        "eigenvectors": np.asarray(eigenvectors, dtype=np.float64).reshape(3, 3).tolist(),
    }


def lighting_offsets(alpha: torch.Tensor, pca: dict[str, Any]) -> torch.Tensor:
    """Section 4.1: [p1, p2, p3][alpha1 lambda1, alpha2 lambda2, alpha3 lambda3]^T per image.

    alpha: [N, 3]. Returns [N, 3] RGB offsets in pixel units (0..255): prep's eigenvalues
    and eigenvectors describe pixels scaled to [0, 1], hence the factor 255.
    """
    values = torch.as_tensor(pca["eigenvalues"], dtype=alpha.dtype, device=alpha.device)
    vectors = torch.as_tensor(pca["eigenvectors"], dtype=alpha.dtype, device=alpha.device)
    return 255.0 * (alpha * values) @ vectors.T  # columns of `vectors` are the components


def crop_mean(mean_image: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              crop: int = CROP) -> torch.Tensor:
    """The [3, S, S] mean image cut and reflected like each patch: [N, 3, crop, crop].

    One gather for the whole batch: a strided view holds every crop of the image and of its
    mirror (a reflected patch at `left` is the mirror's patch at S - crop - left).
    """
    both = torch.stack([mean_image, mean_image.flip(-1)])
    span = mean_image.shape[-1] - crop + 1
    s = both.stride()
    crops = both.as_strided((2, span, span, 3, crop, crop), (s[0], s[2], s[3], s[1], s[2], s[3]))
    device = mean_image.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    return crops[flip.long(), top, torch.where(flip, span - 1 - left, left)]


def train_input(batch: dict[str, torch.Tensor], preprocess: dict[str, Any], pca: dict[str, Any],
                device: torch.device | str, dtype: torch.dtype = torch.float32,
                memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """A loader batch of uint8 patches -> network input: minus the mean, plus PCA lighting (then,
    for torchvision's "mean_std" preprocessing, divided by its std, like the pixels at eval)."""
    images = batch["images"].to(device, non_blocking=True)
    std = None
    if preprocess["kind"] == "mean_image":
        mean = preprocess["mean_image"].to(images.device, dtype)
    else:  # a per-channel mean is a constant mean image
        channel_mean, std = pixel_mean_std(preprocess, images.device, dtype)
        mean = channel_mean[0].expand(3, IMAGE_SIZE, IMAGE_SIZE)
    offsets = lighting_offsets(batch["alpha"].to(images.device, torch.float32), pca).to(dtype)
    centre = centred_patches_per_image if images.device.type == "cpu" else centred_patches
    x = centre(images, mean, batch["top"], batch["left"], batch["flip"], offsets, dtype)
    if std is not None:
        x /= std
    return x.contiguous(memory_format=memory_format)


def centred_patches(images: torch.Tensor, mean: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                    flip: torch.Tensor, offsets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """images - (the mean cut like each patch) + offsets, for the whole batch at once (GPU)."""
    x = images.to(dtype)
    x -= crop_mean(mean, top, left, flip, images.shape[-1])
    x += offsets[:, :, None, None]
    return x


def centred_patches_per_image(images: torch.Tensor, mean: torch.Tensor, top: torch.Tensor, left: torch.Tensor,
                              flip: torch.Tensor, offsets: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The same, image by image, for a CPU device: each float patch stays in cache while it is
    converted, centred and lit, which takes 3-5x less CPU time than three passes over the batch
    (and than the gather); on a GPU the per-image kernel launches would cost more."""
    crop = images.shape[-1]
    span = mean.shape[-1] - crop
    mirrored = mean.flip(-1)  # a reflected patch at `left` is the mirror's patch at span - left
    x = torch.empty(images.shape, dtype=dtype, device=images.device)
    for n, (t, l, f) in enumerate(zip(top.tolist(), left.tolist(), flip.tolist())):
        source, l = (mirrored, span - l) if f else (mean, l)
        x[n].copy_(images[n]).sub_(source[:, t : t + crop, l : l + crop]).add_(offsets[n].view(3, 1, 1))
    return x


def val_input(batch: dict[str, torch.Tensor], preprocess: dict[str, Any], device: torch.device | str,
              dtype: torch.dtype = torch.float32,
              memory_format: torch.memory_format = torch.contiguous_format) -> torch.Tensor:
    """Whole stored images -> the center crop, exactly as `alexnet eval` prepares them."""
    x = center_crop(normalize(batch["images"].to(device, non_blocking=True), preprocess, dtype))
    return x.contiguous(memory_format=memory_format)
