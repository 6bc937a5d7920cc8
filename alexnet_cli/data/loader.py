"""The input pipeline: which images each rank reads in each step, and the one Dataset that
reads them from the HDF5 shards (for training, validation and `alexnet eval`).

Order. An epoch is a permutation of the training images drawn from (seed, epoch), cut into
global batches of `batch_size`; the last batch keeps the remainder, so every image is used
exactly once per epoch. Each rank takes its contiguous share of every global batch
(`distributed.shard_range`), so all ranks run the same number of steps and together see each
image once (no DistributedSampler padding). Resuming at step k skips k batches of the same
permutation without reading them.

Reading. A DataLoader item is one local batch (a list of indices). Workers draw the batch's
augmentation at once (augment.draws), read each image as one contiguous slice of its shard,
decode it (format.codec: HWC, into a reused buffer) and for training cut and reflect the uint8
patch straight into the batch's shared-memory buffer (SharedBatches). The main process copies
the batch out, or lends the buffer to a consumer that is done with it before it asks for the
next batch (`borrow`), or a CUDA device copies it from there by DMA (ToDevice). Batches stay
NHWC end to end: on the device `permute(0, 3, 1, 2)` makes them channels_last NCHW tensors
without a transposing copy, and the float work (mean, lighting) happens there. Shards are
opened lazily in each worker: the parent never opens them, so no HDF5 handle crosses a fork.
"""

from __future__ import annotations

import atexit
import math
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from alexnet_cli import preemption, randomness
from alexnet_cli.config import LIGHTING_STD
from alexnet_cli.data import augment
from alexnet_cli.data.format.reader import SplitReader
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.data.transforms import CROP, channels_last_view
from alexnet_cli.distributed import shard_range
from alexnet_cli.errors import AlexnetError
from alexnet_cli.memory import keep_freed_memory, release_free_heap


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
    image's patch and lighting drawn by augment.draw(seed, epoch, index) (the center patch,
    unreflected, without `crop_flip`). Otherwise:
    `{images [n, 256, 256, 3], labels, global_size}`, whole stored images (the device
    normalises and crops them: transforms.network_input).

    decode=False: the batch holds each image's stored JPEG bytes (`encoded`, concatenated, and
    `offsets`) instead of `images`, for the training GPU to decode (data/gpu_decode.py).
    crop=False (training): whole decoded images with the draws, for the training GPU to cut
    and reflect (ToDevice): a worker then does nothing but read and decode.
    """

    def __init__(
        self,
        reader: SplitReader,
        train: bool,
        seed: int = 0,
        lighting_std: float = LIGHTING_STD,
        decode: bool = True,
        crop: bool = True,
        crop_flip: bool = True,
    ):
        self.reader, self.train, self.seed, self.lighting_std = reader, train, seed, lighting_std
        self.decode, self.crop, self.crop_flip = decode, crop, crop_flip
        self._decoded: np.ndarray | None = None  # one image's decode buffer, reused (made per process)

    def __len__(self) -> int:
        return len(self.reader)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        size = CROP if self.train and self.crop else IMAGE_SIZE
        return (size, size, 3)

    def space_bytes(self, n: int) -> int:
        """The bytes `fill` needs for n images: their pixels, or their stored bytes, which
        SplitReader.read_encoded_into keeps within a whole image's pixels each."""
        image = IMAGE_SIZE * IMAGE_SIZE * 3 if not self.decode else int(np.prod(self.image_shape))
        return max(n, 1) * image

    def __getitem__(self, batch: LocalBatch) -> dict[str, torch.Tensor]:
        """The batch read in this process, into fresh memory."""
        space = np.empty(self.space_bytes(len(batch.indices)), np.uint8)
        return as_tensors(self.fill(batch, space), space, self.image_shape)

    def fill(self, batch: LocalBatch, space: np.ndarray) -> dict[str, Any]:
        """Read `batch` into the bytes `space`: the images, uint8 [n, *image_shape] (or their
        stored bytes, concatenated, with decode=False); returns what else the batch holds, as
        NumPy arrays."""
        indices = batch.indices.tolist()
        out: dict[str, Any] = {
            "labels": self.reader.labels[batch.indices].astype(np.int64),
            "global_size": batch.global_size,
        }
        if self.train:
            d = augment.draws(
                self.seed, batch.epoch, batch.indices, self.lighting_std, crop_flip=self.crop_flip
            )
            out.update(top=d.top, left=d.left, flip=d.flip, alpha=d.alpha.astype(np.float32))
        if not self.decode:
            out["offsets"] = self.reader.read_encoded_into(indices, space)
            out["indices"] = batch.indices  # for the device decoder's errors
            return out
        images = space[: len(indices) * int(np.prod(self.image_shape))].reshape(-1, *self.image_shape)
        if not self.train or not self.crop:
            for j, i in enumerate(indices):
                self.reader.image(i, out=images[j])
            return out
        if self._decoded is None:
            self._decoded = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
        decoded, whole = self._decoded, torch.from_numpy(self._decoded)
        patches = torch.from_numpy(images)
        draws = zip(indices, d.top.tolist(), d.left.tolist(), d.flip.tolist(), strict=True)
        for j, (i, top, left, flip) in enumerate(draws):
            self.reader.image(i, out=decoded)
            if flip:  # torch reflects 3-byte pixels 9x faster than a NumPy negative-stride copy
                patches[j].copy_(augment.crop_flip(whole, top, left, True))
            else:  # and NumPy copies a plain patch 1.6x faster than torch
                images[j] = decoded[top : top + CROP, left : left + CROP]
        return out

    def __getstate__(self):  # pickled into spawned workers: the buffer is made anew there
        return {**self.__dict__, "_decoded": None}


