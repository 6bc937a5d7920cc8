"""Benchmark `alexnet prep` against a naive single-process Pillow loop doing the same work.

    python benchmarks/bench_prep.py [--data ../shared/data/imagenet-sample] [--rounds 3]

The naive loop: open, convert to RGB, resize the whole image so its shorter side is 256 (the
same antialiased bilinear filter), crop the central 256x256, encode JPEG (same quality, 4:4:4).
Ours: the real `prepare()` end to end (scan, worker processes, exact pixel sums, HDF5 shards,
index). Rounds are interleaved so that a noisy machine hurts both alike; the median is kept.

Per core = images per CPU-second, counted over every process (ours: main plus workers), so a
busy shared machine changes it less than wall time. Scaling = wall time with 1 worker over
wall time with 2 workers. The last line prints both ratios.

Two more single-process rows bound what any prep can reach per core, measured in the same
rounds: "decode only" (prep's decoder, libjpeg-turbo through simplejpeg, on every file) and
"steps only" (the naive loop's own steps, decode, resize, encode, done prep's fastest way,
with no statistics, checksums, files or processes). The last line prints naive / steps only:
the per-core ratio prep would reach if everything else it does were free.
"""

from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from PIL import Image  # noqa: E402

from alexnet_cli.data import imaging  # noqa: E402
from alexnet_cli.data.format.codec import JPEG_QUALITY, encode_image  # noqa: E402
from alexnet_cli.config import PrepConfig
from alexnet_cli.data.prep import prepare  # noqa: E402
from alexnet_cli.data.sources import is_image_name  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"


def naive(files: list[Path]) -> None:
    for path in files:
        im = Image.open(path).convert("RGB")
        w, h = im.size
        scale = 256 / min(w, h)
        im = im.resize((max(256, round(w * scale)), max(256, round(h * scale))), Image.Resampling.BILINEAR)
        w, h = im.size
        left, top = (w - 256) // 2, (h - 256) // 2
        im = im.crop((left, top, left + 256, top + 256))
        im.save(io.BytesIO(), format="JPEG", quality=JPEG_QUALITY, subsampling=0)


def decode_only(files: list[Path]) -> None:
    for path in files:
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            imaging.decode_rgb(im, data)


def steps_only(files: list[Path]) -> None:
    for path in files:
        encode_image(imaging.load_256(path.read_bytes()), "jpeg", JPEG_QUALITY)


def cpu_seconds() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def timed(fn) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), cpu_seconds()
    fn()
    return time.perf_counter() - wall, cpu_seconds() - cpu


def ours(src: Path, workers: int, scratch: Path) -> None:
    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        prepare(src, Path(tmp) / "bench.h5", PrepConfig(workers=workers, layout="folders"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a folder of JPEGs (default: imagenet-sample)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    files = sorted(p for p in args.data.iterdir() if is_image_name(p.name))
    if not files:
        sys.exit(f"no images in {args.data}")
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        # `prepare` wants class folders: one folder holding links to every file is one class
        src = scratch / "src"
        (src / "all").mkdir(parents=True)
        for f in files:
            os.symlink(f.resolve(), src / "all" / f.name)
        results: dict[str, list[tuple[float, float]]] = {
            "naive": [], "ours 1 worker": [], "ours 2 workers": [], "decode only": [], "steps only": []
        }
        for r in range(args.rounds):
            results["naive"].append(timed(lambda: naive(files)))
            results["decode only"].append(timed(lambda: decode_only(files)))
            results["steps only"].append(timed(lambda: steps_only(files)))
            results["ours 1 worker"].append(timed(lambda: ours(src, 1, scratch)))
            results["ours 2 workers"].append(timed(lambda: ours(src, 2, scratch)))
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s wall {v[-1][1]:.2f} s cpu" for k, v in results.items()), flush=True)
    n = len(files)
    wall = {k: statistics.median(w for w, _ in v) for k, v in results.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in results.items()}
    print(f"{n} images from {args.data}, {os.cpu_count()} cores, median of {args.rounds} interleaved rounds")
    print(f"{'':16s} {'img/s wall':>11s} {'img/CPU-s':>10s} {'ms CPU/img':>11s}")
    for k in results:
        print(f"{k:16s} {n / wall[k]:11.1f} {n / cpu[k]:10.1f} {cpu[k] / n * 1e3:11.2f}")
    per_core = (n / cpu["ours 1 worker"]) / (n / cpu["naive"])
    per_core_wall = (n / wall["ours 1 worker"]) / (n / wall["naive"])
    scaling = wall["ours 1 worker"] / wall["ours 2 workers"]
    bound = cpu["naive"] / cpu["steps only"]
    print(f"per core vs naive (CPU-s): {per_core:.2f}x (wall, 1 worker: {per_core_wall:.2f}x)")
    print(f"decode alone is {cpu['decode only'] / cpu['naive']:.0%} of the naive loop's CPU time; "
          f"decode + resize + encode alone, prep's way: {cpu['steps only'] / cpu['naive']:.0%}")
    print(f"ratio: per-core {per_core:.2f}x vs naive Pillow loop; 1->2 workers {scaling:.2f}x; "
          f"bound (the naive loop's steps alone, prep's way) {bound:.2f}x")


if __name__ == "__main__":
    main()
