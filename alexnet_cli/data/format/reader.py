"""`SplitReader`: random access to one split's images across its shards.

Shards are opened lazily, per process: a DataLoader worker forked after the reader was built
opens its own handles on first use (h5py handles must not cross a fork).
"""

from __future__ import annotations

import os
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
            self._handles[k] = (f, f["data"], f["offsets"][()], str(f.attrs["codec"]))
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
        _, data, offsets, codec = self._shard(k)
        try:
            return data[offsets[j] : offsets[j + 1]], codec
        except (OSError, ValueError) as e:  # an HDF5 chunk that no longer reads
            raise self._damaged(i, e) from None

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
        for f, *_ in self._handles.values():
            f.close()
        self._handles = {}