def as_tensors(
    batch: dict[str, Any], space: np.ndarray | torch.Tensor, image_shape: tuple[int, int, int]
) -> dict[str, Any]:
    """A batch from StoredImages.fill, with the bytes `space` it was read into, as tensors."""
    out = {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in batch.items()}
    space = torch.as_tensor(space)
    if "offsets" in out:
        out["encoded"] = space[: int(out["offsets"][-1])]
    else:
        shape = (len(out["labels"]), *image_shape)
        out["images"] = space[: math.prod(shape)].view(shape)
    return out


class SharedBatches:
    """Batch buffers in shared memory that loader workers fill in place and the main process
    takes the batches from, reused batch after batch.

    A batch of 128 training patches is 19 MB. Made anew for every batch, as a DataLoader
    worker's tensor is (and then copied into fresh shared memory to cross the process
    boundary), its pages cost a fault each on both sides: 0.08-0.13 ms an image, a third of
    its decode (docs/benchmarks.md, "The loader's GPU path"). Task `pos` of a loader writes
    buffer `pos % count`, and only once the main process has released the task before it
    there (`turn`): with `count` above the tasks a DataLoader keeps in flight, no worker ever
    waits, and none can overwrite a batch still being read if that ever changes.
    """

    def __init__(self, count: int, nbytes: int):
        self.count, self.nbytes = count, nbytes
        self.buffers = torch.empty(0, dtype=torch.uint8).set_(_new_shared(count * nbytes))
        self.turn = torch.empty(0, dtype=torch.int64).set_(_new_shared(8 * count))
        self.turn.copy_(torch.arange(count))

    def space(self, pos: int) -> np.ndarray:
        """Task `pos`'s buffer (a worker's), once the batch it held before is released."""
        k = pos % self.count
        while int(self.turn[k]) != pos:
            time.sleep(0.0005)
        return self.buffers[k * self.nbytes : (k + 1) * self.nbytes].numpy()

    def view(self, pos: int) -> torch.Tensor:
        k = pos % self.count
        return self.buffers[k * self.nbytes : (k + 1) * self.nbytes]

    def release(self, pos: int) -> None:
        self.turn[pos % self.count] = pos + self.count

    def register_with_cuda(self) -> Callable[[], None] | None:
        """Page-lock the buffers for the GPU (cudaHostRegister), so that a copy from them to
        the device is the copy engine's DMA, not a CPU copy through CUDA's staging buffers;
        torch's own async checkpointing registers its `_new_shared` storages the same way
        (torch.distributed.checkpoint's state-dict stager). Returns the call that unregisters
        them, or None where CUDA refuses: copies then stage, slower but the same bytes."""
        if not torch.cuda.is_available():
            return None
        try:
            cudart = torch.cuda.cudart()
            pointer = self.buffers.data_ptr()
            if int(cudart.cudaHostRegister(pointer, self.count * self.nbytes, CUDA_HOST_REGISTER_PORTABLE)):
                return None
        except (AssertionError, RuntimeError, AttributeError):  # a torch built without the runtime's API
            return None
        return lambda: cudart.cudaHostUnregister(pointer)


