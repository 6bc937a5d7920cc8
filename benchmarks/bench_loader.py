"""Input pipeline: augmented training batches per second, ours vs pytorch/examples' ImageNet loader.

Ours: the HDF5 shards (256x256 JPEG, as prep stores them) -> DataLoader workers (read one
slice, decode, cut and reflect the uint8 patch) -> augment.train_input on the training
device (mean image, PCA lighting): float batches ready for the model.
Baseline: pytorch/examples imagenet/main.py: torchvision ImageFolder + PIL +
RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize, same workers and batch.
Both on ../shared/data/imagenet-sample (1000 real ImageNet JPEGs), both on the CPU, rounds
interleaved so that a noisy machine slows both alike. The last line prints the ratio.

    python benchmarks/bench_loader.py [--workers 2] [--batch-size 128] [--rounds 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alexnet_cli.data import loader  # noqa: E402
from alexnet_cli.data.augment import pca_from_stats, train_input  # noqa: E402
from alexnet_cli.data.format import PreparedDataset, PixelSums, ShardWriter, SplitMeta, shard_name, write_index  # noqa: E402
from alexnet_cli.data.imaging import load_256  # noqa: E402
from alexnet_cli.data.transforms import preprocess_from_stats  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


def build_hdf5(src: Path, out: Path, shards: int = 4) -> Path:
    """The sample as a prepared dataset (one 'train' split), unless already built."""
    index = out / "imagenet-sample.h5"
    if index.exists():
        return index
    out.mkdir(parents=True, exist_ok=True)
    rows = list(csv.DictReader(open(src / "labels.csv")))
    wnids = sorted({r["wnid"] for r in rows})
    label = {w: i for i, w in enumerate(wnids)}
    bounds = np.linspace(0, len(rows), shards + 1).astype(int)
    sums, names, counts = PixelSums(), [], []
    for k in range(shards):
        name = shard_name(index, "train", k)
        writer = ShardWriter(out / name, "train", k, "jpeg")
        for r in rows[bounds[k] : bounds[k + 1]]:
            writer.add(load_256(src / r["file"]), label[r["wnid"]], r["file"])
        writer.close()
        sums = sums.merge(writer.sums)
        names.append(name)
        counts.append(int(bounds[k + 1] - bounds[k]))
    classes = [(w, w) for w in wnids]
    write_index(index, classes, {"train": SplitMeta(len(rows), names, counts)}, sums, {"codec": "jpeg"})
    return index


def image_folder(src: Path, out: Path) -> Path:
    """The flat sample as ImageFolder's class folders (symlinks)."""
    root = out / "imagefolder"
    if not root.exists():
        for r in csv.DictReader(open(src / "labels.csv")):
            (root / r["wnid"]).mkdir(parents=True, exist_ok=True)
            (root / r["wnid"] / r["file"]).symlink_to(src / r["file"])
    return root


def ours(index: Path, workers: int, batch_size: int, epoch: int) -> float:
    ds = PreparedDataset(index)
    preprocess = preprocess_from_stats(ds.stats.mean_image)
    pca = pca_from_stats(ds.stats.eigenvalues, ds.stats.eigenvectors)
    images = loader.StoredImages(ds.split("train"), train=True, seed=0)
    batches = loader.epoch_batches(np.arange(len(images)), batch_size, seed=0, epoch=epoch)
    start, n = time.perf_counter(), 0
    for batch in loader.batch_loader(images, batches, workers):
        x = train_input(batch, preprocess, pca, "cpu")
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def pytorch_examples(root: Path, workers: int, batch_size: int) -> float:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    data = torch.utils.data.DataLoader(ImageFolder(root, transform), batch_size=batch_size, shuffle=True, num_workers=workers)
    start, n = time.perf_counter(), 0
    for x, _ in data:
        n += x.shape[0]
    return n / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=SAMPLE)
    p.add_argument("--cache", type=Path, default=Path("/tmp/alexnet-bench"), help="where the HDF5 copy is built once")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    if not (a.src / "labels.csv").exists():
        sys.exit(f"{a.src}: the imagenet-sample folder is missing (see ../shared/data/README.md)")
    index, folder = build_hdf5(a.src, a.cache), image_folder(a.src, a.cache)
    print(f"{a.src}: 1000 images, batch {a.batch_size}, {a.workers} workers, {torch.get_num_threads()} torch threads")
    rates: dict[str, list[float]] = {"ours": [], "pytorch/examples": []}
    for r in range(a.rounds):
        rates["ours"].append(ours(index, a.workers, a.batch_size, epoch=r))
        rates["pytorch/examples"].append(pytorch_examples(folder, a.workers, a.batch_size))
        print(f"round {r + 1}: ours {rates['ours'][-1]:.0f} img/s, pytorch/examples {rates['pytorch/examples'][-1]:.0f} img/s")
    ours_rate, base = statistics.median(rates["ours"]), statistics.median(rates["pytorch/examples"])
    print(f"median images/s: ours {ours_rate:.0f}, pytorch/examples {base:.0f}")
    print(f"ratio ours/pytorch-examples: {ours_rate / base:.2f}x")


if __name__ == "__main__":
    main()
