"""The prepared-dataset format (docs/format.md is the spec; FORMAT_VERSION is its version).

A dataset is one *index file* (``OUT.h5``: classes, per-split shard lists, statistics,
settings, skipped files) plus *shard files* beside it (``OUT-<split>-<NNNNN>.h5``: images,
labels, source paths). Everything is plain HDF5, readable with h5py and h5ls.

Shards are opened lazily, per process: a DataLoader worker forked after `SplitReader` was
built opens its own handles on first use (h5py handles must not cross a fork).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import h5py
import numpy as np

from alexnet_cli.errors import InputError

FORMAT_NAME = "alexnet-cli dataset"
SHARD_FORMAT_NAME = "alexnet-cli shard"
FORMAT_VERSION = 1
IMAGE_SIZE = 256  # section 2: every image is stored as its central 256x256 patch
CODECS = ("jpeg", "raw")
# JPEG storage: 4:4:4 at quality 90 is 26 KB and 38.8 dB PSNR per 256x256 ImageNet crop; 4:2:0
# needs quality 95 (29 KB) for the same PSNR (docs/format.md has the table).
JPEG_QUALITY = 90
JPEG_SUBSAMPLING = "444"
_STR = h5py.string_dtype("utf-8")


def shard_name(index_path: str | os.PathLike, split: str, shard: int) -> str:
    """File name (no folder) of a split's shard: ``out-train-00003.h5`` for ``out.h5``."""
    return f"{Path(index_path).stem}-{split}-{shard:05d}.h5"


# --------------------------------------------------------------------------------------------
# Pixel statistics (section 4.1): exact integer sums that merge in any order.


_PAIRS = [(i, j) for i in range(3) for j in range(i, 3)]


@dataclass
class PixelSums:
    """n, sum x and sum x x^T over uint8 RGB pixels, plus the per-position sum (the mean image).

    Integer sums: all of ImageNet's 1.28M 256x256 crops give sum x x^T < 2^63, and integer
    addition is associative, so shards and workers merge exactly, in any order.
    """

    n: int = 0  # pixels
    images: int = 0
    sum: np.ndarray = field(default_factory=lambda: np.zeros(3, np.int64))
    sumsq: np.ndarray = field(default_factory=lambda: np.zeros((3, 3), np.int64))
    image_sum: np.ndarray = field(default_factory=lambda: np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.int64))

    def add_image(self, pixels: np.ndarray) -> None:
        """Add one 256x256x3 uint8 image."""
        self.add_images([pixels])

    def add_images(self, images: list[np.ndarray]) -> None:
        """Add 256x256x3 uint8 images (in one call: cheaper per image than `add_image`)."""
        for start in range(0, len(images), 257):
            # per-position sums of up to 257 images fit uint16 (257 * 255 < 2^16): a cheap
            # SIMD add per image, widened to int64 once per block; sum x follows from it
            block = np.zeros(self.image_sum.shape, np.uint16)
            for pixels in images[start : start + 257]:
                np.add(block, pixels, out=block)
                # channels x pixels in uint16: every product of two uint8 values fits
                # (255^2 < 2^16), so each entry of sum x x^T is one SIMD multiply and an exact
                # integer sum of contiguous rows (2x faster than an int64 matmul), in uint32:
                # one 256x256 crop sums to at most 65536 * 255^2 < 2^32 (25% cheaper than uint64)
                c = np.ascontiguousarray(pixels.reshape(-1, 3).T, dtype=np.uint16)
                for i, j in _PAIRS:
                    self.sumsq[i, j] += int(np.multiply(c[i], c[j]).sum(dtype=np.uint32))
                self.n += c.shape[1]
                self.images += 1
            self.image_sum += block
            self.sum += block.reshape(-1, 3).sum(0, dtype=np.int64)
        self.sumsq = np.triu(self.sumsq) + np.triu(self.sumsq, 1).T

    def merge(self, other: "PixelSums") -> "PixelSums":
        return PixelSums(
            self.n + other.n,
            self.images + other.images,
            self.sum + other.sum,
            self.sumsq + other.sumsq,
            self.image_sum + other.image_sum,
        )

    def mean_rgb(self) -> np.ndarray:
        """Per-channel mean in pixel units (0..255)."""
        return self.sum / max(self.n, 1)

    def mean_image(self) -> np.ndarray:
        return (self.image_sum / max(self.images, 1)).astype(np.float32)

    def covariance(self) -> np.ndarray:
        """3x3 covariance of pixels scaled to [0, 1]."""
        n = max(self.n, 1)
        mean = self.sum / n
        return (self.sumsq / n - np.outer(mean, mean)) / 255.0**2

    def pca(self) -> tuple[np.ndarray, np.ndarray]:
        """Eigenvalues (descending) and eigenvectors (columns = components) of the covariance."""
        values, vectors = np.linalg.eigh(self.covariance())
        order = np.argsort(values)[::-1]
        vectors = vectors[:, order]
        # eigh's signs are arbitrary: make each component's largest entry positive so the
        # stored file does not depend on LAPACK's whims.
        signs = np.sign(vectors[np.abs(vectors).argmax(0), range(3)])
        return values[order], vectors * signs


