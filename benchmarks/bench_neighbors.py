"""Neighbours over a synthetic 100k-row gallery: rows/s and peak memory of the chunked search.

A features file (the format `alexnet features` writes) of --rows ReLU'd Gaussian 4096-d rows
(fc7-like; 1.6 GB at 100k) is written once. Each setting then runs in a fresh process:
`neighbors.nearest` for 5 queries (Figure 4 shows 5) and k = 6, reading --chunk-mb MiB of
gallery at a time, printing the gallery rows scanned per second and the peak resident memory
above what the process held before the search (sampled every 2 ms). The baseline is the whole gallery
read into memory at once (what an unchunked search needs). The ratio printed last: the
gallery's size over the 64 MiB search's extra peak memory.

    python benchmarks/bench_neighbors.py [--rows 100000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alexnet_cli.features import FORMAT_NAME, FORMAT_VERSION  # noqa: E402

DIM = 4096


def write_gallery(path: Path, rows: int) -> Path:
    """The synthetic features file, written once (block by block: bounded memory here too)."""
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    tmp = path.with_name(path.name + ".partial")
    with h5py.File(tmp, "w") as f:
        f.attrs.update(format=FORMAT_NAME, format_version=FORMAT_VERSION, layer="fc7", weights_sha256="synthetic",
                       data="", split="")
        ds = f.create_dataset("features", (rows, DIM), np.float32, chunks=(64, DIM))
        for start in range(0, rows, 4096):
            n = min(4096, rows - start)
            ds[start : start + n] = np.maximum(rng.standard_normal((n, DIM), dtype=np.float32), 0)
        f.create_dataset("sources", data=[f"synthetic/{i}" for i in range(rows)], dtype=h5py.string_dtype())
        f.create_dataset("index", data=np.arange(rows))
        f.create_dataset("labels", data=np.full(rows, -1))
    tmp.rename(path)
    return path


def rss_mb() -> float:
    """This process's resident memory now (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRss:
    """The highest resident memory seen while the block runs, sampled every 2 ms (ru_maxrss would
    report the peak of the whole process, which importing torch already sets)."""

    def __enter__(self):
        self.before, self.peak, self.running = rss_mb(), rss_mb(), True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.002)

    def __exit__(self, *exc) -> None:
        self.running = False
        self.thread.join()
        self.peak = max(self.peak, rss_mb())


def search(path: Path, chunk_mb: int) -> dict:
    """One setting, in this (fresh) process; chunk_mb 0: the whole gallery in memory at once."""
    import torch

    from alexnet_cli.features import FeaturesFile
    from alexnet_cli.neighbors import nearest

    torch.set_num_threads(2)
    gallery = FeaturesFile(path)
    queries = np.asarray(gallery.features[[10, *(len(gallery) * np.arange(1, 5) // 5)]]) + 0.01
    nearest(queries, gallery.features[:64], 6, 64)  # warm-up (1 MiB): kernels, thread pool
    with PeakRss() as memory:
        start = time.perf_counter()
        if chunk_mb:
            rows, _ = nearest(queries, gallery.features, 6, (chunk_mb << 20) // (4 * DIM))
        else:
            rows, _ = nearest(queries, gallery.features[()], 6, len(gallery))
        seconds = time.perf_counter() - start
    assert rows[0, 0] == 10  # the first query is row 10 plus 0.01
    return {"seconds": seconds, "rows_per_s": len(gallery) / seconds, "extra_peak_mb": memory.peak - memory.before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--work", type=Path, default=Path("/tmp/alexnet-bench/neighbors"))
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: one setting
    a = p.parse_args()
    path = write_gallery(a.work / f"gallery-{a.rows}.h5", a.rows)
    if a.one is not None:
        print(json.dumps(search(path, a.one)))
        return
    size_mb = a.rows * DIM * 4 / 2**20
    print(f"gallery: {a.rows:,} rows x {DIM} float32 = {size_mb:,.0f} MiB ({path})")
    print("\n| read per step | rows/s (median) | seconds | extra peak memory |")
    print("|---|---:|---:|---:|")
    results = {}
    for chunk_mb in (16, 64, 256, 0):
        runs = []
        for _ in range(a.rounds):
            out = subprocess.run([sys.executable, __file__, "--rows", str(a.rows), "--work", str(a.work),
                                  "--one", str(chunk_mb)], capture_output=True, text=True, check=True)
            runs.append(json.loads(out.stdout))
        rate = statistics.median(r["rows_per_s"] for r in runs)
        peak = max(r["extra_peak_mb"] for r in runs)
        results[chunk_mb] = peak
        label = f"--chunk-mb {chunk_mb}" if chunk_mb else "whole gallery (baseline)"
        print(f"| {label} | {rate:,.0f} | {a.rows / rate:.2f} | {peak:,.0f} MiB |")
    print(f"\nratio gallery size / extra peak memory at --chunk-mb 64: {size_mb / max(results[64], 1):.1f}x")


if __name__ == "__main__":
    main()
