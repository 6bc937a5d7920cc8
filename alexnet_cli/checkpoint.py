"""Self-describing checkpoints: everything needed to evaluate, predict or resume, in one file.

A checkpoint is a plain dict saved with torch.save and loaded with ``weights_only=True`` (never
unpickling code). `training_checkpoint` below builds exactly these keys (format_version 1):

    format, format_version   "alexnet-cli checkpoint", 1
    model                    state_dict in the grouped single-model layout (model.py)
    model_config             dict of model.ModelConfig (the ablation switches too: activation,
                             lrn, pool, towers; a key missing is the paper's choice)
    classes                  [[wnid, name], ...] in class-index order
    preprocess               how uint8 RGB pixels become network input (see transforms.py):
                             {"kind": "mean_image", "mean_image": float32 [3, 256, 256]}  (paper)
                             {"kind": "mean_std", "mean": [3], "std": [3]}  (torchvision, on 0..1)
    pca                      {"eigenvalues": [3], "eigenvectors": [[3]x3]} (columns = components)
    train_config             dict of train.TrainConfig (tuples as lists)
    optimizer, scheduler     their state_dicts, for --resume (last.pt only; best.pt has none)
    epoch                    completed epochs
    epoch_step               optimizer steps done in the unfinished epoch
    step                     optimizer steps in all
    epoch_sums               float32 [4]: the unfinished epoch's train loss sum, top-1 hits,
                             top-5 hits and images so far, summed over all ranks
    metrics                  list of per-epoch metric dicts (metrics.csv rows)
    best_top1                the best val top-1 so far (percent), or None
    elapsed_s                training seconds so far, over every process of the run
    rng                      {"seed_scheme": ...}: no generator state, because every random
                             number is a function of (seed, position) (randomness.py)
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alexnet_cli.config import LEGACY_RECIPE, switch_problem
from alexnet_cli.errors import InputError
from alexnet_cli.fileio import atomic_path
from alexnet_cli.model import ARCHES, ModelConfig, build_model
from alexnet_cli.pretrained import is_pretrained, torchvision_weights_file

FORMAT_NAME = "alexnet-cli checkpoint"
FORMAT_VERSION = 1
SEED_SCHEME = "numpy SeedSequence((stream, seed, epoch, step|index[, layer])); dropout over the global batch"
# Written before dropout masks were drawn over the global batch: dropout from torch's generator
# seeded per step from (seed, epoch, step, rank). Such a run resumes with that scheme.
PER_RANK_DROPOUT_SCHEME = "numpy SeedSequence((stream, seed, epoch, step|index[, rank]))"


@dataclass
class EpochTotals:
    """Sums over the training images of the unfinished epoch, over all ranks."""

    loss: float = 0.0  # cross-entropy summed over images
    top1: float = 0.0  # images whose label is the top-1 prediction
    top5: float = 0.0
    images: float = 0.0

    def as_tensor(self) -> torch.Tensor:
        return torch.tensor([self.loss, self.top1, self.top5, self.images], dtype=torch.float32)

    @classmethod
    def from_tensor(cls, t: torch.Tensor) -> EpochTotals:
        return cls(*(float(v) for v in t.float().tolist()))


@dataclass
class RunState:
    """Where a training run is: what a checkpoint carries besides weights and optimizer."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # optimizer steps done in epoch `epoch` (0-based)
    step: int = 0  # optimizer steps in all
    totals: EpochTotals = field(default_factory=EpochTotals)
    metrics: list[dict[str, Any]] = field(default_factory=list)
    best_top1: float | None = None
    elapsed_before: float = 0.0  # seconds spent in earlier processes of this run
    seed_scheme: str = SEED_SCHEME  # how this run draws its random numbers (kept for its whole life)

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any]) -> RunState:
        return cls(
            int(ckpt["epoch"]),
            int(ckpt["epoch_step"]),
            int(ckpt["step"]),
            EpochTotals.from_tensor(ckpt["epoch_sums"]),
            list(ckpt["metrics"]),
            ckpt["best_top1"],
            float(ckpt["elapsed_s"]),
            ckpt.get("rng", {}).get("seed_scheme", SEED_SCHEME),
        )


