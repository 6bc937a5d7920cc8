"""Fine-tuning against training from scratch with the same budget (docs/finetune.md).

1. pretrain: the paper's network on ../shared/data/imagenette-subset (10 classes, 2000 train
   images) for --pretrain-epochs;
2. on ../shared/data/tiny-imagenet-10 (10 other classes, 64x64 photos upscaled to 256x256),
   --epochs each, same seed, recipe and data:
   scratch (the paper's initialisation), finetune (`--init-from pretrain/best.pt`: conv1-fc7
   copied, fc8 re-initialised) and frozen (the same with `--freeze features`).

Every run goes through the real `alexnet train` command and resumes itself (--resume auto), so
the script survives a kill. The last line prints the fine-tuned run's best val top-1 over the
scratch run's, as a ratio.

    python benchmarks/finetune_example.py [--pretrain-epochs 4] [--epochs 2] [--limit 1000]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._data import build_hdf5, image_folder_splits  # noqa: E402

SHARED = Path(os.environ.get("ALEXNET_SHARED_DATA", ROOT.parent / "shared" / "data"))  # as tests/conftest.py


def train(args: argparse.Namespace, data: Path, run_dir: Path, epochs: int, *extra: str) -> list[dict[str, str]]:
    """One `alexnet train` run (resumed if it was cut short); its metrics.csv rows."""
    cmd = [
        sys.executable, "-m", "alexnet_cli", "train", "--data", str(data), "--run-dir", str(run_dir),
        "--epochs", str(epochs), "--batch-size", str(args.batch_size), "--lr", str(args.lr),
        "--bias-init", str(args.bias_init), "--workers", str(args.workers), "--gpus", "0",
        "--resume", "auto", "--log-every", "20", *extra,
    ]
    print("$", " ".join(cmd), flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, check=False, env={**os.environ, "PYTHONPATH": str(ROOT)}).returncode
    if code != 0:
        sys.exit(code)
    print(f"  ({time.perf_counter() - start:.0f} s)", flush=True)
    return list(csv.DictReader(open(run_dir / "metrics.csv")))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/alexnet-bench/finetune"))
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--epochs", type=int, default=2, help="epochs of each run on the target data")
    p.add_argument("--limit", type=int, default=1000, help="target training images per epoch (--limit)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--bias-init", type=float, default=0.1)
    p.add_argument("--workers", type=int, default=2)
    a = p.parse_args()
    for name in ("imagenette-subset", "tiny-imagenet-10"):
        if not (SHARED / name / "train").is_dir():
            sys.exit(f"{SHARED / name}: missing (see ../shared/data/README.md)")
    source = build_hdf5(a.work / "imagenette-subset.h5", *image_folder_splits(SHARED / "imagenette-subset"))
    target = build_hdf5(a.work / "tiny-imagenet-10.h5", *image_folder_splits(SHARED / "tiny-imagenet-10"))

    train(a, source, a.work / "pretrain", a.pretrain_epochs)
    pretrained = a.work / "pretrain" / "best.pt"
    limit = ("--limit", str(a.limit))
    runs = {
        "scratch": train(a, target, a.work / "scratch", a.epochs, *limit),
        "finetune": train(a, target, a.work / "finetune", a.epochs, *limit, "--init-from", str(pretrained)),
        "frozen": train(a, target, a.work / "frozen", a.epochs, *limit, "--init-from", str(pretrained),
                        "--freeze", "features"),
    }
    print("\n| run | epoch | train loss | train top-1 | val loss | val top-1 | val top-5 | img/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, rows in runs.items():
        for r in rows:
            print(f"| {name} | {r['epoch']} | {float(r['train_loss']):.3f} | {float(r['train_top1']):.1f} | "
                  f"{float(r['val_loss']):.3f} | {float(r['val_top1']):.1f} | {float(r['val_top5']):.1f} | "
                  f"{float(r['images_per_s']):.1f} |")
    best = {name: max(float(r["val_top1"]) for r in rows) for name, rows in runs.items()}
    print(f"best val top-1: {', '.join(f'{k} {v:.1f}%' for k, v in best.items())}")
    print(f"ratio finetune / scratch best val top-1: {best['finetune'] / max(best['scratch'], 1e-9):.2f}x")


if __name__ == "__main__":
    main()
