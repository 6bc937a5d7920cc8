"""Progress for people: a Rich bar on a terminal, plain lines in logs; always on stderr, so that
`--json` keeps stdout for the one result object.

`TrainProgress` reports training steps and epochs; `CountProgress` is the (done, total)
callback of long per-image work such as prep. Both draw their bar with `_bar`.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def stderr_console() -> Console:
    # Rich falls back to 80 columns when output is not a terminal; logs deserve whole lines.
    return Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def rate(images_per_s: float) -> str:
    """Images/s with a decimal when it is small (the CPU manages a few a second)."""
    return f"{images_per_s:,.1f} img/s" if images_per_s < 100 else f"{images_per_s:,.0f} img/s"


def duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}"


def _bar(title: str, console: Console) -> Progress:
    """A transient bar: title, bar, done/total, a status field, time left."""
    bar = Progress(
        TextColumn(title),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )
    bar.start()
    return bar


class TrainProgress:
    """What the training loop reports; silent when `enabled` is false (ranks other than 0)."""

    def __init__(
        self,
        enabled: bool = True,
        tty: bool | None = None,
        log_every: int = 50,
        console: Console | None = None,
    ):
        self.enabled = enabled
        self.console = console or stderr_console()
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.log_every = max(1, log_every)
        self._bar: Progress | None = None
        self._task = None

    def message(self, text: str) -> None:
        if self.enabled:
            self.console.print(text, highlight=False, soft_wrap=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, start_step: int) -> None:
        """`epoch` counts from 1."""
        if not self.enabled:
            return
        self._epoch, self._epochs, self._steps = epoch, epochs, steps
        self._t0, self._images, self._done0 = time.perf_counter(), 0, start_step
        if self.tty:
            self._bar = _bar(f"epoch {epoch}/{epochs}", self.console)
            self._task = self._bar.add_task("train", total=steps, completed=start_step, status="")

    def step(self, step: int, loss: float, lr: float, images: int) -> None:
        """After optimizer step `step` (1-based, within the epoch) of `images` images."""
        if not self.enabled:
            return
        self._images += images
        elapsed = time.perf_counter() - self._t0
        status = f"loss {loss:.4f}  lr {lr:.3g}  {rate(self._images / elapsed if elapsed > 0 else 0.0)}"
        if self._bar is not None:
            self._bar.update(self._task, completed=step, status=status)
        elif step % self.log_every == 0 or step == self._steps:
            left = (self._steps - step) * elapsed / max(step - self._done0, 1)
            self.message(
                f"epoch {self._epoch}/{self._epochs} step {step}/{self._steps}  {status}  "
                f"eta {duration(left)}"
            )

    def end_epoch(self, row: dict[str, Any], run_eta_s: float | None) -> None:
        if not self.enabled:
            return
        self.close()
        val = (
            f"  val loss {row['val_loss']:.4f} top-1 {row['val_top1']:.2f}% top-5 {row['val_top5']:.2f}%"
            if row.get("val_loss") is not None
            else ""
        )
        eta = f"  run eta {duration(run_eta_s)}" if run_eta_s is not None else ""
        self.message(
            f"epoch {row['epoch']}/{self._epochs}: train loss {row['train_loss']:.4f} "
            f"top-1 {row['train_top1']:.2f}%"
            f"{val}  lr {row['lr']:.3g}  {rate(row['images_per_s'])}{eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


class CountProgress:
    """A (done, total) callback for per-image work: the bar on a terminal, else a line every 10 s.

    The bar (and its refresh thread) starts at the first report, after the work has started its
    worker processes, so they are never forked from a multi-threaded process."""

    def __init__(self, what: str, console: Console | None = None):
        self.what, self.console = what, console or stderr_console()
        self._bar: Progress | None = None
        self._task = None
        self._last = 0.0
        self._start: float | None = None
        self._first = 0

    def __enter__(self) -> CountProgress:
        return self

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if self._start is None:
            self._start, self._first = now, done
        speed = (done - self._first) / max(now - self._start, 1e-9)
        if self.console.is_terminal:
            if self._bar is None:
                self._bar = _bar(self.what, self.console)
                self._task = self._bar.add_task(self.what, total=total, completed=done, status="")
            self._bar.update(self._task, completed=done, status=rate(speed))
        elif now - self._last >= 10 or done == total:
            self._last = now
            eta = f", ETA {(total - done) / speed:,.0f} s" if speed > 0 and done < total else ""
            self.console.print(
                f"{self.what}: {done:,}/{total:,} images ({100 * done / max(total, 1):.1f}%), "
                f"{speed:,.0f} img/s{eta}",
                highlight=False,
            )

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.stop()