CUDA_HOST_REGISTER_PORTABLE = 1  # page-locked for every CUDA context of the process, as torch does


def _new_shared(nbytes: int) -> torch.UntypedStorage:
    """Storage made in shared memory, not a tensor moved there (share_memory_ copies it): the
    private API that DataLoader's own collate uses for the same purpose, so it lives as long
    as DataLoader does; tests/test_loader.py fails if a torch release renames it."""
    return torch.UntypedStorage._new_shared(nbytes)


class _FillShared(Dataset):
    """What a worker runs: each task's batch straight into its shared buffer."""

    def __init__(self, images: StoredImages, shared: SharedBatches):
        self.images, self.shared = images, shared

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, task: tuple[int, LocalBatch]) -> dict[str, Any]:
        pos, batch = task
        return self.images.fill(batch, self.shared.space(pos))


def _start_worker(worker_id: int) -> None:
    preemption.ignore_in_worker(worker_id)
    # A reflected patch is a fresh 150 KB tensor: glibc would return it to the OS on free and
    # page-fault it in again for the next one (4x the reflection's own cost).
    keep_freed_memory()


def _as_is(item: Any) -> Any:  # a worker's NumPy arrays cross in the pickle, not as shared tensors
    return item


# Iterators whose workers are running. Workers ignore SIGTERM, which is how multiprocessing's
# exit handler stops leftover children before joining them: one left running (an iterator kept
# alive by a traceback, or never closed) would hang the exit forever. This handler is
# registered after multiprocessing's, so it runs first and stops them for good.
_running: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _stop_running_workers() -> None:
    for iterator in list(_running):
        stop_workers(iterator)


PREFETCH = 4  # batches in flight per worker


def batch_loader(
    images: StoredImages,
    batches: list[LocalBatch],
    workers: int,
    pin_memory: bool = False,
    take: Callable[[dict[str, Any], torch.Tensor], dict[str, Any]] | None = None,
    borrow: bool = False,
) -> Generator[dict[str, Any], None, None]:
    """Iterate `batches` in order, `workers` processes reading ahead of the training step.
    A consumer that may stop early closes it (contextlib.closing) to stop the workers at once.

    Each batch is made from the workers' shared buffer, which stays the batch's until the
    consumer asks for the next one:
    - by default its bytes are copied into fresh memory (pinned with `pin_memory`, for a fast
      copy to the GPU): the consumer may keep the batch;
    - `borrow`: the batch's images are views of the shared buffer, valid until the consumer
      asks for the next batch, for one that makes new tensors of them first (the CPU training
      step, validation, eval): no copy at all;
    - `take(arrays, bytes)` makes the batch (StoredImages.fill's arrays and the buffer): GPU
      decoding uploads the stored JPEGs from there, ToDevice copies the images to the GPU.
      A take with `wait_copied()` has it called before the buffer is reused.
    With workers and `pin_memory`, the shared buffers are registered with CUDA for the time of
    the loop (SharedBatches.register_with_cuda), so a take's copy to the GPU reads them by DMA."""
    if not workers:
        for batch in batches:
            size = images.space_bytes(len(batch.indices))
            space = torch.empty(size, dtype=torch.uint8, pin_memory=pin_memory)
            filled = images.fill(batch, space.numpy())
            yield take(filled, space) if take else as_tensors(filled, space, images.image_shape)
        return
    if take is None:
        take = (
            partial(as_tensors, image_shape=images.image_shape)
            if borrow
            else partial(_copied, image_shape=images.image_shape, pin_memory=pin_memory)
        )
    wait_copied = getattr(take, "wait_copied", lambda: None)
    largest = max((len(b.indices) for b in batches), default=0)
    shared = SharedBatches(min(PREFETCH * workers + 1, max(len(batches), 1)), images.space_bytes(largest))
    data = DataLoader(
        _FillShared(images, shared),
        sampler=list(enumerate(batches)),
        batch_size=None,  # each item already is a batch
        collate_fn=_as_is,
        num_workers=workers,
        worker_init_fn=_start_worker,
        prefetch_factor=PREFETCH,
        persistent_workers=False,
    )
    release_free_heap()
    with preemption.blocked_while_forking():
        batches_in_order = iter(data)  # forks the workers
    _running.add(batches_in_order)
    unregister = None
    lent = None  # the buffer of the batch the consumer holds
    try:
        if pin_memory:
            unregister = shared.register_with_cuda()
        for pos in range(len(batches)):
            batch = next(batches_in_order)
            lent = pos
            yield take(batch, shared.view(pos))
            # The consumer asks for the next batch: done with this one, whose buffer the task
            # DataLoader sends on receiving the next will fill (PREFETCH x workers + 1 buffers:
            # the one lent and one per task in flight, so no worker waits for its buffer).
            _give_back(shared, lent, wait_copied)
            lent = None
    except AlexnetError as e:
        raise type(e)(original_message(e)) from None
    finally:
        # Shut the workers down now, not whenever the iterator is collected: an error from a
        # worker keeps it alive (its traceback holds the iterator) until after multiprocessing's
        # exit handler, whose SIGTERM these workers ignore, so the process would never exit.
        stop_workers(batches_in_order)
        del batches_in_order
        _give_back(shared, lent, wait_copied)
        if unregister is not None:
            unregister()


