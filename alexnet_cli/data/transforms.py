"""Batched, on-device tensor transforms shared by train, eval and predict.

Images travel as uint8 NHWC batches of stored 256x256 crops (the decoder's order); on the
device `channels_last_view` makes them NCHW tensors in channels_last memory, without a copy.
Everything here runs on whatever device the batch is on. Normalisation happens at 256x256,
*before* cropping, so the paper's per-pixel mean image lines up with every crop and
reflection for free.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

CROP = 224  # network input; docs/recipe.md: 224 with conv1 padding 2 (the paper says 224, needs 227)


def channels_last_view(hwc: torch.Tensor) -> torch.Tensor:
    """[..., H, W, 3] -> [..., 3, H, W], a view: an NHWC batch becomes a channels_last NCHW tensor."""
    return hwc.movedim(-1, -3)


def network_input(
    images: torch.Tensor,
    preprocess: dict[str, Any],
    ten_crop: bool = False,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """uint8 [N, 256, 256, 3] -> [N*K, 3, 224, 224]: normalised at 256x256, then K crops per
    image (K = 10 in `ten_crops`' order, image-major; else K = 1, the center: section 4.1)."""
    x = normalize(channels_last_view(images), preprocess, dtype)
    return ten_crops(x).flatten(0, 1) if ten_crop else center_crop(x)


def preprocess_from_stats(mean_image_hwc) -> dict[str, Any]:
    """The paper's preprocessing (section 2): subtract the training set's mean image."""
    mean = torch.as_tensor(mean_image_hwc, dtype=torch.float32).permute(2, 0, 1).contiguous()
    return {"kind": "mean_image", "mean_image": mean}


def torchvision_preprocess() -> dict[str, Any]:
    """torchvision's ImageNet weights expect 0..1 pixels normalised by these mean and std."""
    return {"kind": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


def normalize(
    batch: torch.Tensor, preprocess: dict[str, Any], dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """uint8 [N, 3, H, W] (any memory format) -> network input in `dtype`, per the
    checkpoint's `preprocess`."""
    x = batch.to(dtype)
    if preprocess["kind"] == "mean_image":
        mean = preprocess["mean_image"].to(x.device, dtype)
        if mean.shape[-2:] != x.shape[-2:]:
            mean = _center(mean.unsqueeze(0), x.shape[-1]).squeeze(0)
        if x.is_contiguous(
            memory_format=torch.channels_last
        ):  # the mean in the same order: one pass over rows
            mean = channels_last_view(mean.permute(1, 2, 0).contiguous())
        return x - mean
    if preprocess["kind"] == "mean_std":
        mean, std = pixel_mean_std(preprocess, x.device, dtype)
        return (x - mean) / std
    raise ValueError(f"unknown preprocess kind {preprocess['kind']!r}")


def pixel_mean_std(
    preprocess: dict[str, Any], device: torch.device | str, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    """A "mean_std" preprocessing's per-channel mean and std in pixel units (0..255), [1, 3, 1, 1]."""
    mean = torch.as_tensor(preprocess["mean"], dtype=dtype, device=device).view(1, 3, 1, 1) * 255
    std = torch.as_tensor(preprocess["std"], dtype=dtype, device=device).view(1, 3, 1, 1) * 255
    return mean, std


def _center(x: torch.Tensor, size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def center_crop(batch: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """The central size x size patch (section 4.1's validation crop)."""
    return _center(batch, size)


def ten_crops(batch: torch.Tensor, size: int = CROP) -> torch.Tensor:
    """Section 4.1's test-time crops: the four corners and the center, and their reflections.

    [N, C, H, W] -> [N, 10, C, size, size], in torchvision.transforms.TenCrop's order (tl, tr,
    bl, br, center, then the same five of the horizontally flipped image).
    """
    h, w = batch.shape[-2:]
    five = [
        batch[..., :size, :size],
        batch[..., :size, w - size :],
        batch[..., h - size :, :size],
        batch[..., h - size :, w - size :],
        _center(batch, size),
    ]
    crops = torch.stack(five, dim=1)
    # The flipped image's corners are the flips of the mirrored corners: tl<->tr, bl<->br.
    flipped = crops[:, [1, 0, 3, 2, 4]].flip(-1)
    return torch.cat([crops, flipped], dim=1)


def softmax_average(logits: torch.Tensor) -> torch.Tensor:
    """[N, K, classes] logits of K crops -> [N, classes] mean softmax (section 4.1)."""
    return F.softmax(logits.float(), dim=-1).mean(dim=1)
