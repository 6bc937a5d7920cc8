"""What training reads: the train and val batches of a prepared dataset, or one generated
batch (`--synthetic`), with the mean image and PCA that augment.train_input needs."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from alexnet_cli.config import TrainConfig
from alexnet_cli.data import augment, loader
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.gpu_decode import GpuDecoder
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.data.transforms import CROP, preprocess_from_stats
from alexnet_cli.distributed import DistInfo
from alexnet_cli.errors import InputError, no_dataset


class PreparedInputs:
    """The train and val splits of prep's OUT.h5, with its mean image and PCA."""

    has_val = True

    def __init__(
        self,
        data: str | None,
        batch_size: int,
        seed: int,
        lighting_std: float,
        limit: int | None,
        workers: int,
        rank: DistInfo,
        device: torch.device,
        decode: str = "cpu",
        crop_flip: bool = True,
    ):
        if not data:
            raise no_dataset()
        # --decode gpu: workers read the JPEGs, the device decodes them (refused without CUDA).
        # A GPU fed by CPU decoding takes whole images from the workers' buffers and cuts the
        # patches itself: the workers only read and decode. The CPU borrows the batches.
        crop_on_device = device.type == "cuda" and decode != "gpu"
        if decode == "gpu":
            self.take = self.train_take = GpuDecoder(device)
        elif crop_on_device:
            self.take, self.train_take = loader.ToDevice(device), loader.ToDevice(device, crop=True)
        else:
            self.take = self.train_take = None
        dataset = PreparedDataset(data)
        if dataset.stats is None:
            raise InputError(f"{data}: has no training-set mean and PCA; prep it with its train split")
        self.batch_size, self.seed, self.limit, self.workers, self.rank = (
            batch_size,
            seed,
            limit,
            workers,
            rank,
        )
        self.classes = [tuple(c) for c in dataset.classes]
        self.preprocess: dict[str, Any] = preprocess_from_stats(dataset.stats.mean_image)
        self.pca = augment.pca_from_stats(dataset.stats.eigenvalues, dataset.stats.eigenvectors)
        train_split, val_split = dataset.split("train"), dataset.split("val")
        for shard in train_split.shard_paths + val_split.shard_paths:
            if not shard.is_file():  # fail now, not in a loader worker an epoch later
                raise InputError(f"{shard}: shard missing; restore it or rerun `alexnet prep`")
        on_cpu = decode != "gpu"
        self.train_images = loader.StoredImages(
            train_split,
            train=True,
            seed=seed,
            lighting_std=lighting_std,
            decode=on_cpu,
            crop=not crop_on_device,
            crop_flip=crop_flip,
        )
        self.val_images = loader.StoredImages(val_split, train=False, decode=on_cpu)
        self.train_indices = loader.subset(len(train_split), limit)
        if len(self.train_indices) == 0:
            raise InputError(f"{data}: the train split is empty; prep it with images")
        self.pin = device.type == "cuda"

    def steps_per_epoch(self) -> int:
        return loader.steps_per_epoch(len(self.train_indices), self.batch_size)

    def train_batches(self, epoch: int, start_step: int) -> Iterable[dict[str, torch.Tensor]]:
        batches = loader.epoch_batches(
            self.train_indices,
            self.batch_size,
            self.seed,
            epoch,
            self.rank.rank,
            self.rank.world_size,
            start_step,
        )
        return loader.batch_loader(
            self.train_images, batches, self.workers, self.pin, self.train_take, borrow=True
        )

    def val_batches(self) -> Iterable[dict[str, torch.Tensor]]:
        batches = loader.val_batches(
            len(self.val_images), self.batch_size, self.limit, self.rank.rank, self.rank.world_size
        )
        return loader.batch_loader(self.val_images, batches, self.workers, self.pin, self.take, borrow=True)


class SyntheticInputs:
    """One batch of random patches made once on the device and reused: measures the model and
    the device-side augmentation, not the input pipeline. No validation."""

    has_val = False

    def __init__(
        self,
        batch_size: int,
        num_classes: int,
        seed: int,
        lighting_std: float,
        limit: int | None,
        device: torch.device,
        world_size: int = 1,
    ):
        self.batch_size, self.limit = batch_size, limit
        self.classes = [(f"synthetic{c:04d}", f"class {c}") for c in range(num_classes)]
        self.preprocess = preprocess_from_stats(np.full((IMAGE_SIZE, IMAGE_SIZE, 3), 127.5, np.float32))
        self.pca = augment.pca_from_stats([1 / 12] * 3, np.eye(3))  # uniform pixels: variance 1/12
        g = torch.Generator().manual_seed(seed)
        n, span = batch_size, IMAGE_SIZE - CROP + 1
        self.batch = {
            "images": torch.randint(0, 256, (n, CROP, CROP, 3), dtype=torch.uint8, generator=g).to(device),
            "labels": torch.randint(0, num_classes, (n,), generator=g).to(device),
            "top": torch.randint(0, span, (n,), generator=g),
            "left": torch.randint(0, span, (n,), generator=g),
            "flip": torch.rand(n, generator=g) < 0.5,
            "alpha": torch.randn(n, 3, generator=g) * lighting_std,
            "global_size": n * world_size,  # each rank trains on its own copy
        }

    def steps_per_epoch(self) -> int:
        return loader.steps_per_epoch(self.limit or 20 * self.batch_size, self.batch_size)

    def train_batches(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(start_step, self.steps_per_epoch()):
            yield self.batch

    def val_batches(self) -> Iterable[dict[str, torch.Tensor]]:
        return ()


def training_inputs(
    cfg: TrainConfig, rank: DistInfo, device: torch.device
) -> PreparedInputs | SyntheticInputs:
    """What `alexnet train` reads: the prepared dataset, or with --synthetic one generated batch."""
    if cfg.synthetic:
        return SyntheticInputs(
            cfg.batch_size, cfg.num_classes, cfg.seed, cfg.lighting_std, cfg.limit, device, rank.world_size
        )
    return PreparedInputs(
        cfg.data,
        cfg.batch_size,
        cfg.seed,
        cfg.lighting_std,
        cfg.limit,
        cfg.workers,
        rank,
        device,
        cfg.decode,
        cfg.crop_flip,
    )
