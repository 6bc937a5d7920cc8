"""Shared fixtures. Real images come from ../shared/data (see its README); tests that need them
skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(os.environ.get("ALEXNET_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real ImageNet test images; skip when it is not beside the checkout."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real test images not found at {SHARED_DATA} (set ALEXNET_SHARED_DATA)")
    return SHARED_DATA

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 600, input: bytes | None = None):
    """Run `python -m alexnet_cli ARGS` in a subprocess that imports *this* checkout's package."""
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alexnet_cli", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        input=input,
    )


def make_dataset(root: Path, classes: int = 2, train_per_class: int = 4, val_per_class: int = 2,
                 codec: str = "jpeg", train_shards: int = 2, seed: int = 0) -> Path:
    """A tiny prepared dataset (index + shards) written with the format module: each class a
    distinct colour with noise and a bright square in a class-dependent place, so that a few
    steps of training can tell the classes apart. Returns the index path."""
    import numpy as np

    from alexnet_cli.data.format import PixelSums, ShardWriter, SplitMeta, shard_name, write_index

    root.mkdir(parents=True, exist_ok=True)
    index = root / "tiny.h5"
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, size=(classes, 3))

    def image(label: int) -> np.ndarray:
        pixels = palette[label] + rng.normal(0, 25, size=(256, 256, 3))
        y, x = 32 + 48 * (label % 4), 32 + 48 * (label // 4 % 4)
        pixels[y : y + 64, x : x + 64] = 250
        return pixels.clip(0, 255).astype(np.uint8)

    splits, train_sums = {}, PixelSums()
    for split, per_class, shards in (("train", train_per_class, train_shards), ("val", val_per_class, 1)):
        labels = [c for c in range(classes) for _ in range(per_class)]  # class by class, as prep writes
        bounds = np.linspace(0, len(labels), shards + 1).astype(int)
        names, counts = [], []
        for k in range(shards):
            name = shard_name(index, split, k)
            writer = ShardWriter(root / name, split, k, codec)
            for j in range(bounds[k], bounds[k + 1]):
                writer.add(image(labels[j]), labels[j], f"{split}/c{labels[j]}/{j}.JPEG")
            writer.close()
            if split == "train":
                train_sums = train_sums.merge(writer.sums)
            names.append(name)
            counts.append(int(bounds[k + 1] - bounds[k]))
        splits[split] = SplitMeta(len(labels), names, counts)
    class_table = [(f"n{c:08d}", f"class {c}") for c in range(classes)]
    write_index(index, class_table, splits, train_sums, {"codec": codec})
    return index
