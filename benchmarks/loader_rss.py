"""Memory over a long loader run: does the training input pipeline leak?

`alexnet prep` of ../shared/data/imagenet-sample (1000 real JPEGs, one class folder each,
linked), then 10 epochs of training batches exactly as `alexnet train` reads them
(loader.epoch_batches -> StoredImages -> batch_loader with worker processes ->
augment.train_input to float batches), batch 128. After every batch it samples the resident
memory (VmRSS) of the main process and of each worker (summed), and the proportional set size
(Pss: shared pages divided among the processes sharing them, so forked workers' copy-on-write
pages count once) of all of them together. Prints one row per epoch (the largest sample in it)
and, on the last line, the growth from the first epoch to the last and each column's range.
The main process keeps freed heap as `alexnet train` does on the CPU (train.keep_freed_memory,
up to 1 GiB), so its RSS moves from epoch to epoch within that allowance.

    python benchmarks/loader_rss.py [--epochs 10] [--workers 2] [--batch-size 128] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alexnet_cli.data import loader  # noqa: E402
from alexnet_cli.data.augment import pca_from_stats, train_input  # noqa: E402
from alexnet_cli.data.format.index import PreparedDataset  # noqa: E402
from alexnet_cli.data.transforms import preprocess_from_stats  # noqa: E402
from alexnet_cli.memory import keep_freed_memory  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
MIB = 1024 * 1024


def prepared_sample(work: Path) -> Path:
    """The sample as class folders of links, prepared by `alexnet prep` (once per workdir)."""
    out = work / "sample.h5"
    if out.exists():
        return out
    folders = work / "folders"
    for row in csv.DictReader(open(SAMPLE / "labels.csv")):
        (folders / row["wnid"]).mkdir(parents=True, exist_ok=True)
        (folders / row["wnid"] / row["file"]).symlink_to(SAMPLE / row["file"])
    subprocess.run([sys.executable, "-m", "alexnet_cli", "prep", folders, out, "--workers", "2"],
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return out


def children(pid: int) -> list[int]:
    """Live child processes of `pid` (the loader's workers)."""
    out = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
        except FileNotFoundError:
            continue
    return out


def memory(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) of a process in bytes; (0, 0) once it is gone."""
    try:
        rss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmRSS:"))
        pss = next(int(line.split()[1]) for line in open(f"/proc/{pid}/smaps_rollup") if line.startswith("Pss:"))
    except (FileNotFoundError, ProcessLookupError, StopIteration):
        return 0, 0
    return rss * 1024, pss * 1024


def sample() -> tuple[int, int, int, int]:
    """(main RSS, workers' RSS summed, number of workers, Pss of all)."""
    main_rss, main_pss = memory(os.getpid())
    workers = [memory(c) for c in children(os.getpid())]
    return main_rss, sum(r for r, _ in workers), len(workers), main_pss + sum(p for _, p in workers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "alexnet-bench" / "loader-rss")
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    keep_freed_memory()  # as train does on the CPU
    dataset = PreparedDataset(prepared_sample(args.workdir))
    reader = dataset.split("train")
    preprocess, pca = preprocess_from_stats(dataset.stats.mean_image), pca_from_stats(dataset.stats.eigenvalues, dataset.stats.eigenvectors)
    images = loader.StoredImages(reader, train=True, seed=0)
    indices = loader.subset(len(reader), None)
    device = torch.device("cpu")
    print(f"loader_rss: {len(reader)} images, {args.epochs} epochs, batch {args.batch_size}, {args.workers} workers")
    print("epoch | main RSS MiB | workers RSS MiB (sum) | workers | all Pss MiB | batches | s")
    rows = []
    for epoch in range(args.epochs):
        t0, peak, batches = time.perf_counter(), (0, 0, 0, 0), 0
        for batch in loader.batch_loader(images, loader.epoch_batches(indices, args.batch_size, 0, epoch), args.workers):
            x = train_input(batch, preprocess, pca, device, memory_format=torch.channels_last)  # as train on the CPU
            assert x.shape[1:] == (3, 224, 224)
            del x, batch
            batches += 1
            peak = tuple(max(a, b) for a, b in zip(peak, sample()))
        main_rss, workers_rss, n_workers, pss = peak
        rows.append(peak)
        print(f"{epoch + 1:5d} | {main_rss / MIB:12.1f} | {workers_rss / MIB:21.1f} | {n_workers:7d} | "
              f"{pss / MIB:11.1f} | {batches:7d} | {time.perf_counter() - t0:.1f}", flush=True)
    (first_main, first_workers, _, first_pss), (last_main, last_workers, _, last_pss) = rows[0], rows[-1]

    def growth(a: int, b: int) -> str:
        return f"{(b - a) / MIB:+.1f} MiB ({100 * (b - a) / a:+.1f}%)"

    def span(k: int) -> str:
        return f"{min(r[k] for r in rows) / MIB:.0f}-{max(r[k] for r in rows) / MIB:.0f}"

    print(f"loader_rss: growth epoch 1 -> {args.epochs}: main RSS {growth(first_main, last_main)}, "
          f"workers RSS {growth(first_workers, last_workers)}, all Pss {growth(first_pss, last_pss)}; "
          f"range over the epochs (MiB): main {span(0)}, workers {span(1)}, Pss {span(3)}")


if __name__ == "__main__":
    main()
