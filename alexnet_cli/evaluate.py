"""Section 4.1's test: top-1 and top-5 error over a prepared split, from the center 224x224 patch
or from the average softmax of ten patches (four corners, center, and their reflections).

Images travel from the shards as uint8 256x256 batches (DataLoader workers read and decode in
parallel); normalisation, cropping and the forward pass run on the device. Under torchrun each
rank scores a contiguous share of the split (`distributed.shard_range`: every image exactly
once) and the integer counts are summed, so the result equals the single-process one.
"""

from __future__ import annotations

import csv
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from alexnet_cli import distributed
from alexnet_cli.checkpoint import load_checkpoint, load_torchvision_weights, load_weights, model_from_checkpoint
from alexnet_cli.classes import class_name, imagenet_classes
from alexnet_cli.data.format import PreparedDataset, SplitReader
from alexnet_cli.data import transforms
from alexnet_cli.data.loader import original_message
from alexnet_cli.data.transforms import normalize, softmax_average, torchvision_preprocess
from alexnet_cli.errors import AlexnetError, InputError
from alexnet_cli.fileio import atomic_path
from alexnet_cli.model import ARCHES, ModelConfig, build_model
from alexnet_cli.pretrained import is_pretrained

TOPK = (1, 5)  # the paper reports top-1 and top-5 error rates


@dataclass
class EvalConfig:
    """Options of `alexnet eval` (section 4.1)."""

    data: Path  # the OUT.h5 index file written by `alexnet prep`
    split: str = "val"
    ten_crop: bool = False  # section 4.1: average the softmax over 5 patches and their reflections
    gpus: int | None = None  # 0: CPU, 1: one GPU, 2: the paper's two-GPU split; None: 1 if CUDA is present
    batch_size: int = 128  # images per batch, crops per forward pass (10 passes a batch with ten_crop)
    workers: int | None = None  # DataLoader worker processes; None: the cores per rank, at most 8


# --------------------------------------------------------------------------------------------
# A network ready to score images


@dataclass
class Classifier:
    """A network with what it needs to score uint8 images: its preprocessing and class list."""

    model: nn.Module
    preprocess: dict[str, Any]  # transforms.normalize's description, tensors already on `device`
    classes: list[tuple[str, str]]  # (wnid, name) in output-index order
    source: str  # the file the weights came from
    device: torch.device  # where input batches go (tower 0's device)

    @torch.inference_mode()
    def probabilities(
        self, images: torch.Tensor, ten_crop: bool = False, max_crops: int | None = None
    ) -> torch.Tensor:
        """uint8 [N, 256, 256, 3] -> [N, classes] softmax on the device (ten_crop: the mean of 10).
        Forward passes take at most `max_crops` crops (memory stays that of a center-crop batch)."""
        x = network_input(images.to(self.device, non_blocking=True), self.preprocess, ten_crop)
        logits = torch.cat([self.model(chunk) for chunk in x.split(max_crops or len(x))])
        return softmax_average(logits.view(images.shape[0], -1, logits.shape[-1]))


def network_input(images: torch.Tensor, preprocess: dict[str, Any], ten_crop: bool) -> torch.Tensor:
    """uint8 [N, 256, 256, 3] -> float [N*K, 3, 224, 224]: normalised at 256x256, then K crops
    per image (K = 10 in transforms.ten_crop's order, image-major; else K = 1, the center)."""
    x = normalize(images.permute(0, 3, 1, 2), preprocess)
    return transforms.ten_crop(x).flatten(0, 1) if ten_crop else transforms.center_crop(x)


def resolve_gpus(gpus: int | None) -> int:
    if gpus is None:
        return 1 if torch.cuda.is_available() else 0
    if gpus not in (0, 1, 2):
        raise InputError(f"--gpus {gpus}: choose 0 (CPU), 1 (one GPU) or 2 (the paper's two-GPU split)")
    return gpus


def devices_for(gpus: int, local_rank: int = 0) -> list[torch.device]:
    """This process's devices: the CPU, one GPU, or two (tower 0, tower 1); under torchrun
    local rank r takes GPUs r*gpus .. r*gpus + gpus - 1."""
    if gpus == 0:
        return [torch.device("cpu")]
    need, have = gpus * (local_rank + 1), torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < need:
        raise InputError(f"--gpus {gpus} needs {need} GPU(s) on this machine, found {have}; use --gpus 0 for the CPU")
    return [torch.device(f"cuda:{gpus * local_rank + i}") for i in range(gpus)]


