"""`alexnet prep`: a dataset -> 256x256 crops in HDF5 shards, with the training set's mean and RGB PCA.

Section 2 gives the crops (shorter side to 256, central 256x256 patch) and the mean image;
section 4.1 the PCA of the RGB pixel values of the training set. Both statistics are computed
on the decoded 256x256 crops, before the storage codec, from exact integer sums that each shard
stores, so a resumed run merges to exactly the numbers of an uninterrupted one.

How the work is split, and why the output never depends on it:
- every split is cut into shards of `shard_size` consecutive images of its sorted input list,
  and each shard into chunks that worker processes decode, crop, encode and sum;
- the main process receives chunks in input order and appends them to the shard being written
  (``.partial``, renamed when whole), so the bytes depend on the inputs and settings only;
- a shard file stores the fingerprint of its planned inputs and settings: a rerun keeps every
  shard whose fingerprint matches, deletes ``.partial`` leftovers and redoes the rest; the
  index file, written last and atomically, is what makes the output complete.
At most a few chunks per worker are in flight, so memory stays bounded whatever the dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import re
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from alexnet_cli.config import JPEG_QUALITY, PrepConfig
from alexnet_cli.data import imaging
from alexnet_cli.data.format import FORMAT_NAME, FORMAT_VERSION, SHARD_FORMAT_NAME, shard_name
from alexnet_cli.data.format.codec import CODECS, JPEG_SUBSAMPLING, encode_image
from alexnet_cli.data.format.index import SplitMeta, write_index
from alexnet_cli.data.format.shards import ShardWriter, read_skipped
from alexnet_cli.data.format.stats import PixelSums, read_sums
from alexnet_cli.data.imaging import IMAGE_SIZE
from alexnet_cli.data.sources import Source, find_source, read_image_bytes
from alexnet_cli.devices import usable_cores
from alexnet_cli.errors import AlexnetError, InputError
from alexnet_cli.fileio import os_reason

STATS_ON = "decoded 256x256 crops of the training split, before the storage codec"
# --split: the splits to prep (None: every split the source has)
SPLIT_CHOICES = {None: None, "train": ("train",), "val": ("val",), "both": ("train", "val")}


@dataclass
class ShardPlan:
    split: str
    index: int
    path: Path
    start: int  # first image of the split in this shard
    stop: int
    fingerprint: str


@dataclass
class SplitSummary:
    images: int = 0
    skipped: int = 0
    shards: int = 0
    resumed_shards: int = 0


@dataclass
class PrepSummary:
    output: str
    layout: str
    classes: int
    splits: dict[str, SplitSummary]
    skipped: list[tuple[str, str, str]]  # (split, source, reason)
    elapsed_s: float
    processed: int  # images decoded by this run (resumed shards excluded)
    output_bytes: int
    workers: int
    ignored_files: int = 0
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "output": self.output,
            "layout": self.layout,
            "classes": self.classes,
            "splits": {k: vars(v) for k, v in self.splits.items()},
            "skipped": [{"split": s, "path": p, "reason": r} for s, p, r in self.skipped],
            "elapsed_s": round(self.elapsed_s, 3),
            "images_per_s": round(self.processed / self.elapsed_s, 1) if self.elapsed_s > 0 else 0.0,
            "processed": self.processed,
            "output_bytes": self.output_bytes,
            "workers": self.workers,
            "ignored_files": self.ignored_files,
            "notes": self.notes,
        }


Progress = Callable[[int, int], None]  # (images done incl. resumed, total)


def prepare(
    src: str | os.PathLike, out: str | os.PathLike, config: PrepConfig, progress: Progress | None = None
) -> PrepSummary:
    """Prepare SRC into OUT (index) plus shards beside it; resumes an interrupted run."""
    t0 = time.perf_counter()
    out = Path(out)
    _check_config(config)
    _check_output(out, config.force)
    with output_lock(out):
        source = find_source(src, config.layout, config.splits, config.devkit)
        unlabelled = [
            (s.name, printable(p), f"no label for this file in {s.labelled_by or 'the devkit'}")
            for s in source.splits.values()
            for p in s.unlabelled
        ]
        if config.strict and unlabelled:
            raise AlexnetError(_strict_message(unlabelled))
        plans = plan_shards(source, out, config)
        notes = []
        complete = out.exists()  # _check_output: then it is one of our datasets
        if complete and not config.force:
            # The same command again (a job requeued after prep ended): nothing to redo, and
            # nothing to overwrite. Anything else would replace the dataset: --force.
            if not made_by(out, plans):
                raise InputError(
                    f"{out}: a complete prepared dataset of other inputs or settings is already there; "
                    "pass --force to replace it"
                )
            notes.append(f"{out.name} is already complete with these inputs and settings: nothing to do")
        elif complete:
            out.unlink()  # the old output is now incomplete
            notes.append(f"replaced the previous {out.name} (--force)")
        done = resume_shards(plans, out, config.force)
        todo = [p for p in plans if p.path not in done]
        workers = max(1, config.workers or usable_cores())
        processed = write_shards(
            source, todo, config, workers, progress, sum(p.stop - p.start for p in plans if p.path in done)
        )
        summary = finish(source, out, plans, config, unlabelled, write=not complete or config.force)
    summary.elapsed_s = time.perf_counter() - t0
    summary.processed = processed
    summary.workers = workers
    summary.notes = notes
    for plan in plans:
        summary.splits[plan.split].resumed_shards += plan.path in done
    return summary


def _check_config(config: PrepConfig) -> None:
    if config.codec not in CODECS:
        raise InputError(f"unknown --codec {config.codec!r}; choose one of: {', '.join(CODECS)}")
    if not 1 <= config.quality <= 100:
        raise InputError(f"--quality {config.quality} is out of range; give 1..100 (default {JPEG_QUALITY})")
    if config.shard_size < 1:
        raise InputError(f"--shard-size {config.shard_size} must be at least 1")
    if config.workers < 0:
        raise InputError(f"--workers {config.workers} must be 0 (all cores) or more")


def _check_output(out: Path, force: bool) -> None:
    if out.is_dir():
        raise InputError(f"{out}: is a folder; give the index file to write, e.g. {out / 'imagenet.h5'}")
    if not out.parent.is_dir():
        raise InputError(f"{out}: folder {out.parent} does not exist; create it or choose another path")
    if not os.access(out.parent, os.W_OK):
        raise InputError(f"{out}: folder {out.parent} is not writable; choose a writable path")
    if out.exists() and not force and not _is_dataset(out):
        raise InputError(
            f"{out}: file exists and is not an alexnet-cli dataset; choose another path (or --force)"
        )


def _is_dataset(path: Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except OSError:
        return False


def made_by(out: Path, plans: list[ShardPlan]) -> bool:
    """Whether the complete dataset `out` is exactly what `plans` would write: the index lists
    the planned shards and each shard's fingerprint (inputs, classes, settings) matches."""
    try:
        with h5py.File(out, "r") as f:
            listed = {
                split: [s.decode() if isinstance(s, bytes) else s for s in g["shards"][()]]
                for split, g in f["splits"].items()
            }
    except (OSError, KeyError):
        return False
    planned: dict[str, list[str]] = {}
    for plan in plans:
        planned.setdefault(plan.split, []).append(plan.path.name)
    if listed != planned:
        return False
    return all((_shard_attrs(p.path) or {}).get("plan") == p.fingerprint for p in plans)


