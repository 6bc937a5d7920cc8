"""The run folder of `alexnet train`: last.pt, best.pt, metrics.csv, curves.png (docs/training.md).

Nothing in it is overwritten silently: a folder that holds a run is continued (--resume) or
started over (--force), never mixed. metrics.csv and curves.png follow from last.pt's metrics,
so they are rewritten whole, atomically, after every epoch and on resume.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from alexnet_cli.errors import InputError
from alexnet_cli.fileio import atomic_write_text

RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "curves.png")
METRIC_COLUMNS = (
    "epoch",
    "lr",
    "train_loss",
    "train_top1",
    "train_top5",
    "val_loss",
    "val_top1",
    "val_top5",
    "images_per_s",
    "elapsed_s",
)


def prepare_run_dir(run_dir: Path, resume: str | None, force: bool, is_main: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run. Never silently overwrites a run:
    a --run-dir that holds one needs --resume (continue) or --force (start over)."""
    last = run_dir / "last.pt"
    if is_main:  # half-written files of a write that kill -9 interrupted (fileio.atomic_path's names)
        for name in RUN_FILES:
            for stale in run_dir.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
    if resume == "last" and not last.is_file():
        raise InputError(
            f"{last}: no checkpoint to resume; drop --resume (or use --resume auto) to start a run"
        )
    if resume in ("last", "auto") and last.is_file():
        return last
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    # 'auto' finding only best.pt: a run killed between its first best.pt and last.pt (metrics
    # come after both), which cannot resume and starts over. Anything more is a run to keep.
    first_epoch_leftover = resume == "auto" and existing == ["best.pt"]
    if existing and not force and not first_epoch_leftover:
        raise InputError(
            f"{run_dir} already holds a run ({', '.join(existing)}); continue it with --resume auto, "
            "or start over with --force (deletes its checkpoints and metrics)"
        )
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in existing:
                (run_dir / name).unlink()
        except OSError as e:
            raise InputError(
                f"{run_dir}: cannot use as the run folder ({e.strerror or e}); choose another --run-dir"
            ) from None
    return None


def last_good(run_dir: Path) -> str:
    """For an error that stops training without saving: where the last good state is."""
    last = run_dir / "last.pt"
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"


def write_records(run_dir: Path, rows: list[dict[str, Any]], arch: str) -> None:
    """metrics.csv and curves.png from the epochs so far (both follow from last.pt's metrics)."""
    from alexnet_cli.plots import draw_curves

    write_metrics(run_dir / "metrics.csv", rows)
    draw_curves(rows, run_dir / "curves.png", title=f"AlexNet ({arch}) {run_dir.name}")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.csv, one row per epoch (accuracies in percent), rewritten atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else _fmt(row[k]) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


class TensorBoard:
    """--tensorboard: the metrics.csv scalars, per epoch, in RUN_DIR/tensorboard."""

    def __init__(self, run_dir: Path, say):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            say(
                "--tensorboard: tensorboard is not installed (pip install tensorboard); continuing without it"
            )
            self.writer = None
            return
        self.writer = SummaryWriter(str(run_dir / "tensorboard"))

    def add_epoch(self, row: dict[str, Any]) -> None:
        if self.writer is None:
            return
        for key in METRIC_COLUMNS[1:]:
            if row[key] is not None:
                self.writer.add_scalar(key, row[key], row["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