def load_classifier(
    devices: Sequence[torch.device],
    checkpoint: str | os.PathLike | None = None,
    arch: str | None = None,
    weights: str | os.PathLike | None = None,
) -> Classifier:
    """An alexnet-cli checkpoint (its own arch, classes and preprocessing), or with
    arch="torchvision" a torchvision AlexNet state_dict (ImageNet-1k, torchvision's mean/std).
    The name `torchvision`, as the checkpoint or the weights, is torchvision's pretrained file."""
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
        raise InputError("--arch torchvision needs --weights FILE.pth (torchvision's alexnet-owt-7be5be79.pth)")
    if checkpoint is None and weights is None:
        raise InputError("no checkpoint given; pass one or set ALEXNET_CHECKPOINT")
    split = len(devices) == 2
    if weights is not None:
        if split:
            raise InputError("--gpus 2 splits the paper's two towers; torchvision's AlexNet has one: use --gpus 1")
        model = build_model(ModelConfig(arch="torchvision", num_classes=len(imagenet_classes())))
        load_weights(model, load_torchvision_weights(weights), weights)
        classes = [(c.wnid, c.name) for c in imagenet_classes()]
        preprocess, source = torchvision_preprocess(), str(weights)
    else:
        ckpt = load_checkpoint(checkpoint)
        config = _model_config(ckpt, checkpoint)
        if arch is not None and arch != config.arch:
            raise InputError(f"{checkpoint}: holds a '{config.arch}' network, not --arch {arch}")
        if split and config.arch != "paper":
            raise InputError(f"{checkpoint}: --gpus 2 splits the paper's two towers; a '{config.arch}' net has one")
        classes = _checkpoint_classes(ckpt, config, checkpoint)
        model = model_from_checkpoint(ckpt, list(devices) if split else None, checkpoint)
        preprocess, source = ckpt["preprocess"], str(checkpoint)
    if not split:
        model.to(devices[0])
    preprocess = {k: v.to(devices[0]) if isinstance(v, torch.Tensor) else v for k, v in preprocess.items()}
    return Classifier(model.eval(), preprocess, classes, source, devices[0])


def _model_config(ckpt: dict[str, Any], path) -> ModelConfig:
    try:
        config = ModelConfig(**ckpt["model_config"])
    except (KeyError, TypeError) as e:
        raise InputError(f"{path}: checkpoint has no usable model_config ({e}); was it written by `alexnet train`?") from None
    if config.arch not in ARCHES:
        raise InputError(f"{path}: holds an unknown architecture {config.arch!r} (this alexnet-cli has: {', '.join(ARCHES)})")
    return config


def _checkpoint_classes(ckpt: dict[str, Any], config: ModelConfig, path) -> list[tuple[str, str]]:
    rows = ckpt.get("classes")
    if not isinstance(rows, (list, tuple)) or len(rows) != config.num_classes or "preprocess" not in ckpt:
        raise InputError(f"{path}: checkpoint lacks its class list or preprocessing for {config.num_classes} classes")
    return [(str(r[0]), str(r[1]) if len(r) > 1 and r[1] else class_name(str(r[0]))) for r in rows]


# --------------------------------------------------------------------------------------------
# Counting


def topk_hits(probs: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = TOPK) -> torch.Tensor:
    """[len(ks), N] bool: is each image's label among its k most probable classes? A k at or
    above the class count counts every image (top-5 of a 3-class problem is 100%)."""
    top = probs.topk(min(max(ks), probs.shape[1]), dim=1).indices
    match = top == labels[:, None]
    return torch.stack([match[:, :k].any(dim=1) for k in ks])