def _strict_message(skipped: list[tuple[str, str, str]]) -> str:
    split, path, reason = skipped[0]
    return (
        f"{len(skipped)} input file(s) could not be used (first: {split} {path}: {reason}); "
        "fix or remove them, or run without --strict to skip them"
    )


@contextlib.contextmanager
def output_lock(out: Path) -> Iterator[None]:
    """Hold ``OUT.lock`` (a POSIX record lock: released by the kernel even on kill -9, and not
    inherited by the worker processes) so that two preps never write the same OUT."""
    import fcntl

    lock = out.with_name(out.name + ".lock")
    while True:
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise InputError(
                f"{out}: cannot create {lock.name} ({e.strerror}); choose a writable folder"
            ) from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise AlexnetError(
                f"{out}: another `alexnet prep` (pid {owner}) is writing this output; wait for it to "
                f"finish or stop it (its lock is {lock})"
            ) from None
        # the previous holder may have removed the file between our open and lock: retry then
        if os.path.exists(lock) and os.path.samestat(os.fstat(fd), os.stat(lock)):
            break
        os.close(fd)
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
        os.close(fd)


# --------------------------------------------------------------------------------------------
# Planning and resuming


def settings_of(config: PrepConfig) -> dict:
    """What the pixels depend on, recorded in the index and in every shard's fingerprint."""
    return {
        "image_size": IMAGE_SIZE,
        "resize": f"shorter side to {IMAGE_SIZE}, central {IMAGE_SIZE}x{IMAGE_SIZE} (section 2)",
        "resample": imaging.RESAMPLE_NAME,
        "jpeg_dct_scaling": "power-of-2 DCT reduction keeping the shorter side "
        f">= {imaging.DCT_MIN_FACTOR}x{IMAGE_SIZE}",
        "codec": config.codec,
        "quality": config.quality if config.codec == "jpeg" else 0,
        "jpeg_subsampling": JPEG_SUBSAMPLING if config.codec == "jpeg" else "",
        "stats_on": STATS_ON,
    }


