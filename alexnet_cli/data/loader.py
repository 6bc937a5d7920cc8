"""The input pipeline: which images each rank reads in each step, and the one Dataset that
reads them from the HDF5 shards (for training, validation and `alexnet eval`).

Order. An epoch is a permutation of the training images drawn from (seed, epoch), cut into
global batches of `batch_size`; the last batch keeps the remainder, so every image is used
exactly once per epoch. Each rank takes its contiguous share of every global batch
(`distributed.shard_range`), so all ranks run the same number of steps and together see each
image once (no DistributedSampler padding). Resuming at step k skips k batches of the same
permutation without reading them.

Reading. A DataLoader item is one local batch (a list of indices). Workers read each image
as one contiguous slice of its shard, decode it (format.codec: HWC, into a reused buffer) and
for training cut and reflect the uint8 patch into the batch (augment.crop_flip). Batches stay
NHWC end to end: on the device `permute(0, 3, 1, 2)` makes them channels_last NCHW tensors
without a transposing copy, and the float work (mean, lighting) happens there. Shards are
opened lazily in each worker: the parent never opens them, so no HDF5 handle crosses a fork.
"""

from __future__ import annotations

import atexit
import math
import weakref
from collections.abc import Generator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet_cli import preemption, randomness
from alexnet_cli.config import LIGHTING_STD
from alexnet_cli.data import augment
from alexnet_cli.data.format.reader import SplitReader
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.data.transforms import CROP
from alexnet_cli.distributed import shard_range
from alexnet_cli.errors import AlexnetError
from alexnet_cli.memory import release_free_heap


def subset(n: int, limit: int | None) -> np.ndarray:
    """Indices of at most `limit` images spread evenly over the split (prep writes a split
    class by class, so an even spread keeps every class)."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.arange(limit) * n // limit


def steps_per_epoch(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def epoch_order(indices: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """The images of one epoch in training order: a permutation drawn from (seed, epoch)."""
    return randomness.generator(randomness.ORDER, seed, epoch).permutation(indices)


@dataclass(frozen=True)
class LocalBatch:
    """One step's work for one rank: its share of the global batch, and the global size
    (the loss divides by it so that DDP's mean over ranks is the mean over the batch)."""

    epoch: int
    indices: np.ndarray
    global_size: int


def epoch_batches(
    indices: np.ndarray,
    batch_size: int,
    seed: int,
    epoch: int,
    rank: int = 0,
    world_size: int = 1,
    start_step: int = 0,
) -> list[LocalBatch]:
    """This rank's batches of `epoch`, from step `start_step` on."""
    order = epoch_order(indices, seed, epoch)
    out = []
    for step in range(start_step, steps_per_epoch(len(order), batch_size)):
        batch = order[step * batch_size : (step + 1) * batch_size]
        share = shard_range(len(batch), rank, world_size)
        out.append(LocalBatch(epoch, batch[share.start : share.stop], len(batch)))
    return out


def val_batches(
    n: int, batch_size: int, limit: int | None = None, rank: int = 0, world_size: int = 1
) -> list[LocalBatch]:
    """This rank's contiguous share of the evaluation images (each counted exactly once)."""
    indices = subset(n, limit)
    share = shard_range(len(indices), rank, world_size)
    mine = indices[share.start : share.stop]
    return [
        LocalBatch(0, mine[k : k + batch_size], len(mine[k : k + batch_size]))
        for k in range(0, len(mine), batch_size)
    ]


class StoredImages(Dataset):
    """Local batches of a split's images as uint8 NHWC tensors.

    train: `{images [n, 224, 224, 3], labels, top, left, flip, alpha, global_size}`, each
    image's patch and lighting drawn by augment.draw(seed, epoch, index). Otherwise:
    `{images [n, 256, 256, 3], labels, global_size}`, whole stored images (the device
    normalises and crops them: transforms.network_input).
    """

    def __init__(self, reader: SplitReader, train: bool, seed: int = 0, lighting_std: float = LIGHTING_STD):
        self.reader, self.train, self.seed, self.lighting_std = reader, train, seed, lighting_std
        self._decoded: np.ndarray | None = None  # one image's decode buffer, reused (made per process)

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, batch: LocalBatch) -> dict[str, torch.Tensor]:
        n = len(batch.indices)
        size = CROP if self.train else IMAGE_SIZE
        images = torch.empty((n, size, size, 3), dtype=torch.uint8)
        out = {
            "images": images,
            "labels": torch.from_numpy(self.reader.labels[batch.indices].astype(np.int64)),
            "global_size": batch.global_size,
        }
        if not self.train:
            for j, i in enumerate(batch.indices):
                self.reader.image(int(i), out=images[j].numpy())
            return out
        if self._decoded is None:
            self._decoded = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        decoded = torch.from_numpy(self._decoded)
        draws = [augment.draw(self.seed, batch.epoch, int(i), self.lighting_std) for i in batch.indices]
        for j, (i, d) in enumerate(zip(batch.indices, draws, strict=True)):
            self.reader.image(int(i), out=self._decoded)
            images[j] = augment.crop_flip(decoded, d.top, d.left, d.flip)
        out["top"] = torch.tensor([d.top for d in draws], dtype=torch.int64)
        out["left"] = torch.tensor([d.left for d in draws], dtype=torch.int64)
        out["flip"] = torch.tensor([d.flip for d in draws], dtype=torch.bool)
        out["alpha"] = torch.tensor([d.alpha for d in draws], dtype=torch.float32).reshape(n, 3)
        return out

    def __getstate__(self):  # pickled into spawned workers: the buffer is made anew there
        return {**self.__dict__, "_decoded": None}


