"""`alexnet features`: a layer's activations for image files, folders or a prepared split, in HDF5.

Each image goes through predict's pixels (`imaging.load_256`, or the stored 256x256 crop) and
eval's center-crop input, then the network up to `--layer` (model.LAYER_OUTPUTS), flattened
to one float32 row. The file (format "alexnet-cli features", version 1; docs/export.md):

    features  float32 [rows, dim]   one row per image, in input order (unreadable files skipped)
    sources   utf-8 [rows]          the file as given, or the file prep read for a split's image
    index     int64 [rows]          the image's position in the split; -1 for image files
    labels    int64 [rows]          its class in the dataset's class list; -1 for image files
    attrs     format, format_version, created_by, layer, checkpoint, weights_sha256 (of the
              weights and preprocessing), inputs_sha256, data (the dataset index, or ""),
              split (or ""), inputs (how many were given)

The rows go to ``OUT.partial`` as they are computed, with the count of inputs done; a rerun of
the same command (same weights, layer and inputs) continues from there, and only the finished
file is renamed to OUT.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from alexnet_cli import __version__
from alexnet_cli.classifier import Classifier, load_classifier
from alexnet_cli.config import FeaturesConfig
from alexnet_cli.data import loader
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.transforms import network_input
from alexnet_cli.devices import placement
from alexnet_cli.errors import InputError
from alexnet_cli.evaluate import loader_workers
from alexnet_cli.fileio import check_new_file, commit, os_reason
from alexnet_cli.model import LAYER_OUTPUTS, layer_output
from alexnet_cli.predict import ImageInput, collect_inputs, load_input

FORMAT_NAME = "alexnet-cli features"
FORMAT_VERSION = 1
SUFFIXES = (".h5", ".hdf5")
CHUNK_BYTES = 1 << 20  # HDF5 chunks of about 1 MiB of rows: whole rows, cheap to append and scan
_STR = h5py.string_dtype("utf-8")
# What a partial file must share with the run to be continued: the same rows would come out
# (the checkpoint's path or the program's version may differ).
RESUME_KEYS = ("format_version", "layer", "weights_sha256", "inputs_sha256")


@dataclass
class Batch:
    """Images to embed, and where the run stands once they are written."""

    pixels: torch.Tensor | None  # uint8 [B, 256, 256, 3]; None if every input of the batch failed
    sources: list[str]
    index: np.ndarray  # int64 [B]: position in the split, -1 for files
    labels: np.ndarray  # int64 [B]: dataset label, -1 for files
    done: int  # inputs consumed after this batch: the resume point
    failures: list[str] = field(default_factory=list)  # one line per input skipped in this batch


class Inputs:
    """What to embed: image files (found as `predict` finds them) or one prepared split."""

    def __init__(
        self, files: list[ImageInput] | None = None, dataset: PreparedDataset | None = None, split: str = ""
    ):
        self.files, self.dataset, self.split = files, dataset, split
        self.reader = dataset.split(split) if dataset is not None else None

    @classmethod
    def from_args(cls, args: Sequence[str], split: str) -> Inputs:
        """IMAGE arguments: files and folders, or a prepared dataset's index file alone."""
        datasets = [a for a in args if Path(a).suffix.lower() in SUFFIXES and Path(a).is_file()]
        if not datasets:
            return cls(files=collect_inputs(args))
        if len(args) > 1:
            raise InputError(
                f"{datasets[0]}: give a prepared dataset alone (with --split), or image files and folders"
            )
        return cls(dataset=PreparedDataset(datasets[0]), split=split)

    def __len__(self) -> int:
        return len(self.files) if self.files is not None else len(self.reader)

    def describe(self) -> dict[str, str]:
        return {"data": str(self.dataset.path) if self.dataset else "", "split": self.split}

    def fingerprint(self) -> str:
        """Changes when the inputs do: a split's index file and its shards' content checksums
        (stored by prep), or each file's name, size and modification time."""
        h = hashlib.sha256()
        if self.dataset is not None:
            h.update(self.dataset.path.read_bytes())
            h.update(self.split.encode())
            for shard in self.reader.shard_paths:
                try:
                    with h5py.File(shard, "r") as f:
                        h.update(str(f.attrs.get("sha256", shard.name)).encode())
                except OSError:
                    raise InputError(
                        f"{shard}: shard missing or unreadable; restore it or rerun `alexnet prep`"
                    ) from None
            return h.hexdigest()
        for item in self.files:
            stat = item.source.stat() if isinstance(item.source, Path) else None
            h.update(
                f"{item.name}\0{stat.st_size if stat else -1}\0{stat.st_mtime_ns if stat else -1}\n".encode()
            )
        return h.hexdigest()

    def batches(self, start: int, batch_size: int, workers: int) -> Iterator[Batch]:
        """Batches from input `start` on."""
        if self.dataset is not None:
            yield from self._split_batches(start, batch_size, workers)
        else:
            yield from self._file_batches(start, batch_size, workers)

    def _split_batches(self, start: int, batch_size: int, workers: int) -> Iterator[Batch]:
        sources = self.reader.sources()
        batches = [
            loader.LocalBatch(0, np.arange(i, min(i + batch_size, len(self.reader))), 0)
            for i in range(start, len(self.reader), batch_size)
        ]
        stored = loader.StoredImages(self.reader, train=False)
        with closing(loader.batch_loader(stored, batches, workers)) as batch_iter:
            for batch, b in zip(batch_iter, batches, strict=True):
                index = b.indices
                yield Batch(
                    batch["images"],
                    [sources[i] for i in index],
                    index,
                    batch["labels"].numpy().astype(np.int64),
                    int(index[-1]) + 1,
                )

    def _file_batches(self, start: int, batch_size: int, threads: int) -> Iterator[Batch]:
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for at in range(start, len(self.files), batch_size):
                chunk = self.files[at : at + batch_size]
                loaded = list(pool.map(load_input, chunk))
                good = [
                    (item.name, px)
                    for item, px in zip(chunk, loaded, strict=True)
                    if isinstance(px, np.ndarray)
                ]
                pixels = torch.from_numpy(np.stack([px for _, px in good])) if good else None
                n = len(good)
                yield Batch(
                    pixels,
                    [name for name, _ in good],
                    np.full(n, -1),
                    np.full(n, -1),
                    at + len(chunk),
                    [px for px in loaded if isinstance(px, str)],
                )


