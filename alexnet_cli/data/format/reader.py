"""`SplitReader`: random access to one split's images across its shards.

Shards are opened lazily, per process: a DataLoader worker forked after the reader was built
opens its own handles on first use (h5py handles must not cross a fork).
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import h5py
import numpy as np

from alexnet_cli.data.format.codec import decode_image
from alexnet_cli.data.format.hdf5 import first_line, strings
from alexnet_cli.data.format.shards import shard_problems
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.errors import InputError


class SplitReader:
    """Random access to one split's images across its shards; safe to fork before first use."""

    def __init__(
        self,
        shard_paths: list[Path],
        shard_images: list[int],
        num_classes: int | None = None,
        split: str | None = None,
    ):
        self.shard_paths = shard_paths
        self.num_classes = num_classes  # labels must lie in 0..num_classes-1 (None: not checked)
        self.split = split  # each shard must say it is shard k of this split (None: not checked)
        self.starts = np.concatenate([[0], np.cumsum(shard_images)]).astype(np.int64)
        self._handles: dict[int, tuple] = {}
        self._pid = os.getpid()
        self._labels: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getstate__(self):  # pickled into spawned workers: never ship open handles
        state = self.__dict__.copy()
        state["_handles"] = {}
        return state

    def _shard(self, k: int):
        if self._pid != os.getpid():  # forked: handles from the parent are not ours
            self._handles, self._pid = {}, os.getpid()
        if k not in self._handles:
            path = self.shard_paths[k]
            if not path.exists():
                raise InputError(f"{path}: shard missing; restore it or rerun `alexnet prep`")
            try:
                # No chunk cache: every read is one image's own contiguous bytes, never reused,
                # so caching its 1 MB chunk only costs a copy (raw images: 0.2 -> 0.04 ms a read).
                f = h5py.File(path, "r", rdcc_nbytes=0)
            except OSError as e:
                raise InputError(
                    f"{path}: not a readable shard ({first_line(e)}); restore it or rerun `alexnet prep`"
                ) from None
            expected = int(self.starts[k + 1] - self.starts[k])
            problems = shard_problems(
                f, expected, self.num_classes, None if self.split is None else (self.split, k)
            )
            if problems:
                f.close()
                raise InputError(
                    f"{path}: {problems[0]}; the shard is damaged or not the one the index expects: "
                    "rerun `alexnet prep`"
                )
            # offsets are small (8 bytes an image): read them once so each image is one slice
            data = f["data"]
            self._handles[k] = (f, data, f["offsets"][()], str(f.attrs["codec"]), _FileSpans.of(path, data))
        return self._handles[k]

    def _damaged(self, i: int, e: Exception) -> InputError:
        shard = self.shard_paths[self.locate(i)[0]]
        return InputError(
            f"{shard}: image {i} of the split could not be read ({type(e).__name__}: {first_line(e)[:120]}); "
            "the shard is damaged: rerun `alexnet prep`"
        )

    def locate(self, i: int) -> tuple[int, int]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = int(np.searchsorted(self.starts, i, side="right") - 1)
        return k, i - int(self.starts[k])

    def read_encoded(self, i: int) -> tuple[np.ndarray, str]:
        """The stored bytes of image i and their codec (one contiguous slice, no fancy indexing)."""
        k, j = self.locate(i)
        _, data, offsets, codec, spans = self._shard(k)
        try:
            if spans is not None:
                return spans.read(int(offsets[j]), int(offsets[j + 1])), codec
            return data[offsets[j] : offsets[j + 1]], codec
        except (OSError, ValueError) as e:  # an HDF5 chunk that no longer reads
            raise self._damaged(i, e) from None

    def read_encoded_into(self, indices: list[int], space: np.ndarray) -> np.ndarray:
        """The stored JPEG bytes of images `indices`, one after another in `space`; returns
        where each starts there, and where the last ends ([n + 1])."""
        offsets = np.zeros(len(indices) + 1, np.int64)
        for j, i in enumerate(indices):
            data, codec = self.read_encoded(i)
            if codec != "jpeg":
                shard = self.shard_paths[self.locate(i)[0]]
                raise InputError(f"{shard}: stores {codec} pixels, no JPEG to decode: drop --decode gpu")
            start, end = int(offsets[j]), int(offsets[j]) + len(data)
            if end > len(space):  # only if the JPEGs outweigh their pixels (StoredImages.space_bytes)
                raise self._damaged(i, ValueError("its JPEG is larger than its pixels"))
            space[start:end] = data
            offsets[j + 1] = end
        return offsets

    def image(self, i: int, out: np.ndarray | None = None) -> np.ndarray:
        """Image i as 256x256x3 uint8 (decoded into `out` when given); a damaged shard is an
        InputError naming it."""
        data, codec = self.read_encoded(i)
        try:
            pixels = decode_image(data, codec, out)
        except (OSError, ValueError, RuntimeError) as e:
            raise self._damaged(i, e) from None
        if pixels.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
            raise self._damaged(i, ValueError(f"decoded to {pixels.shape}, not {IMAGE_SIZE}x{IMAGE_SIZE}x3"))
        return pixels

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.concatenate(
                [self._shard(k)[0]["labels"][()] for k in range(len(self.shard_paths))]
                or [np.zeros(0, np.int32)]
            )
        return self._labels

    def sources(self) -> list[str]:
        return [s for k in range(len(self.shard_paths)) for s in strings(self._shard(k)[0]["sources"])]

    def close(self) -> None:
        for f, *_, spans in self._handles.values():
            f.close()
            if spans is not None:
                spans.close()
        self._handles = {}


class _FileSpans:
    """Bytes of a shard's `data` read straight from the file: HDF5 stores an unfiltered
    chunked dataset's chunks as they are, so one image is one or two `preadv` calls, without
    the 5-6 us of selection machinery an h5py slice adds to each read (2% of a decode)."""

    def __init__(self, path: Path, chunk: int, where: np.ndarray):
        self.chunk, self.where = chunk, where.tolist()  # file offset of each chunk
        self.fd = os.open(path, os.O_RDONLY)
        self.close = weakref.finalize(self, os.close, self.fd)  # also when the reader is dropped

    @classmethod
    def of(cls, path: Path, data: h5py.Dataset) -> _FileSpans | None:
        """The spans of `data`, or None where h5py must read it (another layout, filters)."""
        plist = data.id.get_create_plist()
        if plist.get_layout() != h5py.h5d.CHUNKED or plist.get_nfilters() != 0:
            return None
        (chunk,) = plist.get_chunk()
        count = -(-data.shape[0] // chunk)
        if data.id.get_num_chunks() != count:  # a chunk never written: h5py knows its fill
            return None
        where = np.full(count, -1, np.int64)
        for n in range(count):
            info = data.id.get_chunk_info(n)
            if info.size != chunk or info.filter_mask != 0:
                return None
            where[info.chunk_offset[0] // chunk] = info.byte_offset
        return cls(path, chunk, where) if (where >= 0).all() else None

    def read(self, start: int, end: int) -> np.ndarray:
        out = np.empty(end - start, np.uint8)
        at = start
        while at < end:
            k, skip = divmod(at, self.chunk)
            part = out[at - start : min(end, (k + 1) * self.chunk) - start]
            if os.preadv(self.fd, [part], self.where[k] + skip) != len(part):
                raise OSError("the file ends inside the image")
            at += len(part)
        return out
