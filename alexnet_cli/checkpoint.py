"""Self-describing checkpoints: everything needed to evaluate, predict or resume, in one file.

A checkpoint is a plain dict saved with torch.save and loaded with ``weights_only=True`` (never
unpickling code). Its keys (format_version 1):

    format, format_version   "alexnet-cli checkpoint", 1
    model                    state_dict in the grouped single-model layout (model.py)
    model_config             dict of model.ModelConfig
    classes                  [[wnid, name], ...] in class-index order
    preprocess               how uint8 RGB pixels become network input (see transforms.py):
                             {"kind": "mean_image", "mean_image": float32 [3, 256, 256]}  (paper)
                             {"kind": "mean_std", "mean": [3], "std": [3]}  (torchvision, on 0..1)
    pca                      {"eigenvalues": [3], "eigenvectors": [[3]x3]} (columns = components)
    train_config             dict of the training options (train.py), if trained here
    optimizer, scheduler     their state_dicts, for --resume
    epoch, step              completed epochs, optimizer steps
    rng                      RNG states, for exact resume
    metrics                  list of per-epoch metric dicts (metrics.csv rows)

`alexnet train` also writes (see train.RunState): epoch_step (optimizer steps done in the
unfinished epoch), epoch_sums (its train loss/top-1/top-5/image sums so far), best_top1,
elapsed_s. best.pt has no optimizer/scheduler state.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from alexnet_cli.errors import InputError
from alexnet_cli.fileio import atomic_path
from alexnet_cli.model import ModelConfig, build_model
from alexnet_cli.pretrained import is_pretrained, torchvision_weights_file

FORMAT_NAME = "alexnet-cli checkpoint"
FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> None:
    """Write atomically (temp file, fsync, rename): a crash never leaves half a checkpoint."""
    checkpoint = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, **checkpoint}
    with atomic_path(path) as tmp:
        try:
            torch.save(checkpoint, tmp)
        except RuntimeError as e:  # torch's zip writer reports a failed write (a full disk) this way
            raise OSError(f"torch.save failed: {str(e).strip().splitlines()[0][:160]}") from None


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load with weights_only=True (a .safetensors export: its tensors and card); any failure is
    one clear line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such checkpoint; give a file written by `alexnet train`")
    if path.suffix.lower() == ".safetensors":  # `alexnet export`'s weights and card: no pickle at all
        from alexnet_cli.export import read_safetensors

        ckpt = read_safetensors(path)
    else:
        ckpt = _load_data(path, map_location)
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT_NAME:
        raise InputError(f"{path}: not an alexnet-cli checkpoint (for torchvision weights use --arch torchvision --weights)")
    if int(ckpt.get("format_version", -1)) > FORMAT_VERSION:
        raise InputError(f"{path}: checkpoint format {ckpt['format_version']} is newer than this alexnet-cli; upgrade it")
    return ckpt


def model_config(ckpt: dict[str, Any]) -> ModelConfig:
    return ModelConfig(**ckpt["model_config"])


def model_from_checkpoint(
    ckpt: dict[str, Any], devices: Sequence[str | torch.device] | None = None, path: str | os.PathLike = "checkpoint"
) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights."""
    model = build_model(model_config(ckpt), devices)
    load_weights(model, ckpt["model"], path)
    return model


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike) -> None:
    """load_state_dict with shape/key mismatches reported as one line naming the file."""
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    wrong = [k for k in ours if k in state and tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or wrong:
        detail = (
            f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, the model needs {tuple(ours[wrong[0]].shape)}"
            if wrong
            else f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        )
        raise InputError(f"{path}: weights do not fit this architecture ({detail}); check --arch and the class count")
    model.load_state_dict(state)


def _load_data(path: Path, map_location: str | torch.device = "cpu") -> Any:
    """torch.load with weights_only=True (tensors and plain data, never code); failures are one line."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message is a paragraph; the line naming what was refused is the useful one
        lines = [line.strip() for line in str(e).splitlines() if line.strip()] or ["unsupported content"]
        detail = next((line for line in lines if "GLOBAL" in line or "Unsupported" in line), lines[0])
        raise InputError(
            f"{path}: refused to load: it holds more than weights and data ({detail[:200]}); "
            "only load checkpoints you trust, re-saved as plain tensors"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as e:
        raise InputError(f"{path}: not a readable checkpoint ({type(e).__name__}); is the file complete?") from None


def load_torchvision_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """A torchvision AlexNet state_dict as torchvision downloads it (e.g. alexnet-owt-7be5be79.pth),
    loaded with weights_only=True. Whether it fits the architecture is load_weights' check.
    The name `torchvision` stands for torchvision's own IMAGENET1K_V1 file (pretrained.py)."""
    path = torchvision_weights_file() if is_pretrained(path) else Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such weights file; give torchvision's alexnet-owt-7be5be79.pth")
    state = _load_data(path)
    if isinstance(state, dict) and state.get("format") == FORMAT_NAME:
        raise InputError(
            f"{path}: is an alexnet-cli checkpoint, not torchvision weights; pass it as the checkpoint "
            "(without --arch torchvision --weights)"
        )
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{path}: not a state_dict (a dict of tensors); save it with torch.save(model.state_dict(), FILE)")
    return state