def class_counts(hits: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """int64 [1 + len(ks), num_classes]: images per class, then each k's hits per class."""
    rows = [torch.bincount(labels, minlength=num_classes)]
    rows += [torch.bincount(labels[h], minlength=num_classes) for h in hits]
    return torch.stack(rows)


def label_map(dataset_classes: Sequence[tuple[str, str]], model_classes: Sequence[tuple[str, str]], path) -> torch.Tensor:
    """Dataset label -> network output index, matched by WordNet id (so a 10-class subset of
    ImageNet scores against a 1000-class network)."""
    index = {wnid: i for i, (wnid, _) in enumerate(model_classes)}
    missing = [wnid for wnid, _ in dataset_classes if wnid not in index]
    if missing:
        raise InputError(
            f"{path}: {len(missing)} of the dataset's classes (e.g. {missing[0]}) are not among the network's "
            f"{len(model_classes)} classes; evaluate with a checkpoint trained on these classes"
        )
    return torch.tensor([index[wnid] for wnid, _ in dataset_classes], dtype=torch.long)


# --------------------------------------------------------------------------------------------
# The loop


class SplitImages(Dataset):
    """Stored 256x256 images of `indices` with their labels mapped to network outputs."""

    def __init__(self, reader: SplitReader, indices: range, labels: np.ndarray):
        self.reader, self.indices, self.labels = reader, indices, labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = self.indices[i]
        # Decoded JPEGs come back read-only (Pillow's buffer); torch wants writable memory.
        return torch.from_numpy(np.require(self.reader.image(j), requirements="CW")), int(self.labels[j])


def default_workers() -> int:
    """The machine's cores shared among torchrun's processes on it, at most 8 per process."""
    return max(1, min(8, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def score_split(
    classifier: Classifier,
    reader: SplitReader,
    indices: range,
    labels: np.ndarray,
    ten_crop: bool = False,
    batch_size: int = 128,
    workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (probabilities [B, classes], network labels [B]) on the device, batch by batch."""
    loader = DataLoader(
        SplitImages(reader, indices, labels),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=classifier.device.type == "cuda",
        prefetch_factor=4 if workers else None,
    )
    try:
        for images, batch_labels in loader:
            probs = classifier.probabilities(images, ten_crop, max_crops=batch_size)
            yield probs, batch_labels.to(classifier.device, non_blocking=True)
    except AlexnetError as e:  # from a worker: DataLoader puts the worker's traceback in the message
        raise type(e)(original_message(e)) from None


@dataclass
class EvalResult:
    images: int
    crops: int
    top1_correct: int
    top5_correct: int
    loss: float  # mean cross-entropy of the (averaged) softmax
    seconds: float
    world_size: int
    counts: torch.Tensor = field(repr=False)  # class_counts over the dataset's classes, [3, classes]
    classes: list[tuple[int, str, str]] = field(repr=False)  # (network index, wnid, name) per dataset class
    is_main: bool = True  # only rank 0 prints and writes

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> dict[str, Any]:
        """The --json object: accuracies and errors in percent, counts, speed."""
        top1, top5 = 100.0 * self.top1_correct / self.images, 100.0 * self.top5_correct / self.images
        return {
            "top1": top1,
            "top5": top5,
            "top1_error": 100.0 - top1,
            "top5_error": 100.0 - top5,
            "loss": self.loss,
            "images": self.images,
            "crops": self.crops,
            "top1_correct": self.top1_correct,
            "top5_correct": self.top5_correct,
            "images_per_s": self.images_per_s,
            "seconds": self.seconds,
            "world_size": self.world_size,
        }

    def per_class(self) -> list[dict[str, Any]]:
        """One row per dataset class, accuracies in percent (empty for a class without images)."""
        rows = []
        for (index, wnid, name), (n, top1, top5) in zip(self.classes, self.counts.T.tolist()):
            pct = [100.0 * c / n if n else "" for c in (top1, top5)]
            rows.append({"index": index, "wnid": wnid, "name": name, "images": n, "top1": pct[0], "top5": pct[1]})
        return rows


def evaluate(
    classifier: Classifier, dataset: PreparedDataset, config: EvalConfig, info: distributed.DistInfo = distributed.DistInfo()
) -> EvalResult:
    """Score this rank's share of the split and sum the counts over all ranks."""
    reader = dataset.split(config.split)
    if len(reader) == 0:
        raise InputError(f"{dataset.path}: split '{config.split}' has no images")
    mapping = label_map(dataset.classes, classifier.classes, dataset.path)
    labels = mapping.numpy()[reader.labels]
    indices = distributed.shard_range(len(reader), info.rank, info.world_size)
    num_classes = len(classifier.classes)
    device = classifier.device
    counts = torch.zeros(1 + len(TOPK), num_classes, dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    workers = default_workers() if config.workers is None else config.workers
    start = time.perf_counter()
    for probs, y in score_split(classifier, reader, indices, labels, config.ten_crop, config.batch_size, workers):
        counts += class_counts(topk_hits(probs, y), y, num_classes)
        # float32 softmax can underflow to 0 for a confidently wrong image: cap its loss at ~87.
        p = probs.gather(1, y[:, None]).clamp_min(torch.finfo(torch.float32).tiny)
        loss += -p.double().log().sum()
    distributed.all_reduce_sum(counts)
    distributed.all_reduce_sum(loss)
    seconds = time.perf_counter() - start
    reader.close()
    counts = counts.cpu()
    images = int(counts[0].sum())
    names = [(int(mapping[i]), wnid, name) for i, (wnid, name) in enumerate(dataset.classes)]
    return EvalResult(
        images=images,
        crops=10 if config.ten_crop else 1,
        top1_correct=int(counts[1].sum()),
        top5_correct=int(counts[2].sum()),
        loss=float(loss) / images,
        seconds=seconds,
        world_size=info.world_size,
        counts=counts[:, mapping],
        classes=names,
        is_main=info.is_main,
    )


def run_eval(
    config: EvalConfig,
    checkpoint: str | os.PathLike | None = None,
    arch: str | None = None,
    weights: str | os.PathLike | None = None,
) -> EvalResult:
    """`alexnet eval`: join torchrun's process group if launched by it, load, score, reduce."""
    gpus = resolve_gpus(config.gpus)
    dataset = PreparedDataset(config.data)
    info = distributed.init(backend="nccl" if gpus else "gloo")
    torch.backends.cudnn.benchmark = True  # eval's batches all have one shape: tune the kernels once
    try:
        classifier = load_classifier(devices_for(gpus, info.local_rank), checkpoint, arch, weights)
        return evaluate(classifier, dataset, config, info)
    except RuntimeError as e:
        if info.enabled:
            raise distributed.peer_failure(e, info.rank, "rerun the same command") from e
        raise
    finally:
        distributed.shutdown()


def write_per_class_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Per-class accuracy (index, wnid, name, images, top1, top5; percent), written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["index", "wnid", "name", "images", "top1", "top5"])
        writer.writeheader()
        writer.writerows(rows)
