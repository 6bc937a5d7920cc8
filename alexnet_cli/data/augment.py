"""Section 4.1's data augmentation, split between the loader and the training device.

* Per image, a random 224x224 patch of the stored 256x256 image and a coin-flip horizontal
  reflection ("translations and horizontal reflections"), and three PCA-lighting coefficients
  alpha_i ~ N(0, 0.1) ("drawn only once for all the pixels of a particular training image
  until that image is used for training again").
* Every draw is a pure function of (seed, epoch, image index): the same image in the same
  epoch gets the same patch, whatever the worker count, batch size, rank or resume point.
* `crop_flip=False` turns the first form off (section 4.1's "without this scheme" ablation):
  every patch is the center one, unreflected, as validation's; the lighting draws stay those
  of the augmented run, so the two runs differ in the translations and reflections alone.
* The loader cuts and reflects the uint8 patch (`crop_flip`, HWC, a copy of a few rows); the
  device does the float work on whole batches (`train_input`): subtract the mean image,
  cropped and reflected like each patch, then add the lighting offset. Subtracting the
  cropped mean equals section 2's "subtract the mean at 256x256, then crop" that
  transforms.network_input does for evaluation, so train and eval see the same pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from alexnet_cli import randomness
from alexnet_cli.config import LIGHTING_STD
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.data.transforms import CROP, channels_last_view, pixel_mean_std


@dataclass(frozen=True)
class ImageDraw:
    """One image's augmentation for one use."""

    top: int
    left: int
    flip: bool
    alpha: tuple[float, float, float]


def draw(
    seed: int,
    epoch: int,
    index: int,
    lighting_std: float = LIGHTING_STD,
    size: int = IMAGE_SIZE,
    crop: int = CROP,
    crop_flip: bool = True,
) -> ImageDraw:
    """The patch, reflection and lighting coefficients of image `index` in `epoch` (the center
    patch, unreflected, without `crop_flip`)."""
    rng = randomness.generator(randomness.AUGMENT, seed, epoch, index)
    top, left = (int(v) for v in rng.integers(0, size - crop + 1, size=2))
    flip = bool(rng.random() < 0.5)
    alpha = tuple(float(a) for a in rng.normal(0.0, lighting_std, size=3))
    if not crop_flip:
        top = left = (size - crop) // 2
        flip = False
    return ImageDraw(top, left, flip, alpha)


@dataclass(frozen=True)
class BatchDraws:
    """`draw` for every image of a batch, as arrays."""

    top: np.ndarray  # int64
    left: np.ndarray  # int64
    flip: np.ndarray  # bool
    alpha: np.ndarray  # float64 [n, 3]


def draws(
    seed: int,
    epoch: int,
    indices: np.ndarray,
    lighting_std: float = LIGHTING_STD,
    size: int = IMAGE_SIZE,
    crop: int = CROP,
    crop_flip: bool = True,
) -> BatchDraws:
    """`draw(seed, epoch, i, ..., crop_flip)` for every i of `indices`, value for value, from one
    randomness.GeneratorBatch instead of a generator per image (3.4 against 15 us an image)."""
    indices = np.asarray(indices, np.int64)
    n, span = len(indices), size - crop + 1
    keys = (seed, epoch)
    if randomness.GeneratorBatch.fits(randomness.AUGMENT, keys, indices):
        g = randomness.GeneratorBatch(randomness.AUGMENT, keys, indices)
        first = g.next_uint64()  # integers(0, span, size=2): the low, then the high 32 bits
        top, top_exact = _lemire(first & np.uint64(0xFFFFFFFF), span)
        left, left_exact = _lemire(first >> np.uint64(32), span)
        flip = g.next_uint64() < np.uint64(1 << 63)  # random() < 0.5: (u >> 11) * 2**-53 < 0.5
        alpha = np.array([one.normal(0.0, lighting_std, size=3) for one in g.generators()]).reshape(n, 3)
        numpy_itself = np.flatnonzero(~(top_exact & left_exact))
    else:
        top, left = np.zeros(n, np.int64), np.zeros(n, np.int64)
        flip, alpha = np.zeros(n, bool), np.zeros((n, 3))
        numpy_itself = np.arange(n)
    for k in numpy_itself:
        d = draw(seed, epoch, int(indices[k]), lighting_std, size, crop)
        top[k], left[k], flip[k], alpha[k] = d.top, d.left, d.flip, d.alpha
    if not crop_flip:
        top[:] = left[:] = (size - crop) // 2
        flip[:] = False
    return BatchDraws(top, left, flip, alpha)


def _lemire(u32: np.ndarray, span: int) -> tuple[np.ndarray, np.ndarray]:
    """NumPy's bounded integers below `span` from 32-bit draws (Lemire's multiply-shift), and
    whether each is final: a low word below `span` may start NumPy's rejection loop (odds
    span / 2**32), which these arrays do not follow."""
    m = u32 * np.uint64(span)
    return (m >> np.uint64(32)).astype(np.int64), (m & np.uint64(0xFFFFFFFF)) >= span


def crop_flip(image: torch.Tensor, top: int, left: int, flip: bool, crop: int = CROP) -> torch.Tensor:
    """An [H, W, 3] image's crop x crop patch at (top, left), mirrored left-right if `flip`."""
    patch = image[top : top + crop, left : left + crop]
    return patch.flip(1) if flip else patch