def write_sums(group: h5py.Group, sums: PixelSums) -> None:
    group.attrs["pixels"] = sums.n
    group.attrs["images"] = sums.images
    group.create_dataset("pixel_sum", data=sums.sum)
    group.create_dataset("pixel_sumsq", data=sums.sumsq)
    group.create_dataset("image_sum", data=sums.image_sum)


def read_sums(group: h5py.Group) -> PixelSums:
    return PixelSums(
        int(group.attrs["pixels"]),
        int(group.attrs["images"]),
        _array(group, "pixel_sum", (3,), np.int64),
        _array(group, "pixel_sumsq", (3, 3), np.int64),
        _array(group, "image_sum", (IMAGE_SIZE, IMAGE_SIZE, 3), np.int64),
    )


# --------------------------------------------------------------------------------------------
# Image codecs


def encode_image(pixels: np.ndarray, codec: str, quality: int = JPEG_QUALITY) -> np.ndarray:
    """One 256x256x3 uint8 image as the bytes a shard stores (a uint8 array)."""
    if codec == "raw":
        return np.ascontiguousarray(pixels, dtype=np.uint8).reshape(-1)
    if codec == "jpeg":
        import simplejpeg

        data = simplejpeg.encode_jpeg(
            np.ascontiguousarray(pixels), quality=quality, colorspace="RGB", colorsubsampling=JPEG_SUBSAMPLING
        )
        return np.frombuffer(data, np.uint8)
    raise ValueError(f"unknown codec {codec!r}")


def decode_image(data: np.ndarray, codec: str) -> np.ndarray:
    """Inverse of encode_image: HxWx3 uint8 (libjpeg-turbo: the same pixels Pillow decodes)."""
    if codec == "raw":
        return data.reshape(IMAGE_SIZE, IMAGE_SIZE, 3)
    import simplejpeg

    return simplejpeg.decode_jpeg(data.tobytes(), "RGB")


# --------------------------------------------------------------------------------------------
# Writing


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
        f.create_dataset("sources", data=self._sources, dtype=_STR)
        write_sums(f.create_group("stats"), self.sums)
        sk = f.create_group("skipped")
        sk.create_dataset("path", data=[s for s, _ in self._skipped], dtype=_STR)
        sk.create_dataset("reason", data=[r for _, r in self._skipped], dtype=_STR)
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
    return list(zip(_strings(f["skipped/path"]), _strings(f["skipped/reason"])))


def shard_problems(
    f: h5py.File, expected: int, num_classes: int | None = None, place: tuple[str, int] | None = None
) -> list[str]:
    """What is structurally wrong with an open shard (empty: nothing), read as data before any
    of it is used: format, its (split, shard number) if `place` is given, image count, codec,
    offsets that tile the image bytes, labels in range."""
    if f.attrs.get("format") != SHARD_FORMAT_NAME:
        return ["not an alexnet-cli shard"]
    problems = []
    if place is not None and (_plain(f.attrs.get("split")), _plain(f.attrs.get("shard"))) != place:
        problems.append(f"is shard {_plain(f.attrs.get('shard'))} of split '{_plain(f.attrs.get('split'))}', "
                        f"the index expects shard {place[1]} of '{place[0]}'")
    images = int(f.attrs.get("images", -1))
    if images != expected:
        problems.append(f"holds {images} images, the index expects {expected}")
    if f.attrs.get("codec") not in CODECS:
        problems.append(f"unknown codec {f.attrs.get('codec')!r}")
    parts = {k: f.get(k) for k in ("data", "offsets", "labels", "sources")}
    missing = [k for k, ds in parts.items() if not isinstance(ds, h5py.Dataset) or ds.ndim != 1]
    if missing:
        return problems + [f"'{missing[0]}' is missing or not a 1-D dataset"]
    if parts["data"].dtype != np.uint8 or parts["offsets"].dtype.kind not in "iu" or parts["labels"].dtype.kind not in "iu":
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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@dataclass
class SplitMeta:
    images: int
    shards: list[str]  # file names relative to the index file's folder
    shard_images: list[int]
    skipped: int = 0


