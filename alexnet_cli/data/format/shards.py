"""Shard files: writing one (`ShardWriter`), and checking an open one as data."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import h5py
import numpy as np

from alexnet_cli.config import JPEG_QUALITY
from alexnet_cli.data.format import FORMAT_VERSION, SHARD_FORMAT_NAME
from alexnet_cli.data.format.codec import CODECS, encode_image
from alexnet_cli.data.format.hdf5 import STRING, plain, strings
from alexnet_cli.data.format.stats import PixelSums, write_sums


class ShardWriter:
    """Writes one shard file; call `add` per image, then `close` (the file is then complete).

    Writes go to ``<name>.partial`` and are renamed into place by `close`, so a shard file
    with its final name is always whole: resume keeps those and redoes the rest. `attrs` are
    extra file attributes (prep stores the fingerprint of the shard's planned inputs there).
    """

    _FLUSH_BYTES = 8 << 20  # image bytes are buffered and written in blocks of about this size

    def __init__(
        self,
        path: str | os.PathLike,
        split: str,
        shard: int,
        codec: str,
        quality: int = JPEG_QUALITY,
        attrs: dict | None = None,
    ):
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")
        self.path = Path(path)
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.codec, self.quality = codec, quality
        # No chunk cache: image bytes go to disk when written, so a full disk fails that write
        # cleanly; with dirty chunks cached, HDF5 2.0 fails at close and then crashes the process.
        self._file = h5py.File(self.partial, "w", rdcc_nbytes=0)
        self._file.attrs.update(
            format=SHARD_FORMAT_NAME, format_version=FORMAT_VERSION, split=split, shard=shard, codec=codec
        )
        self._file.attrs.update(attrs or {})
        self._data = self._file.create_dataset("data", (0,), np.uint8, maxshape=(None,), chunks=(1 << 20,))
        self._pending: list[np.ndarray] = []
        self._pending_bytes = 0
        self._written = 0
        self._offsets = [0]
        self._labels: list[int] = []
        self._sources: list[str] = []
        self._skipped: list[tuple[str, str]] = []
        self._hash = hashlib.sha256()
        self.sums = PixelSums()

    def add(self, pixels: np.ndarray, label: int, source: str, encoded: np.ndarray | None = None) -> None:
        """Append one 256x256x3 uint8 image (`encoded`: its codec bytes, if already made)."""
        data = encode_image(pixels, self.codec, self.quality) if encoded is None else encoded
        self.sums.add_image(pixels)
        self.add_encoded(data, label, source)

    def add_encoded(self, data: np.ndarray, label: int, source: str) -> None:
        """Append one image's codec bytes; its pixel sums are added with `add_sums`."""
        self._pending.append(data)
        self._pending_bytes += data.size
        self._offsets.append(self._offsets[-1] + data.size)
        self._labels.append(label)
        self._sources.append(source)
        self._hash.update(data)
        if self._pending_bytes >= self._FLUSH_BYTES:
            self._flush()

    def add_sums(self, sums: PixelSums) -> None:
        self.sums = self.sums.merge(sums)

    def skip(self, source: str, reason: str) -> None:
        """Record an input that was not stored (it is listed in the shard and the index)."""
        self._skipped.append((source, reason))

    def _flush(self) -> None:
        if not self._pending:
            return
        block = np.concatenate(self._pending)
        self._data.resize((self._written + block.size,))
        self._data[self._written :] = block
        self._written += block.size
        self._pending, self._pending_bytes = [], 0

    def close(self) -> None:
        self._flush()
        f = self._file
        labels = np.asarray(self._labels, np.int32)
        f.create_dataset("offsets", data=np.asarray(self._offsets, np.int64))
        f.create_dataset("labels", data=labels)
        f.create_dataset("sources", data=self._sources, dtype=STRING)
        write_sums(f.create_group("stats"), self.sums)
        sk = f.create_group("skipped")
        sk.create_dataset("path", data=[s for s, _ in self._skipped], dtype=STRING)
        sk.create_dataset("reason", data=[r for _, r in self._skipped], dtype=STRING)
        self._hash.update(labels.tobytes())
        f.attrs["images"] = len(self._labels)
        f.attrs["sha256"] = self._hash.hexdigest()
        f.close()
        with open(self.partial, "rb+") as fh:  # durable before it gets the name that means "whole"
            os.fsync(fh.fileno())
        os.replace(self.partial, self.path)

    def abort(self) -> None:
        """Throw the unfinished shard away (its close may fail as a write did: a full disk)."""
        try:
            self._file.close()
        except (OSError, RuntimeError):  # h5py reports a failed flush as either
            pass
        self.partial.unlink(missing_ok=True)


def shard_checksum(f: h5py.File) -> str:
    """sha256 of a shard's image bytes then its int32 labels: what `close` stored in attrs."""
    h = hashlib.sha256()
    data = f["data"]
    for start in range(0, data.shape[0], 1 << 24):
        h.update(data[start : start + (1 << 24)])
    h.update(f["labels"][()].astype(np.int32).tobytes())
    return h.hexdigest()


def read_skipped(f: h5py.File) -> list[tuple[str, str]]:
    """A shard's (source, reason) list of inputs that could not be stored."""
    if "skipped" not in f:
        return []
    return list(zip(strings(f["skipped/path"]), strings(f["skipped/reason"]), strict=True))


def shard_problems(
    f: h5py.File, expected: int, num_classes: int | None = None, place: tuple[str, int] | None = None
) -> list[str]:
    """What is structurally wrong with an open shard (empty: nothing), read as data before any
    of it is used: format, its (split, shard number) if `place` is given, image count, codec,
    offsets that tile the image bytes, labels in range."""
    if f.attrs.get("format") != SHARD_FORMAT_NAME:
        return ["not an alexnet-cli shard"]
    problems = []
    if place is not None and (plain(f.attrs.get("split")), plain(f.attrs.get("shard"))) != place:
        problems.append(
            f"is shard {plain(f.attrs.get('shard'))} of split '{plain(f.attrs.get('split'))}', "
            f"the index expects shard {place[1]} of '{place[0]}'"
        )
    images = int(f.attrs.get("images", -1))
    if images != expected:
        problems.append(f"holds {images} images, the index expects {expected}")
    if f.attrs.get("codec") not in CODECS:
        problems.append(f"unknown codec {f.attrs.get('codec')!r}")
    parts = {k: f.get(k) for k in ("data", "offsets", "labels", "sources")}
    missing = [k for k, ds in parts.items() if not isinstance(ds, h5py.Dataset) or ds.ndim != 1]
    if missing:
        return problems + [f"'{missing[0]}' is missing or not a 1-D dataset"]
    if (
        parts["data"].dtype != np.uint8
        or parts["offsets"].dtype.kind not in "iu"
        or parts["labels"].dtype.kind not in "iu"
    ):
        problems.append("data, offsets or labels have the wrong type")
        return problems
    offsets, labels = parts["offsets"][()], parts["labels"][()]
    if len(offsets) != images + 1 or len(labels) != images or len(parts["sources"]) != images:
        problems.append("offsets/labels/sources lengths disagree with the image count")
    elif offsets[0] != 0 or np.any(np.diff(offsets) <= 0) or offsets[-1] != parts["data"].shape[0]:
        problems.append("offsets do not tile the image data")
    if len(labels) and (labels.min() < 0 or (num_classes is not None and labels.max() >= num_classes)):
        problems.append(f"labels outside 0..{num_classes - 1 if num_classes is not None else 'n'}")
    return problems
