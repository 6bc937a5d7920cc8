"""The input pipeline: which images each rank trains on in each step, read from the HDF5 shards.

Order. An epoch is a permutation of the training images drawn from (seed, epoch), cut into
global batches of `batch_size`; the last batch keeps the remainder, so every image is used
exactly once per epoch. Each rank takes its contiguous share of every global batch
(`distributed.shard_range`), so all ranks run the same number of steps and together see each
image once (no DistributedSampler padding). Resuming at step k skips k batches of the same
permutation without reading them.

Reading. A DataLoader item is one local batch (a list of indices). Workers read each image
as one contiguous slice of its shard (`SplitReader.read_encoded`), decode it channel-first,
and for training cut and reflect the uint8 patch (augment.crop_flip); the float work happens on the
training device. Shards are opened lazily in each worker: the parent never opens them, so no
HDF5 handle crosses a fork.
"""

from __future__ import annotations

import atexit
import ctypes
import math
import signal
import weakref
from dataclasses import dataclass
from typing import Generator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

try:
    from torchvision.io import ImageReadMode, decode_jpeg
except ImportError:  # torchvision deprecated its decoders in 0.29; Pillow gives the same pixels
    decode_jpeg = None

from alexnet_cli.data import augment
from alexnet_cli.data.format import IMAGE_SIZE, SplitReader, decode_image
from alexnet_cli.data.transforms import CROP
from alexnet_cli.distributed import shard_range
from alexnet_cli.errors import AlexnetError, InputError

ORDER_STREAM = 2  # see augment.AUGMENT_STREAM


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
    return np.random.default_rng((ORDER_STREAM, seed, epoch)).permutation(indices)


@dataclass(frozen=True)
class LocalBatch:
    """One step's work for one rank: its share of the global batch, and the global size
    (the loss divides by it so that DDP's mean over ranks is the mean over the batch)."""

    epoch: int
    indices: np.ndarray
    global_size: int


def epoch_batches(indices: np.ndarray, batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, start_step: int = 0) -> list[LocalBatch]:
    """This rank's batches of `epoch`, from step `start_step` on."""
    order = epoch_order(indices, seed, epoch)
    out = []
    for step in range(start_step, steps_per_epoch(len(order), batch_size)):
        batch = order[step * batch_size : (step + 1) * batch_size]
        share = shard_range(len(batch), rank, world_size)
        out.append(LocalBatch(epoch, batch[share.start : share.stop], len(batch)))
    return out


class StoredImages(Dataset):
    """Local batches of a split's images as uint8 tensors.

    train: `{images [n, 3, 224, 224], labels, top, left, flip, alpha}`, each image's patch and
    lighting drawn by augment.draw(seed, epoch, index). Evaluation: `{images [n, 3, 256, 256],
    labels}`, whole stored images (transforms center-crop them on the device).
    """

    def __init__(self, reader: SplitReader, train: bool, seed: int = 0, lighting_std: float = augment.LIGHTING_STD):
        self.reader, self.train, self.seed, self.lighting_std = reader, train, seed, lighting_std

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, batch: LocalBatch) -> dict[str, torch.Tensor]:
        n = len(batch.indices)
        size = CROP if self.train else IMAGE_SIZE
        images = torch.empty((n, 3, size, size), dtype=torch.uint8)
        draws = []
        for j, i in enumerate(batch.indices):
            image = self.read(int(i))
            if self.train:
                d = augment.draw(self.seed, batch.epoch, int(i), self.lighting_std)
                image = augment.crop_flip(image, d.top, d.left, d.flip)
                draws.append(d)
            images[j] = image
        out = {
            "images": images,
            "labels": torch.from_numpy(self.reader.labels[batch.indices].astype(np.int64)),
            "global_size": batch.global_size,
        }
        if self.train:
            out["top"] = torch.tensor([d.top for d in draws], dtype=torch.int64)
            out["left"] = torch.tensor([d.left for d in draws], dtype=torch.int64)
            out["flip"] = torch.tensor([d.flip for d in draws], dtype=torch.bool)
            out["alpha"] = torch.tensor([d.alpha for d in draws], dtype=torch.float32).reshape(n, 3)
        return out

    def read(self, i: int) -> torch.Tensor:
        """Image i as [3, 256, 256] uint8; a damaged shard is an InputError naming it."""
        try:
            return decode_chw(*self.reader.read_encoded(i))
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            shard = self.reader.shard_paths[self.reader.locate(i)[0]]
            raise InputError(
                f"{shard}: image {i} of the split could not be read ({type(e).__name__}: {str(e)[:120]}); "
                "the shard is damaged: rerun `alexnet prep`"
            ) from None


