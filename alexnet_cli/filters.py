"""conv1's kernels (the paper's Figure 3), from a checkpoint or torchvision's weights."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alexnet_cli.checkpoint import load_checkpoint, load_torchvision_weights
from alexnet_cli.errors import InputError, no_checkpoint


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
        towers = 2 if ckpt["model_config"].get("arch", "paper") == "paper" else 1
        weight, source = ckpt["model"].get("conv1.weight" if towers == 2 else "features.0.weight"), checkpoint
    else:
        raise no_checkpoint(alternative="--weights FILE.pth")
    if weight is None or weight.ndim != 4 or weight.shape[1] != 3:
        raise InputError(f"{source}: has no conv1 kernels of shape [K, 3, h, w]")
    return Kernels(weight.float().numpy(), towers, str(Path(source)))
