"""`alexnet inspect`: what a prepared dataset holds, whether its shards are intact, and its images as PNGs."""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import h5py
import numpy as np

from alexnet_cli.data.format import SHARD_FORMAT_NAME
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.format.shards import shard_checksum, shard_problems
from alexnet_cli.data.format.stats import PixelSums, read_sums
from alexnet_cli.errors import InputError


def inspect(
    path: str | os.PathLike,
    verify_shards: bool = False,
    export_to: str | None = None,
    split: str | None = None,
    limit: int = 16,
) -> dict:
    """`alexnet inspect`: `describe`, plus `verify`'s rows under "verify" and `export`'s files
    under "export" when asked."""
    ds = PreparedDataset(path)
    info = describe(ds)
    if verify_shards:
        rows = verify(ds)
        info["verify"] = {"ok": not any(r["problems"] for r in rows), "shards": rows}
    if export_to:
        split = split or ("train" if "train" in ds.splits else next(iter(ds.splits)))
        csv_path = export(ds, split, limit, export_to)
        info["export"] = {
            "folder": export_to,
            "labels_csv": str(csv_path),
            "images": min(limit, ds.splits[split].images),
        }
    return info


def describe(ds: PreparedDataset) -> dict:
    """Splits (images, classes present, shards, skipped), class table, mean, PCA, settings, skips."""
    splits = {}
    for name, meta in ds.splits.items():
        try:
            classes = int(np.unique(ds.split(name).labels).size)
        except InputError:  # a missing or foreign shard: --verify says which
            classes = None
        splits[name] = {
            "images": meta.images,
            "classes": classes,
            "shards": len(meta.shards),
            "skipped": meta.skipped,
        }
    stats = ds.stats
    return {
        "path": str(ds.path),
        "format_version": ds.format_version,
        "num_classes": ds.num_classes,
        "splits": splits,
        "classes": [{"index": i, "wnid": w, "name": n} for i, (w, n) in enumerate(ds.classes)],
        "mean_rgb": stats.mean_rgb.tolist() if stats else None,
        "pca": {"eigenvalues": stats.eigenvalues.tolist(), "eigenvectors": stats.eigenvectors.tolist()}
        if stats
        else None,
        "settings": ds.settings,
        "skipped": [{"split": s, "path": p, "reason": r} for s, p, r in ds.skipped],
    }


def verify(ds: PreparedDataset) -> list[dict]:
    """Re-read every shard: structure, counts, label range and sha256; then the training sums.

    One row per shard (``problems`` empty when it is intact) plus one for the statistics."""
    rows = []
    train_sums = PixelSums()
    for name, meta in ds.splits.items():
        for k, (file, expected) in enumerate(zip(meta.shards, meta.shard_images, strict=True)):
            problems, sums = _check_shard(ds.path.parent / file, expected, ds.num_classes, (name, k))
            rows.append({"split": name, "shard": file, "images": expected, "problems": problems})
            if name == "train" and sums is not None:
                train_sums = train_sums.merge(sums)
    if "train" in ds.splits:
        rows.append(
            {
                "split": "train",
                "shard": "(statistics)",
                "images": ds.splits["train"].images,
                "problems": _check_stats(ds, train_sums),
            }
        )
    return rows


def _check_shard(
    path: Path, expected: int, num_classes: int, place: tuple[str, int]
) -> tuple[list[str], PixelSums | None]:
    if not path.exists():
        return ["missing"], None
    try:
        with h5py.File(path, "r") as f:
            problems = shard_problems(f, expected, num_classes, place)
            if f.attrs.get("format") != SHARD_FORMAT_NAME:
                return problems, None
            if shard_checksum(f) != f.attrs.get("sha256"):
                problems.append("sha256 mismatch: image bytes or labels changed since prep")
            sums = read_sums(f["stats"])
            images = int(f.attrs["images"])
            if sums.images != images:
                problems.append(f"pixel sums cover {sums.images} images, not {images}")
            return problems, sums
    except (OSError, KeyError, ValueError, InputError) as e:
        return [f"unreadable: {e}"], None


def _check_stats(ds: PreparedDataset, shard_sums: PixelSums) -> list[str]:
    with h5py.File(ds.path, "r") as f:
        if "stats" not in f:
            return ["the index has no training statistics"]
        stored = read_sums(f["stats"])
    problems = []
    if not (
        stored.n == shard_sums.n
        and np.array_equal(stored.sum, shard_sums.sum)
        and np.array_equal(stored.sumsq, shard_sums.sumsq)
        and np.array_equal(stored.image_sum, shard_sums.image_sum)
    ):
        problems.append("the index's pixel sums differ from the sum of its shards'")
    values, vectors = stored.pca()
    if ds.stats is None or not (
        np.allclose(ds.stats.eigenvalues, values)
        and np.allclose(ds.stats.eigenvectors, vectors)
        and np.allclose(ds.stats.mean_rgb, stored.mean_rgb())
    ):
        problems.append("mean or PCA disagree with the stored sums")
    return problems


def export(ds: PreparedDataset, split: str, limit: int, folder: str | os.PathLike) -> Path:
    """Write the first `limit` images of a split as PNGs plus ``labels.csv`` (file, index, label,
    wnid, source); returns the CSV path. The folder must be new or empty."""
    from PIL import Image

    from alexnet_cli.fileio import atomic_path, atomic_write_text

    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise InputError(f"{folder}: exists and is not an empty folder; choose a new folder for --export")
    reader = ds.split(split)
    count = min(limit, len(reader))
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(f"{folder}: cannot create it ({e.strerror}); choose another folder") from None
    sources = reader.sources()
    labels = reader.labels
    rows = []
    for i in range(count):
        label = int(labels[i])
        wnid = ds.classes[label][0]
        name = f"{split}-{i:06d}-{wnid}.png"
        with atomic_path(folder / name) as tmp:
            Image.fromarray(reader.image(i)).save(tmp, format="PNG")
        rows.append({"file": name, "index": i, "label": label, "wnid": wnid, "source": sources[i]})
    buf = io.StringIO()
    writer = csv.DictWriter(buf, ["file", "index", "label", "wnid", "source"], lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(folder / "labels.csv", buf.getvalue())
    reader.close()
    return folder / "labels.csv"