def crop_flip_batch(
    images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, crop: int = CROP
) -> torch.Tensor:
    """`crop_flip` for a whole batch in one gather, where the images are decoded on the device
    (data/gpu_decode.py): [N, 3, H, W] -> the NHWC patches [N, crop, crop, 3]."""
    device = images.device
    top, left, flip = top.to(device), left.to(device), flip.to(device)
    k = torch.arange(crop, device=device)
    rows = top[:, None] + k
    cols = left[:, None] + torch.where(flip[:, None], crop - 1 - k, k)
    n = torch.arange(len(images), device=device)[:, None, None]
    # advanced indices around a slice: their broadcast shape [N, crop, crop] comes first
    return images[n, :, rows[:, :, None], cols[:, None, :]]


def pca_from_stats(eigenvalues, eigenvectors) -> dict[str, Any]:
    """The checkpoint's `pca` entry from prep's statistics (for pixels scaled to [0, 1])."""
    return {
        "eigenvalues": [float(v) for v in np.asarray(eigenvalues).reshape(3)],
        "eigenvectors": np.asarray(eigenvectors, dtype=np.float64).reshape(3, 3).tolist(),
    }


def lighting_offsets(alpha: torch.Tensor, pca: dict[str, Any], units: str = "eigenvalue") -> torch.Tensor:
    """Section 4.1: [p1, p2, p3][alpha1 lambda1, alpha2 lambda2, alpha3 lambda3]^T per image.

    alpha: [N, 3]. Returns [N, 3] RGB offsets in pixel units (0..255). prep's eigenvalues and
    eigenvectors describe pixels scaled to [0, 1]. units "eigenvalue": the paper's formula with
    those eigenvalues, scaled by 255 to pixel units (fb.resnet.torch's reading); "stddev":
    cuda-convnet2's, the square roots of the eigenvalues of the 0..255 covariance (the
    components' standard deviations, 255 sqrt(lambda_i)): 2.4x to 18x stronger on ImageNet.
    """
    values = torch.as_tensor(pca["eigenvalues"], dtype=alpha.dtype, device=alpha.device)
    vectors = torch.as_tensor(pca["eigenvectors"], dtype=alpha.dtype, device=alpha.device)
    scale = values if units == "eigenvalue" else values.sqrt()
    return 255.0 * (alpha * scale) @ vectors.T  # columns of `vectors` are the components


def crop_mean(
    mean_image: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, crop: int = CROP
) -> torch.Tensor:
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


def train_input(
    batch: dict[str, torch.Tensor],
    preprocess: dict[str, Any],
    pca: dict[str, Any],
    device: torch.device | str,
    lighting_units: str = "eigenvalue",
    dtype: torch.dtype = torch.float32,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> torch.Tensor:
    """A loader batch of uint8 NHWC patches -> network input [N, 3, 224, 224]: minus the mean
    cut like each patch, plus PCA lighting (in `lighting_units`, see lighting_offsets); then,
    for torchvision's "mean_std" preprocessing, divided by its std, like the pixels at eval."""
    images = channels_last_view(batch["images"].to(device, non_blocking=True))
    std = None
    if preprocess["kind"] == "mean_image":
        mean = preprocess["mean_image"].to(images.device, dtype)
    else:  # a per-channel mean is a constant mean image
        channel_mean, std = pixel_mean_std(preprocess, images.device, dtype)
        mean = channel_mean[0].expand(3, IMAGE_SIZE, IMAGE_SIZE)
    alpha = batch["alpha"].to(images.device, torch.float32)
    offsets = lighting_offsets(alpha, pca, lighting_units).to(dtype)
    centre = centred_patches_per_image if images.device.type == "cpu" else centred_patches
    x = centre(images, mean, batch["top"], batch["left"], batch["flip"], offsets, dtype)
    if std is not None:
        x /= std
    return x.contiguous(memory_format=memory_format)


def centred_patches(
    images: torch.Tensor,
    mean: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    offsets: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """images - (the mean cut like each patch) + offsets, for the whole batch at once (GPU)."""
    x = images.to(dtype)
    x -= crop_mean(mean, top, left, flip, images.shape[-1])
    x += offsets[:, :, None, None]
    return x


def centred_patches_per_image(
    images: torch.Tensor,
    mean: torch.Tensor,
    top: torch.Tensor,
    left: torch.Tensor,
    flip: torch.Tensor,
    offsets: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The same, image by image, for a CPU device: each float patch stays in cache while it is
    converted, centred and lit, which takes 3-5x less CPU time than three passes over the batch
    (and than the gather); on a GPU the per-image kernel launches would cost more. Patches,
    mean and result are all channels_last, so each pass runs over contiguous rows."""
    crop = images.shape[-1]
    span = mean.shape[-1] - crop
    mean_hwc = mean.permute(1, 2, 0)
    mirrored = channels_last_view(mean_hwc.flip(1).contiguous())  # a reflected patch at `left` is
    mean = channels_last_view(mean_hwc.contiguous())  # the mirror's patch at span - left
    x = torch.empty_like(images, dtype=dtype)
    for n, (t, left_n, f) in enumerate(zip(top.tolist(), left.tolist(), flip.tolist(), strict=True)):
        source, left_n = (mirrored, span - left_n) if f else (mean, left_n)
        x[n].copy_(images[n]).sub_(source[:, t : t + crop, left_n : left_n + crop]).add_(
            offsets[n].view(3, 1, 1)
        )
    return x