def decode_chw(data: np.ndarray, codec: str) -> torch.Tensor:
    """A shard's stored bytes -> [3, 256, 256] uint8: format.decode_image's pixels, channel-first.
    JPEG goes through torchvision's libjpeg-turbo decoder, which writes CHW directly (a
    transposing copy cost more than the decode) and gives Pillow's pixels exactly (tested)."""
    if codec == "jpeg" and decode_jpeg is not None:
        return decode_jpeg(torch.from_numpy(data), mode=ImageReadMode.RGB)
    return torch.from_numpy(np.ascontiguousarray(decode_image(data, codec).transpose(2, 0, 1)))


# A preemption signal is the main process's to handle (finish the step, checkpoint); a worker
# killed by it would turn a clean stop into a "worker exited unexpectedly" crash. Workers are
# forked with these signals blocked and ignore them before unblocking, so there is no window.
PREEMPTION_SIGNALS = {signal.SIGTERM, signal.SIGUSR1}


# Iterators whose workers are running. Workers ignore SIGTERM, which is how multiprocessing's
# exit handler stops leftover children before joining them: one left running (an iterator kept
# alive by a traceback, or never closed) would hang the exit forever. This handler is
# registered after multiprocessing's, so it runs first and stops them for good.
_running: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_running_workers() -> None:
    for iterator in list(_running):
        stop_workers(iterator)


def _worker_init(_: int) -> None:
    for s in PREEMPTION_SIGNALS:
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, PREEMPTION_SIGNALS)


def batch_loader(images: StoredImages, batches: list[LocalBatch], workers: int,
                 pin_memory: bool = False) -> Generator[dict[str, torch.Tensor], None, None]:
    """Iterate `batches` in order, `workers` processes decoding ahead of the training step.
    A consumer that may stop early closes it (contextlib.closing) to stop the workers at once."""
    data = DataLoader(
        images,
        sampler=batches,
        batch_size=None,  # each item already is a batch
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_worker_init if workers else None,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    if workers:
        release_free_heap()
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, PREEMPTION_SIGNALS) if workers else None
    try:
        batches_in_order = iter(data)  # forks the workers
        if workers:
            _running.add(batches_in_order)
    finally:
        if blocked is not None:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal that came meanwhile is delivered now
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


def release_free_heap() -> None:
    """Give the heap memory glibc keeps after frees back to the OS (a no-op elsewhere). Done
    before forking workers: train.keep_freed_memory lets the main process keep up to 1 GiB of
    freed heap, and each worker forked from it would inherit those pages and, as the main process
    reuses them, end up with its own copy (measured: workers' memory growing by 1-2 GiB over
    10 epochs; benchmarks/loader_rss.py)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def stop_workers(iterator: object) -> None:
    """Shut down a DataLoader iterator's workers now (torch's orderly shutdown), killing any
    that do not exit: they ignore SIGTERM, the signal torch and multiprocessing would use."""
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
    return last[len(prefix):] if last.startswith(prefix) else last


def val_batches(n: int, batch_size: int, limit: int | None, rank: int = 0, world_size: int = 1) -> list[LocalBatch]:
    """This rank's contiguous share of the validation images (each counted exactly once)."""
    indices = subset(n, limit)
    share = shard_range(len(indices), rank, world_size)
    mine = indices[share.start : share.stop]
    return [LocalBatch(0, mine[k : k + batch_size], len(mine[k : k + batch_size])) for k in range(0, len(mine), batch_size)]