def write_index(
    path: str | os.PathLike,
    classes: list[tuple[str, str]],
    splits: dict[str, SplitMeta],
    train_sums: PixelSums | None,
    settings: dict,
    skipped: Iterable[tuple[str, str, str]] = (),
) -> None:
    """Write the index file atomically. `classes`: (wnid, name) in index order; `skipped`:
    (split, path, reason). `train_sums` gives mean and PCA; without it they are absent."""
    from alexnet_cli import __version__
    from alexnet_cli.fileio import atomic_path

    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, created_by=f"alexnet-cli {__version__}")
        g = f.create_group("classes")
        g.create_dataset("wnid", data=[c[0] for c in classes], dtype=_STR)
        g.create_dataset("name", data=[c[1] for c in classes], dtype=_STR)
        for name, meta in splits.items():
            s = f.create_group(f"splits/{name}")
            s.attrs.update(images=meta.images, skipped=meta.skipped)
            s.create_dataset("shards", data=meta.shards, dtype=_STR)
            s.create_dataset("shard_images", data=np.asarray(meta.shard_images, np.int64))
        st = f.create_group("settings")
        st.attrs.update(settings)
        if train_sums is not None and train_sums.n:
            stats = f.create_group("stats")
            eigval, eigvec = train_sums.pca()
            stats.create_dataset("mean_rgb", data=train_sums.mean_rgb())
            stats.create_dataset("mean_image", data=train_sums.mean_image())
            stats.create_dataset("pca_eigenvalues", data=eigval)
            stats.create_dataset("pca_eigenvectors", data=eigvec)
            write_sums(stats, train_sums)
        rows = list(skipped)
        sk = f.create_group("skipped")
        for i, col in enumerate(("split", "path", "reason")):
            sk.create_dataset(col, data=[r[i] for r in rows], dtype=_STR)


# --------------------------------------------------------------------------------------------
# Reading


def _array(group: h5py.Group, name: str, shape: tuple, dtype) -> np.ndarray:
    """A dataset read as data, its shape and dtype checked before use."""
    if name not in group:
        raise InputError(f"{group.file.filename}: missing '{group.name}/{name}'; rerun `alexnet prep`")
    ds = group[name]
    if not isinstance(ds, h5py.Dataset) or ds.shape != shape or not np.can_cast(ds.dtype, dtype, "same_kind"):
        raise InputError(
            f"{group.file.filename}: '{ds.name}' has shape {getattr(ds, 'shape', None)} of {getattr(ds, 'dtype', None)}, "
            f"expected {shape} of {np.dtype(dtype)}; "
            "the file is damaged, rerun `alexnet prep`"
        )
    return ds[()].astype(dtype)


def _strings(ds: h5py.Dataset) -> list[str]:
    """A 1-D dataset of strings, read as data (anything else is damage, not something to coerce)."""
    if not isinstance(ds, h5py.Dataset) or ds.ndim != 1 or h5py.check_string_dtype(ds.dtype) is None:
        raise InputError(f"{ds.file.filename}: '{ds.name}' is not a list of strings; the file is damaged, rerun `alexnet prep`")
    return [s.decode("utf-8") if isinstance(s, bytes) else str(s) for s in ds[()]]


