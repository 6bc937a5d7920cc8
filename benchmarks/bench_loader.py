"""Input pipeline: augmented training batches per second, ours vs pytorch/examples' ImageNet loader.

Ours: the HDF5 shards (256x256 JPEG, as prep stores them) -> DataLoader workers (read one
slice, decode, cut and reflect the uint8 patch) -> augment.train_input on the training
device (mean image, PCA lighting): float batches ready for the model.
Baseline: pytorch/examples imagenet/main.py: torchvision ImageFolder + PIL +
RandomResizedCrop(224) + RandomHorizontalFlip + ToTensor + Normalize, same workers and batch.
Both on ../shared/data/imagenet-sample (1000 real ImageNet JPEGs), both on the CPU, rounds
interleaved so that a noisy machine slows both alike. The last line prints the ratio.

    python benchmarks/bench_loader.py [--workers 2] [--batch-size 128] [--rounds 3]

--device-mode: the path that feeds a GPU instead, against the decode bound. Workers read and
decode whole images; the main process only hands each batch on from the workers' shared memory
(to the GPU by DMA when there is one, which cuts and reflects the patches and does the float
work: loader.ToDevice; without one it borrows the batch, and in a fourth measurement copies it
out, what a copy from unregistered memory costs). In the same rounds: decoding alone, one process, the fastest decoder
installed (the bound a worker core could reach), then the loader with 1 and with 2 workers.
The last line: `device-mode: X img/s per worker core = Y% of decode bound; 1->2 workers Z x`.

    python benchmarks/bench_loader.py --device-mode [--rounds 5] [--passes 32]
"""

from __future__ import annotations

import argparse
import csv
import resource
import statistics
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._data import build_hdf5  # noqa: E402

from alexnet_cli.data import loader  # noqa: E402
from alexnet_cli.data.augment import pca_from_stats, train_input  # noqa: E402
from alexnet_cli.data.format.index import PreparedDataset  # noqa: E402
from alexnet_cli.data.transforms import preprocess_from_stats  # noqa: E402
from alexnet_cli.memory import keep_freed_memory  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"


def sample_hdf5(src: Path, out: Path, codec: str) -> Path:
    """The sample as a prepared dataset (one 'train' split) stored with `codec`, built once."""
    rows = list(csv.DictReader(open(src / "labels.csv")))
    wnids = sorted({r["wnid"] for r in rows})
    label = {w: i for i, w in enumerate(wnids)}
    items = [(src / r["file"], label[r["wnid"]]) for r in rows]
    name = "imagenet-sample.h5" if codec == "jpeg" else f"imagenet-sample-{codec}.h5"
    return build_hdf5(out / name, {"train": items}, [(w, w) for w in wnids], codec=codec)


def image_folder(src: Path, out: Path) -> Path:
    """The flat sample as ImageFolder's class folders (symlinks)."""
    root = out / "imagefolder"
    if not root.exists():
        for r in csv.DictReader(open(src / "labels.csv")):
            (root / r["wnid"]).mkdir(parents=True, exist_ok=True)
            (root / r["wnid"] / r["file"]).symlink_to(src / r["file"])
    return root


@dataclass
class Measure:
    images: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process and its loader workers
    main_cpu_seconds: float = 0.0  # this process alone

    @property
    def rate(self) -> float:
        return self.images / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_seconds / self.images

    @property
    def main_ms(self) -> float:
        return 1000 * self.main_cpu_seconds / self.images

    @property
    def worker_ms(self) -> float:
        return self.cpu_ms - self.main_ms


def _cpu() -> tuple[float, float]:
    """CPU seconds of (this process, its exited children)."""
    own, workers = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime, workers.ru_utime + workers.ru_stime


@contextmanager
def measured():
    """Wall time and CPU time (ours + the workers', counted once they have exited): CPU time
    per image is what a busy, shared machine distorts least."""
    m, start, cpu = Measure(), time.perf_counter(), _cpu()
    yield m
    m.seconds = time.perf_counter() - start
    own, workers = _cpu()
    m.main_cpu_seconds = own - cpu[0]
    m.cpu_seconds = m.main_cpu_seconds + workers - cpu[1]


def ours(index: Path, workers: int, batch_size: int, epoch: int, passes: int) -> Measure:
    ds = PreparedDataset(index)
    preprocess = preprocess_from_stats(ds.stats.mean_image)
    pca = pca_from_stats(ds.stats.eigenvalues, ds.stats.eigenvectors)
    images = loader.StoredImages(ds.split("train"), train=True, seed=0)
    batches = loader.epoch_batches(np.tile(np.arange(len(images)), passes), batch_size, seed=0, epoch=epoch)
    with measured() as m:
        # borrowed, as `alexnet train` on the CPU takes them: train_input makes new tensors first
        for batch in loader.batch_loader(images, batches, workers, borrow=True):
            # channels_last: the layout `alexnet train` gives the network on the CPU (train.set_up)
            m.images += train_input(batch, preprocess, pca, "cpu", memory_format=torch.channels_last).shape[0]
    return m