def _give_back(shared: SharedBatches, pos: int | None, wait_copied: Callable[[], None]) -> None:
    if pos is not None:
        wait_copied()
        shared.release(pos)


def _copied(
    batch: dict[str, Any], space: torch.Tensor, image_shape: tuple[int, int, int], pin_memory: bool
) -> dict[str, Any]:
    """The batch in memory of its own (pinned for the GPU), out of a shared buffer."""
    out = as_tensors(batch, space, image_shape)
    key = "images" if "images" in out else "encoded"
    own = torch.empty(out[key].shape, dtype=torch.uint8, pin_memory=pin_memory)
    own.copy_(out[key])
    out[key] = own
    return out


class ToDevice:
    """A batch_loader `take` for a device fed by CPU decoding: the batch's whole images go to
    the device straight from the workers' shared buffer and, with `crop` (training), the device
    cuts and reflects the patches (augment.crop_flip_batch), so a worker does nothing but read
    and decode (StoredImages(crop=False)); 1.3x the bytes of the patches cross to the GPU.

    On CUDA the copy runs on a stream of its own, from the buffers batch_loader registered
    with CUDA: DMA that overlaps the step before, no CPU copy. The step waits for it on the
    device (wait_event), and the buffer is reused only once it is done (`wait_copied`)."""

    def __init__(self, device: torch.device, crop: bool = False):
        self.device, self.crop = device, crop
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.copied: torch.cuda.Event | None = None

    def __call__(self, batch: dict[str, Any], space: torch.Tensor) -> dict[str, Any]:
        out = as_tensors(batch, space, (IMAGE_SIZE, IMAGE_SIZE, 3))
        images = self._to_device(out["images"])
        if self.crop:
            images = augment.crop_flip_batch(channels_last_view(images), out["top"], out["left"], out["flip"])
        out["images"] = images
        return out

    def _to_device(self, host: torch.Tensor) -> torch.Tensor:
        if self.stream is None:  # a CPU device: memory of its own, out of the shared buffer
            return host.clone()
        with torch.cuda.stream(self.stream):
            images = host.to(self.device, non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record(self.stream)
        step = torch.cuda.current_stream(self.device)
        step.wait_event(self.copied)
        images.record_stream(step)  # allocated on the copy stream, used on the step's
        return images

    def wait_copied(self) -> None:
        if self.copied is not None:
            self.copied.synchronize()
            self.copied = None


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