def plan_shards(source: Source, out: Path, config: PrepConfig) -> list[ShardPlan]:
    base = dict(settings_of(config), format_version=FORMAT_VERSION, classes=[w for w, _ in source.classes])
    plans = []
    for name, split in source.splits.items():
        labels = source.labels(name)
        for k, start in enumerate(range(0, len(split), config.shard_size)):
            stop = min(start + config.shard_size, len(split))
            h = hashlib.sha256(json.dumps(dict(base, split=name, shard=k), sort_keys=True).encode())
            h.update("\n".join(split.sources[start:stop]).encode("utf-8", "surrogateescape"))
            h.update(labels[start:stop].tobytes())
            plans.append(
                ShardPlan(name, k, out.parent / shard_name(out, name, k), start, stop, h.hexdigest())
            )
    return plans


def resume_shards(plans: list[ShardPlan], out: Path, force: bool) -> set[Path]:
    """Keep the finished shards of this plan; delete our partial and stale shard files, and
    the temporary file of an index write that was interrupted (fileio.atomic_path's name)."""
    planned = {p.path: p for p in plans}
    pattern = re.compile(re.escape(out.stem) + r"-[A-Za-z0-9_]+-\d{5}\.h5(\.partial)?")
    done = set()
    for name in sorted(os.listdir(out.parent)):
        path = out.parent / name
        if name.startswith(f".{out.name}.") and name.endswith(".tmp"):
            path.unlink(missing_ok=True)
            continue
        if not pattern.fullmatch(name):
            continue
        if name.endswith(".partial"):
            path.unlink(missing_ok=True)
            continue
        plan = planned.get(path)
        attrs = _shard_attrs(path)
        if attrs is None:
            if plan is not None:
                raise InputError(
                    f"{path}: exists and is not a shard of alexnet prep; "
                    "move it away, it would be overwritten"
                )
            continue  # a file of someone else's that only looks like one of ours
        if plan is not None and not force and attrs.get("plan") == plan.fingerprint and "sha256" in attrs:
            done.add(path)
        else:
            path.unlink()  # ours, from an interrupted run with other inputs or settings
    return done


def _shard_attrs(path: Path) -> dict | None:
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != SHARD_FORMAT_NAME:
                return None
            return {k: f.attrs[k] for k in ("plan", "sha256") if k in f.attrs}
    except OSError:
        return None


# --------------------------------------------------------------------------------------------
# Workers