def decode_bound(index: Path) -> tuple[Measure, str]:
    """Decoding every stored image once, one process, with the decoder that took the least
    CPU time: simplejpeg into a reused buffer (the loader's) or torchvision's decode_jpeg."""
    reader = PreparedDataset(index).split("train")
    encoded = [reader.read_encoded(i)[0] for i in range(len(reader))]
    decoders = {}
    try:
        import simplejpeg

        buffer = np.empty((256, 256, 3), np.uint8)
        decoders["simplejpeg"] = lambda: [simplejpeg.decode_jpeg(e, "RGB", buffer=buffer) for e in encoded]
    except ImportError:
        pass
    try:
        import warnings

        from torchvision.io import decode_jpeg

        tensors = [torch.from_numpy(e.copy()) for e in encoded]
        warnings.filterwarnings("ignore", category=DeprecationWarning)  # torchvision 0.29's image decoders
        decoders["torchvision"] = lambda: [decode_jpeg(t) for t in tensors]
    except ImportError:
        pass
    best = None
    for name, decode in decoders.items():
        with measured() as m:
            decode()
        m.images = len(encoded)
        if best is None or m.cpu_seconds < best[0].cpu_seconds:
            best = (m, name)
    return best


def device_mode(index: Path, workers: int, batch_size: int, epoch: int, passes: int, copied: bool = False) -> Measure:
    """The loader as it feeds a GPU (`alexnet train` on CUDA with CPU decoding): workers decode
    whole images, no float work in the main process; with CUDA each batch goes to the device
    from the workers' buffers, registered with CUDA, which cuts the patches (loader.ToDevice).
    Without a GPU the main process borrows each batch from the workers' shared memory and
    does nothing with it, as it does nothing with a DMA from there; `copied`: it copies each
    batch out instead, what CUDA's staging of a copy from unregistered memory costs the CPU."""
    cuda = torch.cuda.is_available()
    images = loader.StoredImages(PreparedDataset(index).split("train"), train=True, seed=0, crop=False)
    batches = loader.epoch_batches(np.tile(np.arange(len(images)), passes), batch_size, seed=0, epoch=epoch)
    take = loader.ToDevice(torch.device("cuda"), crop=True) if cuda else None
    with measured() as m:
        for batch in loader.batch_loader(images, batches, workers, pin_memory=cuda, take=take, borrow=not copied):
            m.images += batch["images"].shape[0]
        if cuda:
            torch.cuda.synchronize()
    return m


def main_device_mode(a: argparse.Namespace, index: Path) -> None:
    cuda = torch.cuda.is_available()
    print(f"{a.src}: 1000 images x {a.passes} passes a measurement, batch {a.batch_size}, "
          + ("CUDA: buffers registered with CUDA, copy to the GPU, patches cut there" if cuda else
             "no GPU: batches borrowed from the workers' shared memory (as a DMA to a GPU reads them); "
             "'copied': copied out of it instead"))
    runs: dict[str, list[Measure]] = {"bound": [], "1 worker": [], "2 workers": []}
    if not cuda:
        runs["2 workers, copied"] = []
    for r in range(a.rounds):
        bound, decoder = decode_bound(index)
        runs["bound"].append(bound)
        for w in (1, 2):
            runs[f"{w} worker{'s' if w > 1 else ''}"].append(device_mode(index, w, a.batch_size, r, a.passes))
        if not cuda:
            runs["2 workers, copied"].append(device_mode(index, 2, a.batch_size, r, a.passes, copied=True))
        print(f"round {r + 1}: decode bound ({decoder}) {bound.rate:.0f} img/s ({bound.cpu_ms:.3f} CPU ms/img), "
              + ", ".join(f"{k} {v[-1].rate:.0f} img/s (CPU ms/img: workers {v[-1].worker_ms:.3f}, main {v[-1].main_ms:.3f})"
                          for k, v in runs.items() if k != "bound"), flush=True)
    rate = {k: statistics.median(m.rate for m in v) for k, v in runs.items()}
    cpu = {k: statistics.median(m.cpu_ms for m in v) for k, v in runs.items()}
    worker = {k: statistics.median(m.worker_ms for m in v) for k, v in runs.items()}
    main = {k: statistics.median(m.main_ms for m in v) for k, v in runs.items()}
    print(f"median: decode bound {rate['bound']:.0f} img/s ({cpu['bound']:.3f} CPU ms/img); "
          + "; ".join(f"{k} {rate[k]:.0f} img/s (CPU ms/img: workers {worker[k]:.3f}, main {main[k]:.3f})"
                      for k in runs if k != "bound"))
    if not cuda:
        print(f"copied out instead of borrowed: 1->2 workers {rate['2 workers, copied'] / rate['1 worker']:.2f} x")
    print(f"CPU time: a worker core {1000 / worker['1 worker']:.0f} img/s = {100 * cpu['bound'] / worker['1 worker']:.0f}% "
          f"of decode bound; with the main process's share {100 * cpu['bound'] / cpu['1 worker']:.0f}%")
    print(f"device-mode: {rate['1 worker']:.0f} img/s per worker core = {100 * rate['1 worker'] / rate['bound']:.0f}% "
          f"of decode bound; 1->2 workers {rate['2 workers'] / rate['1 worker']:.2f} x")


