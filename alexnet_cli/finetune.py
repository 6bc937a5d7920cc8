"""Fine-tuning: `alexnet train --init-from CKPT [--freeze features|fc6|fc7]`.

The new run starts from CKPT's weights (a checkpoint, a .safetensors export, or `torchvision`)
on a dataset that may have other classes: every layer is copied except fc8 when the class
lists differ (by WordNet id), which keeps its fresh initialisation. The run takes CKPT's
preprocessing too (its mean image, or torchvision's mean/std), so the copied layers see inputs
like those they learned from. `--freeze` keeps the weights of every layer up to the one named
fixed (`features`: conv1-conv5).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from alexnet_cli.checkpoint import load_weights
from alexnet_cli.classifier import load_classifier
from alexnet_cli.errors import InputError
from alexnet_cli.model import LAYERS, Dropout, arch_of, layer_of

FREEZE = {"features": "conv5", "fc6": "fc6", "fc7": "fc7"}  # --freeze X: layers up to this one


def prepare(
    model: nn.Module,
    classes: Sequence[tuple[str, str]],
    preprocess: dict[str, Any],
    init_from: str | os.PathLike | None,
    freeze: str | None,
    resumed: dict[str, Any] | None,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Set up a fine-tuning run on a freshly built `model` for the dataset's `classes`; returns
    the preprocessing the run uses. Resuming (`resumed`: the checkpoint), the weights and the
    preprocessing come from that checkpoint instead, and only the freezing is applied again."""
    if freeze is not None and freeze not in FREEZE:
        raise InputError(f"--freeze {freeze}: choose one of {', '.join(FREEZE)}")
    if init_from is not None:
        preprocess = (
            resumed["preprocess"]
            if resumed is not None
            else init_from_checkpoint(model, classes, init_from, say)
        )
    if freeze is not None:
        say(freeze_layers(model, FREEZE[freeze]))
    return preprocess


def init_from_checkpoint(
    model: nn.Module, classes: Sequence[tuple[str, str]], path: str | os.PathLike, say: Callable[[str], None]
) -> dict[str, Any]:
    """Copy `path`'s weights into `model` (fc8 too when its classes are `classes`); returns its
    preprocessing, on the CPU."""
    source = load_classifier([torch.device("cpu")], path)
    if arch_of(source.model) != arch_of(model):
        raise InputError(
            f"{path}: holds a '{arch_of(source.model)}' network; train with --arch {arch_of(source.model)}"
        )
    ours, theirs = model.state_dict(), source.model.state_dict()
    same_classes = [w for w, _ in source.classes] == [w for w, _ in classes]
    state = {k: v if same_classes or layer_of(k) != "fc8" else ours[k] for k, v in theirs.items()}
    load_weights(model, state, path)
    if same_classes:
        say(f"initialised every layer from {path} (the same {len(classes)} classes)")
    else:
        why = (
            f"it has {len(source.classes)} classes, the dataset {len(classes)}"
            if len(source.classes) != len(classes)
            else f"its {len(classes)} classes are not the dataset's"
        )
        say(f"initialised conv1-fc7 from {path}; fc8 re-initialised ({why})")
    say(f"preprocessing from {path} ({source.preprocess['kind']}), as its layers were trained with")
    theirs, ours = (_dropout_form(m) for m in (source.model, model))
    if theirs != ours:
        say(
            f"note: {path} was trained with {theirs} dropout and this run uses {ours}: fc7 and fc8 see "
            f"inputs {'half' if ours == 'paper' else 'twice'} as large as they learned on; "
            f"--dropout-form {theirs} keeps them"
        )
    return source.preprocess


def freeze_layers(model: nn.Module, last: str) -> str:
    """Stop gradients to the weights of every layer up to and including `last` (one of LAYERS);
    returns what was frozen, for the log."""
    upto = LAYERS.index(last)
    frozen = [p for name, p in model.named_parameters() if LAYERS.index(layer_of(name)) <= upto]
    for p in frozen:
        p.requires_grad_(False)
    trained = LAYERS[upto + 1 :]
    training = f"{trained[0]}-{trained[-1]}" if len(trained) > 1 else f"{trained[0]} only"
    return f"frozen: conv1-{last} ({sum(p.numel() for p in frozen):,} weights); training {training}"


def _dropout_form(model: nn.Module) -> str:
    return next((m.form for m in model.modules() if isinstance(m, Dropout)), "paper")