@torch.inference_mode()
def embed(classifier: Classifier, pixels: torch.Tensor, layer: str) -> np.ndarray:
    """uint8 [B, 256, 256, 3] -> float32 [B, dim]: `layer`'s output for each image's center crop."""
    x = network_input(pixels.to(classifier.device, non_blocking=True), classifier.preprocess, ten_crop=False)
    return layer_output(classifier.model, x, layer).flatten(1).float().cpu().numpy()


def weights_fingerprint(classifier: Classifier) -> str:
    """sha256 of the weights and the preprocessing: what the features depend on, whatever the
    file they came from (a checkpoint and its .safetensors export agree)."""
    h = hashlib.sha256()
    for name, tensor in classifier.model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy())
    for key, value in sorted(classifier.preprocess.items()):
        h.update(key.encode())
        h.update(
            value.cpu().contiguous().numpy() if isinstance(value, torch.Tensor) else repr(value).encode()
        )
    return h.hexdigest()


@dataclass
class FeaturesResult:
    output: Path
    layer: str
    rows: int
    dim: int
    inputs: int
    resumed_at: int  # inputs already done by an earlier, interrupted run
    failed: list[str]  # one line per input that could not be read (this run's)
    seconds: float

    def to_json(self) -> dict[str, Any]:
        done_here = self.inputs - self.resumed_at
        return {
            **{
                k: getattr(self, k)
                for k in ("layer", "rows", "dim", "inputs", "resumed_at", "failed", "seconds")
            },
            "output": str(self.output),
            "images_per_s": done_here / self.seconds if self.seconds > 0 else 0.0,
        }


def check_layer(layer: str) -> None:
    if layer not in LAYER_OUTPUTS:
        raise InputError(f"--layer {layer}: choose one of {', '.join(LAYER_OUTPUTS)}")


def check_output(out: Path, force: bool) -> Path:
    """OUT may be written (an .h5 file, not there unless `force`); returns its partial file."""
    if out.suffix.lower() not in SUFFIXES:
        raise InputError(f"{out}: features are written as HDF5; end the file name in .h5")
    check_new_file(out, force)
    return out.with_name(out.name + ".partial")


def extract(
    classifier: Classifier,
    inputs: Inputs,
    config: FeaturesConfig,
    checkpoint: str,
    progress: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] = lambda line: None,
    fingerprint: str | None = None,
) -> FeaturesResult:
    """Embed every input into config.out, resuming a matching OUT.partial; see the module doc."""
    start_time = time.perf_counter()
    check_layer(config.layer)
    partial = check_output(config.out, config.force)
    attrs = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"alexnet-cli {__version__}",
        "layer": config.layer,
        "checkpoint": checkpoint,
        "weights_sha256": fingerprint or weights_fingerprint(classifier),
        "inputs_sha256": inputs.fingerprint(),
        "inputs": len(inputs),
        **inputs.describe(),
    }
    f, done = _open_partial(partial, attrs, config.force, say)
    resumed_at, failed = done, []
    workers = loader_workers() if config.workers is None else config.workers
    try:
        with f:
            for batch in inputs.batches(done, config.batch_size, workers):
                if batch.pixels is not None:
                    _append(f, embed(classifier, batch.pixels, config.layer), batch)
                for line in batch.failures:
                    say(f"skipped {line}")
                failed += batch.failures
                f.attrs["inputs_done"] = batch.done
                f.flush()
                if progress is not None:
                    progress(batch.done, len(inputs))
            shape = f["features"].shape if "features" in f else None
        if shape is None:
            partial.unlink()
            raise InputError(f"{config.out}: none of the {len(inputs)} inputs could be read; nothing written")
        commit(partial, config.out)
    except OSError as e:  # a full disk: h5py's report holds the OS's reason
        raise InputError(
            f"{partial}: could not write ({os_reason(e)}); free space and rerun to resume"
        ) from None
    except (KeyboardInterrupt, InputError):
        if partial.exists():
            say(f"{partial} keeps the rows done so far: rerun the same command to continue")
        raise
    return FeaturesResult(
        config.out, config.layer, *shape, len(inputs), resumed_at, failed, time.perf_counter() - start_time
    )