def pytorch_examples(root: Path, workers: int, batch_size: int, passes: int) -> Measure:
    import torchvision.transforms as T
    from torchvision.datasets import ImageFolder

    normalize = T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    transform = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    folder = torch.utils.data.ConcatDataset([ImageFolder(root, transform)] * passes)
    data = torch.utils.data.DataLoader(folder, batch_size=batch_size, shuffle=True, num_workers=workers)
    with measured() as m:
        for x, _ in data:
            m.images += x.shape[0]
    return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--src", type=Path, default=SAMPLE)
    p.add_argument("--cache", type=Path, default=Path("/tmp/alexnet-bench"), help="where the HDF5 copy is built once")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--passes", type=int,
                   help="each measured epoch goes over the 1000 images this many times: a real epoch "
                        "(1.28M images) does not restart its workers every 1000 images, for either pipeline "
                        "(default 8; 32 with --device-mode, whose passes take a few times less time: starting "
                        "the workers and draining the last batch weigh more in them, docs/benchmarks.md)")
    p.add_argument("--threads", type=int, default=1, help="torch threads of the main process")
    p.add_argument("--codecs", default="jpeg,raw", help="how our HDF5 copies store the images (prep's --codec)")
    p.add_argument("--device-mode", action="store_true", help="the GPU-feeding path against the decode bound (above)")
    a = p.parse_args()
    a.passes = a.passes or (32 if a.device_mode else 8)
    keep_freed_memory()  # as `alexnet train` does on the CPU; forked loader workers of both inherit it
    # The workers fill the cores; an OpenMP team in the main process would only contend with
    # them (its barriers stall when a thread is descheduled). The baseline's main process idles.
    torch.set_num_threads(a.threads)
    if not (a.src / "labels.csv").exists():
        sys.exit(f"{a.src}: the imagenet-sample folder is missing (see ../shared/data/README.md)")
    if a.device_mode:
        main_device_mode(a, sample_hdf5(a.src, a.cache, "jpeg"))
        return
    folder = image_folder(a.src, a.cache)
    indexes = {codec: sample_hdf5(a.src, a.cache, codec) for codec in a.codecs.split(",")}
    print(f"{a.src}: 1000 images x {a.passes} passes an epoch, batch {a.batch_size}, {a.workers} workers, {torch.get_num_threads()} torch thread(s) in the main process")
    names = [f"ours ({codec})" for codec in indexes]
    runs: dict[str, list[Measure]] = {name: [] for name in [*names, "pytorch/examples"]}
    for r in range(a.rounds):
        for name, index in zip(names, indexes.values()):
            runs[name].append(ours(index, a.workers, a.batch_size, epoch=r, passes=a.passes))
        runs["pytorch/examples"].append(pytorch_examples(folder, a.workers, a.batch_size, a.passes))
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1].rate:.0f} img/s ({v[-1].cpu_ms:.2f} CPU ms/img)" for k, v in runs.items()), flush=True)
    rate = {k: statistics.median(m.rate for m in v) for k, v in runs.items()}
    cpu = {k: statistics.median(m.cpu_ms for m in v) for k, v in runs.items()}
    print("median: " + ", ".join(f"{k} {rate[k]:.0f} img/s, {cpu[k]:.2f} CPU ms/img" for k in runs))
    base = "pytorch/examples"
    print("CPU time ratio pytorch-examples/ours: " + ", ".join(f"{cpu[base] / cpu[n]:.2f}x {n[6:-1]}" for n in names))
    print("ratio ours/pytorch-examples (images/s): " + ", ".join(f"{rate[n] / rate[base]:.2f}x {n[6:-1]}" for n in names))

if __name__ == "__main__":
    main()
