"""Small dataset trees for the prep/sources/inspect tests, built from the real images in
../shared/data (a few dozen files at most, symlinked or copied into tmp folders)."""

from __future__ import annotations

import io
import shutil
import tarfile
from pathlib import Path

import h5py
import numpy as np
import scipy.io

from alexnet_cli.classes import imagenet_classes

NETTE_CLASSES = ["n01440764", "n02102040", "n02979186"]


def nette_files(shared: Path, split: str, per_class: int) -> dict[str, list[Path]]:
    """The first `per_class` real images of three imagenette classes (ILSVRC val file names)."""
    root = shared / "imagenette-subset" / split
    return {w: sorted((root / w).iterdir())[:per_class] for w in NETTE_CLASSES}


def sample_files(shared: Path, n: int, start: int = 0) -> list[Path]:
    """Real full-size ImageNet JPEGs (68x56 .. 2400x1632), one per class."""
    return sorted((shared / "imagenet-sample").glob("*.JPEG"))[start : start + n]


def imagenet_tree(shared: Path, root: Path, per_class: int = 3, val_per_class: int = 2, flat_val: bool = False) -> Path:
    """``root/train/<wnid>/*.JPEG`` and ``root/val`` (class folders, or flat ILSVRC names)."""
    for wnid, files in nette_files(shared, "train", per_class).items():
        (root / "train" / wnid).mkdir(parents=True)
        for f in files:
            shutil.copy(f, root / "train" / wnid / f.name)
    for wnid, files in nette_files(shared, "val", val_per_class).items():
        folder = root / "val" if flat_val else root / "val" / wnid
        folder.mkdir(parents=True, exist_ok=True)
        for f in files:
            shutil.copy(f, folder / f.name)
    return root


def meta_mat_bytes(shared: Path) -> bytes:
    """A devkit-shaped meta.mat: all 1860 synsets in ILSVRC2012_ID order (IDs and wnids from
    the real ILSVRC2012_mapping.txt): 1..1000 the leaves (num_children 0), then the ancestors."""
    mapping = {}
    for line in (shared / "devkit" / "ILSVRC2012_mapping.txt").read_text().split("\n"):
        if line.strip():
            i, wnid = line.split()
            mapping[int(i)] = wnid
    words = {c.wnid: c.words for c in imagenet_classes()}
    fields = ["ILSVRC2012_ID", "WNID", "words", "gloss", "num_children", "children", "wordnet_height", "num_train_images"]
    synsets = np.zeros((len(mapping), 1), dtype=[(f, "O") for f in fields])
    for row, (i, wnid) in enumerate(sorted(mapping.items())):
        if i <= 1000:
            synsets[row, 0] = (i, wnid, words[wnid], "a leaf", 0, np.zeros((1, 0)), 0, 1300)
        else:
            synsets[row, 0] = (i, wnid, wnid, "an ancestor", 2, np.array([[1, 2]]), 1, 0)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"synsets": synsets})
    return buf.getvalue()


def devkit_archive(shared: Path, path: Path) -> Path:
    """``ILSVRC2012_devkit_t12.tar.gz`` with the fixture meta.mat and the real ground truth."""
    gt = (shared / "devkit" / "ILSVRC2012_validation_ground_truth.txt").read_bytes()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in (("data/meta.mat", meta_mat_bytes(shared)), ("data/ILSVRC2012_validation_ground_truth.txt", gt)):
            info = tarfile.TarInfo(f"ILSVRC2012_devkit_t12/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def official_archives(tree: Path, dest: Path) -> Path:
    """The official tar layout from an imagenet_tree with flat val: a tar of per-class tars
    (images inside at top level, as in ILSVRC2012_img_train.tar) and a flat val tar."""
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(dest / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as outer:
        for class_dir in sorted((tree / "train").iterdir()):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for f in sorted(class_dir.iterdir()):
                    inner.add(f, arcname=f.name)
            info = tarfile.TarInfo(f"{class_dir.name}.tar")
            info.size = buf.tell()
            buf.seek(0)
            outer.addfile(info, buf)
    with tarfile.open(dest / "ILSVRC2012_img_val.tar", "w", format=tarfile.GNU_FORMAT) as tar:
        for f in sorted((tree / "val").iterdir()):
            tar.add(f, arcname=f.name)
    return dest


def shard_contents(index: Path) -> dict[str, tuple[list[bytes], list[int], list[str]]]:
    """Per split: every stored image's bytes, the labels and the sources, in order."""
    from alexnet_cli.data.format.index import PreparedDataset

    ds = PreparedDataset(index)
    out = {}
    for name in ds.splits:
        reader = ds.split(name)
        out[name] = ([reader.read_encoded(i)[0].tobytes() for i in range(len(reader))], reader.labels.tolist(), reader.sources())
        reader.close()
    return out


def index_stats(index: Path) -> dict[str, np.ndarray]:
    with h5py.File(index, "r") as f:
        return {k: f["stats"][k][()] for k in f["stats"] if isinstance(f["stats"][k], h5py.Dataset)}
