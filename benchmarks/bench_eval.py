"""10-crop eval against 10 center-crop passes over the same data (issue 5: at most 1.05x).

Writes a small real dataset (the first N images of imagenet-sample through `load_256` and
`ShardWriter`) to a temporary folder, builds the paper's 1000-class net (random weights: speed
does not depend on them), then times, interleaved, 10 center-crop passes and one 10-crop pass
of `evaluate` with the same loader settings, interleaved. The last line prints the ratio of the
median 10-crop pass to 10 median center-crop passes.

    python benchmarks/bench_eval.py [--images 64] [--batch-size 32] [--repeats 3] [--gpus 0] [--codec jpeg]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_cli.classes import imagenet_classes  # noqa: E402
from alexnet_cli.data.format import shard_name  # noqa: E402
from alexnet_cli.data.format.index import PreparedDataset, SplitMeta, write_index  # noqa: E402
from alexnet_cli.data.format.shards import ShardWriter  # noqa: E402
from alexnet_cli.data.format.stats import PixelSums  # noqa: E402
from alexnet_cli.data.imaging import load_256  # noqa: E402
from alexnet_cli.data.transforms import preprocess_from_stats  # noqa: E402
from alexnet_cli.classifier import Classifier  # noqa: E402
from alexnet_cli.config import EvalConfig, ModelConfig  # noqa: E402
from alexnet_cli.devices import placement  # noqa: E402
from alexnet_cli.evaluate import evaluate  # noqa: E402
from alexnet_cli.model import AlexNet  # noqa: E402

SHARED = Path(os.environ.get("ALEXNET_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def write_sample(out: Path, n: int, codec: str) -> tuple[Path, np.ndarray]:
    """The first n images of imagenet-sample as a one-shard 'val' split; returns (index, mean image)."""
    with open(SHARED / "imagenet-sample" / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    index = out / "sample.h5"
    writer = ShardWriter(out / shard_name(index, "val", 0), "val", 0, codec)
    for row in rows:
        writer.add(load_256(SHARED / "imagenet-sample" / row["file"]), int(row["index_sorted_wnid"]), row["file"])
    writer.close()
    classes = [(c.wnid, c.name) for c in imagenet_classes()]
    meta = SplitMeta(len(rows), [shard_name(index, "val", 0)], [len(rows)])
    write_index(index, classes, {"val": meta}, PixelSums(), {"codec": codec})
    return index, writer.sums.mean_image()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=None, help="0 CPU, 1 GPU; default: 1 if CUDA is present")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: as `alexnet eval`)")
    parser.add_argument("--codec", choices=("jpeg", "raw"), default="jpeg")
    args = parser.parse_args()

    device = placement(args.gpus).device
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        data, mean_image = write_sample(Path(tmp), args.images, args.codec)
        dataset = PreparedDataset(data)
        images = dataset.splits["val"].images  # imagenet-sample has 1000
        preprocess = preprocess_from_stats(mean_image)
        preprocess["mean_image"] = preprocess["mean_image"].to(device)
        classes = [(c.wnid, c.name) for c in imagenet_classes()]
        classifier = Classifier(AlexNet().to(device).eval(), preprocess, classes, "random weights", device, ModelConfig())
        center = EvalConfig(data, gpus=args.gpus, batch_size=args.batch_size, workers=args.workers)
        ten = EvalConfig(data, ten_crop=True, gpus=args.gpus, batch_size=args.batch_size, workers=args.workers)
        evaluate(classifier, dataset, center)  # warm-up: allocator, kernels, page cache
        print(f"{images} images ({args.codec}), batch {args.batch_size}, on {device}, torch {torch.__version__}")
        center_s, ten_s = [], []
        for r in range(args.repeats):
            # Interleaved pass by pass: the load of a shared machine drifts by the minute.
            for _ in range(10):
                t = time.perf_counter()
                evaluate(classifier, dataset, center)
                center_s.append(time.perf_counter() - t)
            t = time.perf_counter()
            evaluate(classifier, dataset, ten)
            ten_s.append(time.perf_counter() - t)
            print(
                f"repeat {r + 1}: 10 x center {sum(center_s[-10:]):.2f} s, 10-crop {ten_s[-1]:.2f} s, "
                f"ratio {ten_s[-1] / sum(center_s[-10:]):.3f}"
            )
    center_pass, ten_pass = statistics.median(center_s), statistics.median(ten_s)
    print(
        f"median center pass {center_pass:.2f} s ({images / center_pass:.1f} images/s), "
        f"median 10-crop pass {ten_pass:.2f} s ({images / ten_pass:.1f} images/s)"
    )
    print(f"10-crop / 10 center-crop passes: {ten_pass / (10 * center_pass):.3f}x")


if __name__ == "__main__":
    main()