def training_checkpoint(
    model: nn.Module,
    model_config: ModelConfig,
    classes: Sequence[tuple[str, str]],
    preprocess: dict[str, Any],
    pca: dict[str, Any],
    train_config: dict[str, Any],
    state: RunState,
    elapsed_here: float,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: Any = None,
) -> dict[str, Any]:
    """The dict `alexnet train` saves (the schema above); without an optimizer, best.pt's."""
    ckpt = {
        "model": _to_cpu(model.state_dict()),
        "model_config": asdict(model_config),
        "classes": [list(c) for c in classes],
        "preprocess": preprocess,
        "pca": pca,
        "train_config": {k: list(v) if isinstance(v, tuple) else v for k, v in train_config.items()},
        "epoch": state.epoch,
        "epoch_step": state.epoch_step,
        "step": state.step,
        "epoch_sums": state.totals.as_tensor(),
        "metrics": list(state.metrics),
        "best_top1": state.best_top1,
        "elapsed_s": state.elapsed_before + elapsed_here,
        "rng": {"seed_scheme": state.seed_scheme},
    }
    if optimizer is not None:
        ckpt["optimizer"] = _to_cpu(optimizer.state_dict())
        ckpt["scheduler"] = scheduler.state_dict()
    return ckpt


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


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
        raise InputError(
            f"{path}: not an alexnet-cli checkpoint "
            "(for torchvision weights use --arch torchvision --weights)"
        )
    if int(ckpt.get("format_version", -1)) > FORMAT_VERSION:
        raise InputError(
            f"{path}: checkpoint format {ckpt['format_version']} is newer than this alexnet-cli; upgrade it"
        )
    return ckpt


def checkpoint_model_config(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> ModelConfig:
    """The checkpoint's ModelConfig, checked: one line naming the file if it is unusable."""
    # A key written before its choice existed gets what the code did then: torch's dropout form
    # (so the net is evaluated as it was trained); ReLU, LRN, overlapping pooling, two towers.
    before = {f.name: LEGACY_RECIPE[f.name] for f in fields(ModelConfig) if f.name in LEGACY_RECIPE}
    try:
        config = ModelConfig(**{**before, **ckpt["model_config"]})
    except (KeyError, TypeError) as e:
        raise InputError(
            f"{path}: checkpoint has no usable model_config ({e}); was it written by `alexnet train`?"
        ) from None
    if config.arch not in ARCHES:
        raise InputError(
            f"{path}: holds an unknown architecture {config.arch!r} "
            f"(this alexnet-cli has: {', '.join(ARCHES)})"
        )
    problem = switch_problem(config)
    if problem:
        raise InputError(f"{path}: holds a network this alexnet-cli cannot build ({problem})")
    return config


def model_from_checkpoint(
    ckpt: dict[str, Any],
    devices: Sequence[str | torch.device] | None = None,
    path: str | os.PathLike = "checkpoint",
) -> nn.Module:
    """Rebuild the network a checkpoint describes and load its weights."""
    model = build_model(checkpoint_model_config(ckpt, path), devices)
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
            f"shape of {wrong[0]} is {tuple(state[wrong[0]].shape)}, "
            f"the model needs {tuple(ours[wrong[0]].shape)}"
            if wrong
            else f"missing {missing[:3]}"
            if missing
            else f"unexpected {unexpected[:3]}"
        )
        raise InputError(
            f"{path}: weights do not fit this architecture ({detail}); "
            "check --arch, --towers and the class count"
        )
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
        raise InputError(
            f"{path}: not a readable checkpoint ({type(e).__name__}); is the file complete?"
        ) from None


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
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise InputError(
            f"{path}: not a state_dict (a dict of tensors); save it with torch.save(model.state_dict(), FILE)"
        )
    return state
