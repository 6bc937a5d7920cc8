"""A trained network ready to score images: its weights, preprocessing and class list.

eval, predict and the demo all score through `Classifier.probabilities`, so a file and its
stored crop get the same numbers whichever command reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from alexnet_cli.checkpoint import (
    checkpoint_model_config,
    load_checkpoint,
    load_torchvision_weights,
    load_weights,
    model_from_checkpoint,
)
from alexnet_cli.classes import class_name, imagenet_classes
from alexnet_cli.data.transforms import network_input, softmax_average, torchvision_preprocess
from alexnet_cli.errors import InputError, no_checkpoint
from alexnet_cli.model import ARCHES, ModelConfig, build_model
from alexnet_cli.pretrained import is_pretrained


@dataclass
class Classifier:
    """A network with what it needs to score uint8 images: its preprocessing and class list."""

    model: nn.Module
    preprocess: dict[str, Any]  # transforms.normalize's description, tensors already on `device`
    classes: list[tuple[str, str]]  # (wnid, name) in output-index order
    source: str  # the file the weights came from
    device: torch.device  # where input batches go (tower 0's device)
    config: ModelConfig  # the network's (an export's card records it)

    @torch.inference_mode()
    def probabilities(
        self, images: torch.Tensor, ten_crop: bool = False, max_crops: int | None = None
    ) -> torch.Tensor:
        """uint8 [N, 256, 256, 3] -> [N, classes] softmax on the device (ten_crop: the mean of 10).
        Forward passes take at most `max_crops` crops (memory stays that of a center-crop batch)."""
        x = network_input(images.to(self.device, non_blocking=True), self.preprocess, ten_crop)
        logits = torch.cat([self.model(chunk) for chunk in x.split(max_crops or len(x))])
        return softmax_average(logits.view(images.shape[0], -1, logits.shape[-1]))


def load_classifier(
    devices: Sequence[torch.device],
    checkpoint: str | os.PathLike | None = None,
    arch: str | None = None,
    weights: str | os.PathLike | None = None,
) -> Classifier:
    """An alexnet-cli checkpoint (its own arch, classes and preprocessing), or with
    arch="torchvision" a torchvision AlexNet state_dict (ImageNet-1k, torchvision's mean/std).
    The name `torchvision`, as the checkpoint or the weights, is torchvision's pretrained file.
    `devices`: one, or two for the paper's split (devices.Placement.devices)."""
    if is_pretrained(checkpoint) and weights is None:
        checkpoint, weights = None, checkpoint
    if is_pretrained(weights):
        arch = arch or "torchvision"
    if arch is not None and arch not in ARCHES:
        raise InputError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHES)}")
    if weights is not None and checkpoint is not None:
        raise InputError("give a checkpoint or --weights, not both")
    if weights is not None and arch != "torchvision":
        raise InputError("--weights loads a torchvision AlexNet state_dict; add --arch torchvision")
    if weights is None and arch == "torchvision" and checkpoint is None:
        raise InputError(
            "--arch torchvision needs --weights FILE.pth (torchvision's alexnet-owt-7be5be79.pth)"
        )
    if checkpoint is None and weights is None:
        raise no_checkpoint()
    split = len(devices) == 2
    if weights is not None:
        if split:
            raise InputError(
                "--gpus 2 splits the paper's two towers; torchvision's AlexNet has one: use --gpus 1"
            )
        # torchvision trained these weights with its own (inverted) dropout
        config = ModelConfig("torchvision", len(imagenet_classes()), dropout_form="inverted")
        model = build_model(config)
        load_weights(model, load_torchvision_weights(weights), weights)
        classes = [(c.wnid, c.name) for c in imagenet_classes()]
        preprocess, source = torchvision_preprocess(), str(weights)
    else:
        ckpt = load_checkpoint(checkpoint)
        config = checkpoint_model_config(ckpt, checkpoint)
        if arch is not None and arch != config.arch:
            raise InputError(f"{checkpoint}: holds a '{config.arch}' network, not --arch {arch}")
        if split and (config.arch != "paper" or config.towers != "two"):
            net = f"a '{config.arch}' net" if config.arch != "paper" else f"a --towers {config.towers} net"
            raise InputError(f"{checkpoint}: --gpus 2 splits the paper's two towers; {net} has one")
        classes = _checkpoint_classes(ckpt, config, checkpoint)
        model = model_from_checkpoint(ckpt, list(devices) if split else None, checkpoint)
        preprocess, source = ckpt["preprocess"], str(checkpoint)
    if not split:
        model.to(devices[0])
    preprocess = {k: v.to(devices[0]) if isinstance(v, torch.Tensor) else v for k, v in preprocess.items()}
    return Classifier(model.eval(), preprocess, classes, source, devices[0], config)


def _checkpoint_classes(ckpt: dict[str, Any], config: ModelConfig, path) -> list[tuple[str, str]]:
    rows = ckpt.get("classes")
    if not isinstance(rows, (list, tuple)) or len(rows) != config.num_classes or "preprocess" not in ckpt:
        raise InputError(
            f"{path}: checkpoint lacks its class list or preprocessing for {config.num_classes} classes"
        )
    return [(str(r[0]), str(r[1]) if len(r) > 1 and r[1] else class_name(str(r[0]))) for r in rows]