# Iterators whose workers are running. Workers ignore SIGTERM, which is how multiprocessing's
# exit handler stops leftover children before joining them: one left running (an iterator kept
# alive by a traceback, or never closed) would hang the exit forever. This handler is
# registered after multiprocessing's, so it runs first and stops them for good.
_running: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_running_workers() -> None:
    for iterator in list(_running):
        stop_workers(iterator)


def batch_loader(
    images: StoredImages, batches: list[LocalBatch], workers: int, pin_memory: bool = False
) -> Generator[dict[str, torch.Tensor], None, None]:
    """Iterate `batches` in order, `workers` processes decoding ahead of the training step.
    A consumer that may stop early closes it (contextlib.closing) to stop the workers at once."""
    data = DataLoader(
        images,
        sampler=batches,
        batch_size=None,  # each item already is a batch
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=preemption.ignore_in_worker if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    if workers:
        release_free_heap()
        with preemption.blocked_while_forking():
            batches_in_order = iter(data)  # forks the workers
        _running.add(batches_in_order)
    else:
        batches_in_order = iter(data)
    try:
        yield from batches_in_order
    except AlexnetError as e:
        raise type(e)(original_message(e)) from None
    finally:
        # Shut the workers down now, not whenever the iterator is collected: an error from a
        # worker keeps it alive (its traceback holds the iterator) until after multiprocessing's
        # exit handler, whose SIGTERM these workers ignore, so the process would never exit.
        stop_workers(batches_in_order)
        del batches_in_order


def stop_workers(iterator: object) -> None:
    """Shut down a DataLoader iterator's workers now (torch's orderly shutdown), killing any
    that do not exit: they ignore SIGTERM, the signal torch and multiprocessing would use.

    The one place that uses DataLoader's private API (`_shutdown_workers`, `_workers`, present
    from torch 1.x to 2.14): tests/test_loader.py::test_stop_workers_still_reaches_the_workers
    fails if a torch release renames them."""
    shutdown = getattr(iterator, "_shutdown_workers", None)  # absent without workers
    if shutdown is not None:
        shutdown()
    for worker in getattr(iterator, "_workers", ()):
        if worker.is_alive():
            worker.kill()
            worker.join()


def original_message(e: Exception) -> str:
    """DataLoader re-raises a worker's exception with the worker's traceback as its message;
    the original message is the last line, after the exception's name."""
    last = str(e).strip().splitlines()[-1]
    prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
    return last[len(prefix) :] if last.startswith(prefix) else last
