"""Convergence: the paper's network trained from scratch on ../shared/data/imagenette-subset
(10 classes, 200 train + 50 val images each), val top-1/top-5 per epoch.

Target: >= 50% val top-1 within 40 epochs (chance is 10%). The run goes through the real
`alexnet train` command (loader, augmentation, schedule, checkpoints) and resumes itself if
restarted (--resume auto), so it can run in the background and survive a kill.

    python benchmarks/bench_convergence.py [--epochs 40] [--batch-size 32] [--lr 0.01] [--bias-init 0.1]

The last line prints the best val top-1 against the 50% target as a ratio.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._data import build_hdf5, image_folder_splits  # noqa: E402

SUBSET = ROOT.parent / "shared" / "data" / "imagenette-subset"
TARGET_TOP1 = 50.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=SUBSET)
    p.add_argument("--cache", type=Path, default=Path("/tmp/alexnet-bench"), help="where the HDF5 copy is built once")
    p.add_argument("--run-dir", type=Path, default=Path("/tmp/alexnet-bench/convergence"))
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--bias-init", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gpus", type=int, default=0)
    p.add_argument("--extra", default="", help="more `alexnet train` options, space-separated")
    a = p.parse_args()
    if not (a.src / "train").is_dir():
        sys.exit(f"{a.src}: the imagenette-subset folder is missing (see ../shared/data/README.md)")
    splits, classes = image_folder_splits(a.src)
    data = build_hdf5(a.cache / "imagenette-subset.h5", splits, classes)
    cmd = [
        sys.executable, "-m", "alexnet_cli", "train", "--data", str(data), "--run-dir", str(a.run_dir),
        "--epochs", str(a.epochs), "--batch-size", str(a.batch_size), "--lr", str(a.lr),
        "--bias-init", str(a.bias_init), "--workers", str(a.workers), "--gpus", str(a.gpus), "--resume", "auto",
        "--log-every", "20", *a.extra.split(),
    ]
    print(" ".join(cmd), flush=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    code = subprocess.run(cmd, env=env).returncode
    if code != 0:
        sys.exit(code)
    rows = list(csv.DictReader(open(a.run_dir / "metrics.csv")))
    print("\n| epoch | lr | train loss | train top-1 | val loss | val top-1 | val top-5 | img/s |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['epoch']} | {float(r['lr']):.3g} | {float(r['train_loss']):.3f} | {float(r['train_top1']):.1f} | "
              f"{float(r['val_loss']):.3f} | {float(r['val_top1']):.1f} | {float(r['val_top5']):.1f} | "
              f"{float(r['images_per_s']):.1f} |")
    best = max(rows, key=lambda r: float(r["val_top1"]))
    print(f"best val top-1 {float(best['val_top1']):.1f}% at epoch {best['epoch']} of {len(rows)}")
    print(f"ratio best val top-1 / {TARGET_TOP1:.0f}% target: {float(best['val_top1']) / TARGET_TOP1:.2f}x")


if __name__ == "__main__":
    main()