def _open_partial(
    partial: Path, attrs: dict[str, Any], force: bool, say: Callable[[str], None]
) -> tuple[h5py.File, int]:
    """The partial file to continue (same weights, layer and inputs) or a new one; inputs done."""
    if partial.exists() and not force:
        try:
            f = h5py.File(partial, "a")
            same = all(f.attrs.get(k) == attrs[k] for k in RESUME_KEYS)
            if same and "inputs_done" in f.attrs:
                done = int(f.attrs["inputs_done"])
                say(f"resuming {partial}: {done:,} of {attrs['inputs']:,} inputs already done")
                return f, done
            f.close()
            say(f"{partial}: from another checkpoint, layer or inputs; starting over")
        except OSError:  # cut off mid-write by a kill: nothing in it can be trusted
            say(f"{partial}: unreadable (interrupted mid-write?); starting over")
    try:
        f = h5py.File(partial, "w")
    except OSError as e:
        raise InputError(f"{partial}: cannot write ({os_reason(e)}); choose another path") from None
    f.attrs.update(attrs)
    return f, 0


def _append(f: h5py.File, rows: np.ndarray, batch: Batch) -> None:
    """Add a batch's rows (the datasets are made at the first one: its width is the layer's)."""
    if "features" not in f:
        dim = rows.shape[1]
        chunk = max(1, CHUNK_BYTES // (4 * dim))
        f.create_dataset("features", (0, dim), np.float32, maxshape=(None, dim), chunks=(chunk, dim))
        for name, dtype in (("sources", _STR), ("index", np.int64), ("labels", np.int64)):
            f.create_dataset(name, (0,), dtype, maxshape=(None,), chunks=(max(chunk, 1024),))
    n = f["features"].shape[0]
    for name, values in (
        ("features", rows),
        ("sources", batch.sources),
        ("index", batch.index),
        ("labels", batch.labels),
    ):
        ds = f[name]
        ds.resize(n + len(rows), axis=0)
        ds[n:] = values


class FeaturesFile:
    """A finished features file, opened for reading (`neighbors` scans it as the gallery)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.file = h5py.File(self.path, "r")
        except OSError:
            raise InputError(
                f"{self.path}: not an HDF5 file; give one written by `alexnet features`"
            ) from None
        self.attrs = dict(self.file.attrs)
        if self.attrs.get("format") != FORMAT_NAME or "features" not in self.file:
            self.file.close()
            raise InputError(f"{self.path}: not a features file; write one with `alexnet features`")
        if int(self.attrs.get("format_version", -1)) > FORMAT_VERSION:
            self.file.close()
            raise InputError(
                f"{self.path}: features format {self.attrs['format_version']} is newer than this alexnet-cli"
            )
        self.features: h5py.Dataset = self.file["features"]

    def __len__(self) -> int:
        return self.features.shape[0]

    def rows(self, rows: Sequence[int], name: str = "features") -> np.ndarray:
        """Dataset `name` at `rows`, in any order and with repeats (HDF5 reads increasing rows)."""
        unique, inverse = np.unique(np.asarray(rows), return_inverse=True)
        dataset = self.file[name].asstr() if name == "sources" else self.file[name]
        return np.asarray(dataset[unique])[inverse]

    def close(self) -> None:
        self.file.close()


def one_device(gpus: int | None) -> list[torch.device]:
    """The device for features: the CPU or one GPU (layer outputs need both towers together)."""
    if gpus == 2:
        raise InputError("--gpus 2: features are computed on one device; use --gpus 1 (or 0 for the CPU)")
    return placement(gpus).devices


def run_features(
    checkpoint: str,
    args: Sequence[str],
    config: FeaturesConfig,
    progress: Callable[[int, int], None] | None = None,
    say: Callable[[str], None] = lambda line: None,
) -> FeaturesResult:
    """`alexnet features`: check the options, find the inputs, load the network, extract."""
    check_layer(config.layer)
    check_output(config.out, config.force)
    inputs = Inputs.from_args(args, config.split)
    classifier = load_classifier(one_device(config.gpus), checkpoint)
    return extract(classifier, inputs, config, str(checkpoint), progress, say)
