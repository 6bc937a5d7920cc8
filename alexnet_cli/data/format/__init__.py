"""The prepared-dataset format (docs/format.md is the spec; FORMAT_VERSION is its version).

A dataset is one *index file* (``OUT.h5``: classes, per-split shard lists, statistics,
settings, skipped files) plus *shard files* beside it (``OUT-<split>-<NNNNN>.h5``: images,
labels, source paths). Everything is plain HDF5, readable with h5py and h5ls.

One module per part of the spec:
    stats    exact integer pixel sums -> mean image and RGB PCA (section 4.1)
    codec    a 256x256 image <-> the bytes a shard stores (JPEG 4:4:4 or raw)
    shards   writing a shard file, and checking one as data
    index    writing the index file, and `PreparedDataset` reading it
    reader   `SplitReader`: random access to one split's images across its shards
    hdf5     reading HDF5 objects as data (shapes and types checked before use)
"""

from __future__ import annotations

import os
from pathlib import Path

FORMAT_NAME = "alexnet-cli dataset"
SHARD_FORMAT_NAME = "alexnet-cli shard"
FORMAT_VERSION = 1


def shard_name(index_path: str | os.PathLike, split: str, shard: int) -> str:
    """File name (no folder) of a split's shard: ``out-train-00003.h5`` for ``out.h5``."""
    return f"{Path(index_path).stem}-{split}-{shard:05d}.h5"