def _init_worker(codec: str, quality: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle
    if sys.platform.startswith("linux"):  # die with the main process, even on kill -9
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    _WORKER.update(codec=codec, quality=quality)


_WORKER: dict = {}


@dataclass
class ChunkResult:
    encoded: list[np.ndarray | None]  # None where the input was skipped
    reasons: list[str | None]
    sums: PixelSums


def process_chunk(locations: list[tuple[str, int, int]]) -> ChunkResult:
    """Read, crop (section 2), encode and sum a run of images: the worker's whole job."""
    encoded, reasons, crops = [], [], []
    for path, offset, size in locations:
        try:
            pixels = imaging.load_256(read_image_bytes(path, offset, size))
        except imaging.ImageDecodeError as e:
            encoded.append(None)
            reasons.append(e.reason)
            continue
        except OSError as e:
            encoded.append(None)
            reasons.append(f"unreadable: {e.strerror or e}")
            continue
        encoded.append(encode_image(pixels, _WORKER["codec"], _WORKER["quality"]))
        reasons.append(None)
        crops.append(pixels)
    sums = PixelSums()
    sums.add_images(crops)
    return ChunkResult(encoded, reasons, sums)


def printable(path: str) -> str:
    """A source path as valid UTF-8 for the shard: undecodable bytes of a file name (kept by
    Python as surrogates) are written as \\xNN escapes."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _pool(workers: int, config: PrepConfig) -> ProcessPoolExecutor:
    # fork where it exists: no re-import per worker. The executor forks every worker at the
    # first submit, before any progress thread exists.
    method = (
        "fork" if "fork" in multiprocessing.get_all_start_methods() and sys.platform != "darwin" else "spawn"
    )
    return ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context(method),
        initializer=_init_worker,
        initargs=(config.codec, config.quality),
    )


def write_shards(
    source: Source,
    todo: list[ShardPlan],
    config: PrepConfig,
    workers: int,
    progress: Progress | None,
    resumed: int,
) -> int:
    """Write the shards still to do; returns the number of images processed."""
    total = sum(len(s) for s in source.splits.values())
    done = resumed
    if progress:
        progress(done, total)
    if not todo:
        return 0
    labels = {name: source.labels(name) for name in source.splits}
    per_image = IMAGE_SIZE * IMAGE_SIZE * 3 if config.codec == "raw" else 64 << 10
    window = max(2, min(4 * workers, (512 << 20) // (config.chunk_images * per_image)))
    writer: ShardWriter | None = None
    pending: deque = deque()

    def chunks() -> Iterator[tuple[ShardPlan, int, int]]:
        for plan in todo:
            for start in range(plan.start, plan.stop, config.chunk_images):
                yield plan, start, min(start + config.chunk_images, plan.stop)

    def receive() -> None:
        nonlocal writer, done
        plan, start, stop, future = pending.popleft()
        try:
            result: ChunkResult = future.result()
        except BrokenProcessPool:
            raise AlexnetError(
                "a worker process died (out of memory? killed?); rerun the same command to resume, "
                "perhaps with fewer --workers"
            ) from None
        split = source.splits[plan.split]
        with _writing(plan.path):
            if start == plan.start:
                writer = ShardWriter(
                    plan.path,
                    plan.split,
                    plan.index,
                    config.codec,
                    config.quality,
                    {"plan": plan.fingerprint},
                )
            for i, (data, reason) in enumerate(zip(result.encoded, result.reasons, strict=True), start):
                name = printable(split.sources[i])
                if data is None:
                    if config.strict:
                        raise AlexnetError(_strict_message([(plan.split, name, reason)]))
                    writer.skip(name, reason)
                else:
                    writer.add_encoded(data, int(labels[plan.split][i]), name)
            writer.add_sums(result.sums)
            if stop == plan.stop:
                writer.close()
                writer = None
        done += stop - start
        if progress:
            progress(done, total)

    try:
        with _pool(workers, config) as pool:
            try:
                for plan, start, stop in chunks():
                    split = source.splits[plan.split]
                    locations = [split.location(i) for i in range(start, stop)]
                    pending.append((plan, start, stop, pool.submit(process_chunk, locations)))
                    if len(pending) >= window:
                        receive()
                while pending:
                    receive()
            except BaseException:
                for *_, future in pending:
                    future.cancel()
                raise
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return sum(p.stop - p.start for p in todo)


@contextlib.contextmanager
def _writing(path: Path) -> Iterator[None]:
    """A failed shard write (full disk, read-only or vanished folder) is one line, not a crash."""
    try:
        yield
    except (OSError, RuntimeError) as e:  # h5py reports a failed write as either
        raise InputError(
            f"{path}: could not write ({os_reason(e)}); "
            "free space or choose another OUT, then rerun the same command to resume"
        ) from None


# --------------------------------------------------------------------------------------------
# The index


def finish(
    source: Source,
    out: Path,
    plans: list[ShardPlan],
    config: PrepConfig,
    unlabelled: list[tuple[str, str, str]],
    write: bool = True,
) -> PrepSummary:
    """Merge the shards' counts, skip lists and sums into the index file (written last; with
    `write` false, an index already there is only summarised)."""
    splits: dict[str, SplitMeta] = {}
    summary_splits: dict[str, SplitSummary] = {}
    skipped = list(unlabelled)
    train_sums = PixelSums()
    output_bytes = 0
    for plan in plans:
        with h5py.File(plan.path, "r") as f:
            images = int(f.attrs["images"])
            shard_skipped = [(plan.split, p, r) for p, r in read_skipped(f)]
            if plan.split == "train":
                train_sums = train_sums.merge(read_sums(f["stats"]))
        output_bytes += plan.path.stat().st_size
        skipped += shard_skipped
        meta = splits.setdefault(plan.split, SplitMeta(0, [], [], 0))
        meta.images += images
        meta.shards.append(plan.path.name)
        meta.shard_images.append(images)
        meta.skipped += len(shard_skipped)
        s = summary_splits.setdefault(plan.split, SplitSummary())
        s.images, s.skipped, s.shards = meta.images, meta.skipped, s.shards + 1
    for split, _, _ in unlabelled:
        splits[split].skipped += 1
        summary_splits[split].skipped += 1
    settings = dict(
        settings_of(config),
        layout=source.layout,
        source=str(source.root.resolve()),
        labels_from="; ".join(f"{s.name}: {s.labelled_by}" for s in source.splits.values() if s.labelled_by),
        shard_size=config.shard_size,
        class_index="sorted class names (ImageNet: sorted wnids, 0 = n01440764)",
        order="per split, sorted by source path",
    )
    if write:
        write_index(out, source.classes, splits, train_sums if "train" in splits else None, settings, skipped)
    output_bytes += out.stat().st_size
    return PrepSummary(
        str(out),
        source.layout,
        len(source.classes),
        summary_splits,
        skipped,
        0.0,
        0,
        output_bytes,
        0,
        ignored_files=sum(s.ignored for s in source.splits.values()),
    )
