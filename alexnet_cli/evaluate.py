"""Section 4.1's test: top-1 and top-5 error over a prepared split, from the center 224x224 patch
or from the average softmax of ten patches (four corners, center, and their reflections).

Images travel from the shards as uint8 256x256 NHWC batches (the loader's workers read and
decode in parallel); normalisation, cropping and the forward pass run on the device
(classifier.Classifier). Under torchrun each rank scores a contiguous share of the split
(`loader.val_batches`: every image exactly once) and the integer counts are summed, so the
result equals the single-process one.
"""

from __future__ import annotations

import csv
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

import torch

from alexnet_cli import distributed
from alexnet_cli.accuracy import TOPK, class_counts, topk_correct
from alexnet_cli.classifier import Classifier, load_classifier
from alexnet_cli.config import EvalConfig
from alexnet_cli.data import loader
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.format.reader import SplitReader
from alexnet_cli.data.gpu_decode import DECODES, GpuDecoder
from alexnet_cli.devices import placement, usable_cores
from alexnet_cli.errors import InputError
from alexnet_cli.fileio import atomic_path


def label_map(
    dataset_classes: Sequence[tuple[str, str]], model_classes: Sequence[tuple[str, str]], path
) -> torch.Tensor:
    """Dataset label -> network output index, matched by WordNet id (so a 10-class subset of
    ImageNet scores against a 1000-class network)."""
    index = {wnid: i for i, (wnid, _) in enumerate(model_classes)}
    missing = [wnid for wnid, _ in dataset_classes if wnid not in index]
    if missing:
        raise InputError(
            f"{path}: {len(missing)} of the dataset's classes (e.g. {missing[0]}) "
            "are not among the network's "
            f"{len(model_classes)} classes; evaluate with a checkpoint trained on these classes"
        )
    return torch.tensor([index[wnid] for wnid, _ in dataset_classes], dtype=torch.long)


def loader_workers() -> int:
    """The cores this process may use, shared among torchrun's processes on the node, at most 8."""
    return max(1, min(8, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", 1))))


def score_split(
    classifier: Classifier,
    reader: SplitReader,
    batches: list[loader.LocalBatch],
    ten_crop: bool = False,
    batch_size: int = 128,
    workers: int = 0,
    decode: str = "cpu",
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (probabilities [B, classes], the dataset's labels [B]) on the device, batch by batch.
    Forward passes take at most `batch_size` crops. decode="gpu": the workers read the stored
    JPEGs and the device decodes them (data/gpu_decode.py; refused without CUDA)."""
    # On CUDA the images go to the device from the workers' buffers (DMA); on the CPU the
    # forward pass reads them there, borrowed until the next batch.
    cuda = classifier.device.type == "cuda"
    if decode == "gpu":
        take = GpuDecoder(classifier.device)
    else:
        take = loader.ToDevice(classifier.device) if cuda else None
    stored_images = loader.StoredImages(reader, train=False, decode=decode != "gpu")
    with closing(
        loader.batch_loader(stored_images, batches, workers, pin_memory=cuda, take=take, borrow=True)
    ) as stored:
        for batch in stored:
            probs = classifier.probabilities(batch["images"], ten_crop, max_crops=batch_size)
            yield probs, batch["labels"].to(classifier.device, non_blocking=True)


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
        for (index, wnid, name), (n, top1, top5) in zip(self.classes, self.counts.T.tolist(), strict=True):
            pct = [100.0 * c / n if n else "" for c in (top1, top5)]
            rows.append(
                {"index": index, "wnid": wnid, "name": name, "images": n, "top1": pct[0], "top5": pct[1]}
            )
        return rows


def evaluate(
    classifier: Classifier,
    dataset: PreparedDataset,
    config: EvalConfig,
    info: distributed.DistInfo = distributed.DistInfo(),
) -> EvalResult:
    """Score this rank's share of the split and sum the counts over all ranks."""
    reader = dataset.split(config.split)
    if len(reader) == 0:
        raise InputError(f"{dataset.path}: split '{config.split}' has no images")
    device = classifier.device
    mapping = label_map(dataset.classes, classifier.classes, dataset.path)
    to_network = mapping.to(device)
    num_classes = len(classifier.classes)
    counts = torch.zeros(1 + len(TOPK), num_classes, dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    batches = loader.val_batches(len(reader), config.batch_size, None, info.rank, info.world_size)
    workers = loader_workers() if config.workers is None else config.workers
    start = time.perf_counter()
    for probs, labels in score_split(
        classifier, reader, batches, config.ten_crop, config.batch_size, workers, config.decode
    ):
        y = to_network[labels]
        counts += class_counts(topk_correct(probs, y), y, num_classes)
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
    if config.decode not in DECODES:
        raise InputError(f"--decode {config.decode}: choose one of {', '.join(DECODES)}")
    dataset = PreparedDataset(config.data)
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    place = placement(config.gpus, local_rank=local_rank)  # checked before joining the group
    info = distributed.init(backend="nccl" if place.device.type == "cuda" else "gloo")
    torch.backends.cudnn.benchmark = True  # eval's batches all have one shape: tune the kernels once
    try:
        classifier = load_classifier(place.devices, checkpoint, arch, weights)
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