def _shard_file(name: str, index: Path) -> str:
    """A shard's name in the index: a file beside the index, never a path elsewhere."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InputError(f"{index}: shard {name!r} is not a plain file name; the file is damaged, rerun `alexnet prep`")
    return name


@dataclass
class Stats:
    mean_rgb: np.ndarray  # [3], pixel units 0..255
    mean_image: np.ndarray  # [256, 256, 3] float32, pixel units
    eigenvalues: np.ndarray  # [3], descending, of the [0,1]-scaled pixel covariance
    eigenvectors: np.ndarray  # [3, 3], columns = components


class PreparedDataset:
    """The index file of a prepared dataset: classes, splits, statistics and settings."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file; run `alexnet prep SRC {self.path}` first")
        try:
            f = h5py.File(self.path, "r")
        except OSError:
            raise InputError(f"{self.path}: not an HDF5 file; give the OUT.h5 written by `alexnet prep`") from None
        try:
            with f:
                self._read_index(f)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            # a missing group, an attribute of the wrong type: damage (or a foreign writer), never a crash
            raise InputError(
                f"{self.path}: the index is damaged ({type(e).__name__}: {str(e)[:120]}); rerun `alexnet prep` with --force"
            ) from None

    def _read_index(self, f: h5py.File) -> None:
        """Parse the index as data: every shape, type and name checked before use."""
        if f.attrs.get("format") != FORMAT_NAME:
            raise InputError(f"{self.path}: not an alexnet-cli dataset; give the OUT.h5 written by `alexnet prep`")
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise InputError(
                f"{self.path}: format version {version} is newer than this alexnet-cli reads "
                f"({FORMAT_VERSION}); upgrade alexnet-cli"
            )
        self.format_version = version
        wnids = _strings(f["classes/wnid"])
        if any("/" in w or "\0" in w for w in wnids):  # export names files by wnid: never a path
            raise InputError(f"{self.path}: a class id holds '/'; the file is damaged, rerun `alexnet prep`")
        names = _strings(f["classes/name"])
        if len(names) != len(wnids):
            raise InputError(f"{self.path}: class ids and names disagree in length; the file is damaged, rerun prep")
        self.classes: list[tuple[str, str]] = list(zip(wnids, names))
        self.splits: dict[str, SplitMeta] = {}
        for name, g in f.get("splits", {}).items():
            shards = [_shard_file(s, self.path) for s in _strings(g["shards"])]
            counts = _array(g, "shard_images", (len(shards),), np.int64).tolist()
            if any(c < 0 for c in counts) or sum(counts) != int(g.attrs["images"]):
                raise InputError(f"{self.path}: split '{name}' counts disagree; the file is damaged, rerun prep")
            self.splits[name] = SplitMeta(int(g.attrs["images"]), shards, counts, int(g.attrs.get("skipped", 0)))
        self.settings = {k: _plain(v) for k, v in f["settings"].attrs.items()}
        self.stats: Stats | None = None
        if "stats" in f:
            s = f["stats"]
            self.stats = Stats(
                _array(s, "mean_rgb", (3,), np.float64),
                _array(s, "mean_image", (IMAGE_SIZE, IMAGE_SIZE, 3), np.float32),
                _array(s, "pca_eigenvalues", (3,), np.float64),
                _array(s, "pca_eigenvectors", (3, 3), np.float64),
            )
        sk = f.get("skipped")
        self.skipped = list(zip(*(_strings(sk[c]) for c in ("split", "path", "reason")))) if sk else []

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> "SplitReader":
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise InputError(f"{self.path}: has no '{name}' split (it has: {have}); prep it with --split {name}")
        meta = self.splits[name]
        return SplitReader([self.path.parent / s for s in meta.shards], meta.shard_images, self.num_classes, name)


def _plain(value):
    """HDF5 attribute -> plain Python value (numpy scalars and bytes are not JSON-friendly)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


class SplitReader:
    """Random access to one split's images across its shards; safe to fork before first use."""

    def __init__(self, shard_paths: list[Path], shard_images: list[int], num_classes: int | None = None,
                 split: str | None = None):
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
                raise InputError(f"{path}: not a readable shard ({_first_line(e)}); restore it or rerun `alexnet prep`") from None
            expected = int(self.starts[k + 1] - self.starts[k])
            problems = shard_problems(f, expected, self.num_classes, None if self.split is None else (self.split, k))
            if problems:
                f.close()
                raise InputError(f"{path}: {problems[0]}; the shard is damaged or not the one the index expects: rerun `alexnet prep`")
            # offsets are small (8 bytes an image): read them once so each image is one slice
            self._handles[k] = (f, f["data"], f["offsets"][()], str(f.attrs["codec"]))
        return self._handles[k]

    def _damaged(self, i: int, e: Exception) -> InputError:
        shard = self.shard_paths[self.locate(i)[0]]
        return InputError(
            f"{shard}: image {i} of the split could not be read ({type(e).__name__}: {_first_line(e)[:120]}); "
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

    def image(self, i: int) -> np.ndarray:
        """Image i as 256x256x3 uint8; a damaged shard is an InputError naming it."""
        data, codec = self.read_encoded(i)
        try:
            return decode_image(data, codec)
        except (OSError, ValueError, RuntimeError) as e:
            raise self._damaged(i, e) from None

    @property
    def labels(self) -> np.ndarray:
        if self._labels is None:
            self._labels = np.concatenate(
                [self._shard(k)[0]["labels"][()] for k in range(len(self.shard_paths))] or [np.zeros(0, np.int32)]
            )
        return self._labels

    def sources(self) -> list[str]:
        return [s for k in range(len(self.shard_paths)) for s in _strings(self._shard(k)[0]["sources"])]

    def close(self) -> None:
        for f, *_ in self._handles.values():
            f.close()
        self._handles = {}
