"""conv1's kernels (the paper's Figure 3), from a checkpoint or torchvision's weights, and how
colour-specific each tower's kernels are (section 6.1).

Section 6.1: "the kernels on GPU 1 are largely color-agnostic, while the kernels on GPU 2 are
largely color-specific. This kind of specialization occurs during every run and is independent
of any particular random weight initialization (modulo a renumbering of the GPUs)." The measure
here: split each kernel's RGB weights, pixel by pixel, into their luminance part (the mean of R,
G and B, along the gray axis (1, 1, 1)) and the rest, the chroma part orthogonal to it; a
kernel's chroma share is the chroma part's share of its energy (sum of squared weights). The
two parts are orthogonal, so the shares of a kernel add up to 1: a gray kernel scores 0, an
opponent kernel (red against green, blue against yellow) 1, a kernel on one channel alone 2/3,
and random weights 2/3 on average (chroma spans two of the three colour dimensions), so only a
trained kernel well below or above 2/3 says anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_cli.checkpoint import checkpoint_model_config, load_checkpoint, load_torchvision_weights
from alexnet_cli.errors import InputError, no_checkpoint

# A kernel with more energy in chroma than in luminance counts as colour-specific.
COLOUR_SPECIFIC = 0.5


@dataclass
class Kernels:
    weight: np.ndarray  # float [K, 3, h, w]
    towers: int  # 2: the first half of the kernels is tower 0's (the paper's net); else 1
    source: str


def conv1_kernels(
    checkpoint: str | os.PathLike | None = None, weights: str | os.PathLike | None = None
) -> Kernels:
    """The first layer's kernels of an alexnet-cli checkpoint or a torchvision AlexNet state_dict."""
    if weights is not None:
        weight, towers, source = load_torchvision_weights(weights).get("features.0.weight"), 1, weights
    elif checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        config = checkpoint_model_config(ckpt, checkpoint)
        paper = config.arch == "paper"
        towers = 2 if paper and config.towers == "two" else 1
        weight, source = ckpt["model"].get("conv1.weight" if paper else "features.0.weight"), checkpoint
    else:
        raise no_checkpoint(alternative="--weights FILE.pth")
    if weight is None or weight.ndim != 4 or weight.shape[1] != 3:
        raise InputError(f"{source}: has no conv1 kernels of shape [K, 3, h, w]")
    return Kernels(weight.float().numpy(), towers, str(Path(source)))


def chroma_share(weight: np.ndarray) -> np.ndarray:
    """[K, 3, h, w] kernels -> [K]: each kernel's share of energy off the gray axis (0 gray, 1
    opponent colours; see the module's docstring). A kernel of zeros scores 0."""
    w = np.asarray(weight, dtype=np.float64)
    luminance = w.mean(axis=1, keepdims=True)  # per pixel, the projection on (1, 1, 1)
    chroma = ((w - luminance) ** 2).sum(axis=(1, 2, 3))
    total = (w**2).sum(axis=(1, 2, 3))
    return np.divide(chroma, total, out=np.zeros_like(total), where=total > 0)


def colour_summary(kernels: Kernels) -> dict[str, Any]:
    """`alexnet filters --json`'s measure: per tower, the mean and median chroma share of its
    kernels and how many are colour-specific (share above COLOUR_SPECIFIC); per kernel, its share."""
    shares = chroma_share(kernels.weight)
    per_tower = np.split(shares, kernels.towers)
    return {
        "measure": "chroma share: energy off the gray axis / energy (0 gray, 1 opponent colours)",
        "colour_specific_above": COLOUR_SPECIFIC,
        "towers": [
            {
                "tower": t,
                "kernels": len(s),
                "mean_chroma": float(s.mean()),
                "median_chroma": float(np.median(s)),
                "colour_specific": int((s > COLOUR_SPECIFIC).sum()),
            }
            for t, s in enumerate(per_tower)
        ],
        "chroma": [round(float(v), 4) for v in shares],
    }
