"""The index file: classes, per-split shard lists, statistics, settings and skipped inputs.
`write_index` writes it (last, atomically: it is what makes a dataset complete);
`PreparedDataset` reads it as data."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from alexnet_cli.data.format import FORMAT_NAME, FORMAT_VERSION
from alexnet_cli.data.format.hdf5 import STRING, checked_array, plain, strings
from alexnet_cli.data.format.reader import SplitReader
from alexnet_cli.data.format.stats import PixelSums, Stats, write_sums
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.errors import InputError


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
        f.attrs.update(
            format=FORMAT_NAME, format_version=FORMAT_VERSION, created_by=f"alexnet-cli {__version__}"
        )
        g = f.create_group("classes")
        g.create_dataset("wnid", data=[c[0] for c in classes], dtype=STRING)
        g.create_dataset("name", data=[c[1] for c in classes], dtype=STRING)
        for name, meta in splits.items():
            s = f.create_group(f"splits/{name}")
            s.attrs.update(images=meta.images, skipped=meta.skipped)
            s.create_dataset("shards", data=meta.shards, dtype=STRING)
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
            sk.create_dataset(col, data=[r[i] for r in rows], dtype=STRING)


def _shard_file(name: str, index: Path) -> str:
    """A shard's name in the index: a file beside the index, never a path elsewhere."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise InputError(
            f"{index}: shard {name!r} is not a plain file name; the file is damaged, rerun `alexnet prep`"
        )
    return name


class PreparedDataset:
    """The index file of a prepared dataset: classes, splits, statistics and settings."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file; run `alexnet prep SRC {self.path}` first")
        try:
            f = h5py.File(self.path, "r")
        except OSError:
            raise InputError(
                f"{self.path}: not an HDF5 file; give the OUT.h5 written by `alexnet prep`"
            ) from None
        try:
            with f:
                self._read_index(f)
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            # a missing group, an attribute of the wrong type: damage (or a foreign writer), never a crash
            raise InputError(
                f"{self.path}: the index is damaged ({type(e).__name__}: {str(e)[:120]}); "
                "rerun `alexnet prep` with --force"
            ) from None

    def _read_index(self, f: h5py.File) -> None:
        """Parse the index as data: every shape, type and name checked before use."""
        if f.attrs.get("format") != FORMAT_NAME:
            raise InputError(
                f"{self.path}: not an alexnet-cli dataset; give the OUT.h5 written by `alexnet prep`"
            )
        version = int(f.attrs.get("format_version", -1))
        if version > FORMAT_VERSION:
            raise InputError(
                f"{self.path}: format version {version} is newer than this alexnet-cli reads "
                f"({FORMAT_VERSION}); upgrade alexnet-cli"
            )
        self.format_version = version
        wnids = strings(f["classes/wnid"])
        if any("/" in w or "\0" in w for w in wnids):  # export names files by wnid: never a path
            raise InputError(f"{self.path}: a class id holds '/'; the file is damaged, rerun `alexnet prep`")
        names = strings(f["classes/name"])
        if len(names) != len(wnids):
            raise InputError(
                f"{self.path}: class ids and names disagree in length; the file is damaged, rerun prep"
            )
        self.classes: list[tuple[str, str]] = list(zip(wnids, names, strict=True))
        self.splits: dict[str, SplitMeta] = {}
        for name, g in f.get("splits", {}).items():
            shards = [_shard_file(s, self.path) for s in strings(g["shards"])]
            counts = checked_array(g, "shard_images", (len(shards),), np.int64).tolist()
            if any(c < 0 for c in counts) or sum(counts) != int(g.attrs["images"]):
                raise InputError(
                    f"{self.path}: split '{name}' counts disagree; the file is damaged, rerun prep"
                )
            self.splits[name] = SplitMeta(
                int(g.attrs["images"]), shards, counts, int(g.attrs.get("skipped", 0))
            )
        self.settings = {k: plain(v) for k, v in f["settings"].attrs.items()}
        self.stats: Stats | None = None
        if "stats" in f:
            s = f["stats"]
            self.stats = Stats(
                checked_array(s, "mean_rgb", (3,), np.float64),
                checked_array(s, "mean_image", (IMAGE_SIZE, IMAGE_SIZE, 3), np.float32),
                checked_array(s, "pca_eigenvalues", (3,), np.float64),
                checked_array(s, "pca_eigenvectors", (3, 3), np.float64),
            )
        sk = f.get("skipped")
        self.skipped = (
            list(zip(*(strings(sk[c]) for c in ("split", "path", "reason")), strict=True)) if sk else []
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> SplitReader:
        if name not in self.splits:
            have = ", ".join(self.splits) or "none"
            raise InputError(
                f"{self.path}: has no '{name}' split (it has: {have}); prep it with --split {name}"
            )
        meta = self.splits[name]
        return SplitReader(
            [self.path.parent / s for s in meta.shards], meta.shard_images, self.num_classes, name
        )
