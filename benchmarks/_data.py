"""Benchmark helper: an image folder -> a prepared HDF5 dataset, built once and cached.

Uses the format module directly (ShardWriter + write_index with imaging.load_256, the same
pixels `alexnet prep` stores), so the benchmarks do not depend on the prep command's options.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from alexnet_cli.data.format import shard_name
from alexnet_cli.data.format.index import SplitMeta, write_index
from alexnet_cli.data.format.shards import ShardWriter
from alexnet_cli.data.format.stats import PixelSums
from alexnet_cli.data.imaging import load_256


def build_hdf5(index: Path, splits: dict[str, list[tuple[Path, int]]], classes: list[tuple[str, str]],
               shards: int = 4, codec: str = "jpeg") -> Path:
    """Write `index` (unless it exists) from {split: [(file, label), ...]}; mean and PCA come
    from the train split."""
    if index.exists():
        return index
    index.parent.mkdir(parents=True, exist_ok=True)
    metas, train_sums = {}, PixelSums()
    for split, items in splits.items():
        bounds = np.linspace(0, len(items), shards + 1).astype(int)
        names, counts = [], []
        for k in range(shards):
            name = shard_name(index, split, k)
            writer = ShardWriter(index.parent / name, split, k, codec)
            for path, label in items[bounds[k] : bounds[k + 1]]:
                writer.add(load_256(path), label, str(path))
            writer.close()
            if split == "train":
                train_sums = train_sums.merge(writer.sums)
            names.append(name)
            counts.append(int(bounds[k + 1] - bounds[k]))
        metas[split] = SplitMeta(len(items), names, counts)
    write_index(index, classes, metas, train_sums, {"codec": codec, "built_by": "benchmarks/_data.py"})
    return index


def image_folder_splits(root: Path) -> tuple[dict[str, list[tuple[Path, int]]], list[tuple[str, str]]]:
    """ImageNet layout root/{train,val}/<wnid>/*.JPEG -> splits and the sorted-wnid class table."""
    wnids = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    splits = {
        split: [(f, c) for c, w in enumerate(wnids) for f in sorted((root / split / w).iterdir()) if f.is_file()]
        for split in ("train", "val")
    }
    return splits, [(w, w) for w in wnids]
