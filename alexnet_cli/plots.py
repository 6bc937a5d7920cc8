"""curves.png: loss and top-1/top-5 accuracy per epoch, train and val (matplotlib, no display)."""

from __future__ import annotations

import os
from typing import Any, Sequence

from alexnet_cli.fileio import atomic_path


def draw_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Plot metrics.csv rows (epoch, train_/val_ loss, top1, top5) into a PNG, atomically."""
    from matplotlib.figure import Figure  # a bare Figure renders with Agg: no display, no pyplot state

    fig = Figure(figsize=(11, 4), layout="constrained")
    loss, acc = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in rows]

    def series(key: str) -> tuple[list, list]:
        pts = [(e, r[key]) for e, r in zip(epochs, rows) if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    for split, style in (("train", "--"), ("val", "-")):
        loss.plot(*series(f"{split}_loss"), style, marker=".", label=split)
        for k, color in (("top1", "C0"), ("top5", "C1")):
            acc.plot(*series(f"{split}_{k}"), style, color=color, marker=".", label=f"{split} {k.replace('top', 'top-')}")
    loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (loss, acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
