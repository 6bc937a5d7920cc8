"""Pictures: training curves (curves.png, `alexnet plot`) and conv1's kernels (`alexnet filters`).

matplotlib draws on a bare Figure (the Agg backend: no display, no pyplot state); every file is
written atomically.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from alexnet_cli.errors import InputError
from alexnet_cli.fileio import atomic_path, check_new_file


def draw_curves(rows: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "") -> None:
    """Plot one run's metrics.csv rows (epoch, train_/val_ loss, top1, top5) into a PNG."""
    draw_runs({"": rows}, path, title)


def draw_runs(runs: Mapping[str, Sequence[dict[str, Any]]], path: str | os.PathLike, title: str = "") -> None:
    """Loss and accuracy per epoch, train dashed and val solid. One run: top-1 and top-5; several
    runs (compared): top-1 only, one colour per run."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4), layout="constrained")
    loss, acc = fig.subplots(1, 2)
    many = len(runs) > 1

    def series(rows: Sequence[dict[str, Any]], key: str) -> tuple[list, list]:
        pts = [(r["epoch"], r[key]) for r in rows if r.get(key) is not None]
        return [p[0] for p in pts], [p[1] for p in pts]

    for i, (name, rows) in enumerate(runs.items()):
        prefix = f"{name} " if many else ""
        for split, style in (("train", "--"), ("val", "-")):
            loss.plot(
                *series(rows, f"{split}_loss"),
                style,
                color=f"C{i}" if many else None,
                marker=".",
                label=f"{prefix}{split}",
            )
            for k, color in (("top1", "C0"), ("top5", "C1")):
                if many and k == "top5":
                    continue
                acc.plot(
                    *series(rows, f"{split}_{k}"),
                    style,
                    color=f"C{i}" if many else color,
                    marker=".",
                    label=f"{prefix}{split} {k.replace('top', 'top-')}",
                )
    loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (loss, acc):
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    if title:
        fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
    """metrics.csv (as train writes it) -> rows with numbers; empty cells become None."""
    path = Path(path)
    if path.is_dir():
        path = path / "metrics.csv"
    if not path.is_file():
        raise InputError(f"{path}: no metrics.csv; give a --run-dir written by `alexnet train`")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        out = [{k: (float(v) if v not in ("", None) else None) for k, v in r.items()} for r in rows]
        for r in out:
            r["epoch"] = int(r["epoch"])
    except (KeyError, ValueError, TypeError, csv.Error) as e:
        raise InputError(f"{path}: not a metrics.csv written by `alexnet train` ({e})") from None
    if not out:
        raise InputError(f"{path}: has no epochs yet; plot it after the first epoch")
    return out


def plot_runs(
    run_dirs: Sequence[Path], output: Path | None, force: bool = False
) -> tuple[Path, dict[str, list]]:
    """`alexnet plot`: one run's curves.png redrawn in place, or several runs compared in one
    figure (`output`, default curves.png, replaced only with `force`)."""
    runs: dict[str, list] = {}
    for d in run_dirs:
        name = (d if d.is_dir() else d.parent).name or str(d)
        while name in runs:
            name += "'"
        runs[name] = read_metrics(d)
    if output is None and len(run_dirs) == 1:
        output = (run_dirs[0] if run_dirs[0].is_dir() else run_dirs[0].parent) / "curves.png"
    else:
        output = check_new_file(output or Path("curves.png"), force)
    draw_runs(runs, output, title=" vs ".join(runs) if len(runs) > 1 else f"AlexNet {next(iter(runs))}")
    return output, runs


def kernel_grid(
    weight: np.ndarray, towers: int = 2, scale: int = 4, pad: int = 1, shares: np.ndarray | None = None
) -> np.ndarray:
    """conv1 kernels [K, 3, h, w] -> one RGB uint8 picture: each kernel stretched to [0, 255] on
    its own (as in the paper's Figure 3), enlarged `scale` times, in a grid per tower, the towers
    side by side (tower 0 left) with a wider gap between them. With `shares` (one value in [0, 1]
    per kernel: filters.chroma_share), a gauge under each kernel, dark for its share."""
    k, c, h, w = weight.shape
    if c != 3:
        raise ValueError(f"conv1 kernels must have 3 input channels, got {c}")
    lo = weight.reshape(k, -1).min(1)[:, None, None, None]
    hi = weight.reshape(k, -1).max(1)[:, None, None, None]
    kernels = ((weight - lo) / np.maximum(hi - lo, 1e-12) * 255).round().astype(np.uint8)
    kernels = kernels.transpose(0, 2, 3, 1).repeat(scale, 1).repeat(scale, 2)  # [K, h*s, w*s, 3]
    gauge = 0 if shares is None else max(2, scale) + pad  # the gauge's rows under each kernel
    per_tower = k // towers
    cols = math.ceil(math.sqrt(per_tower * 2 / 3)) if per_tower > 1 else 1  # a landscape block
    rows = math.ceil(per_tower / cols)
    ch, cw = h * scale + gauge + pad, w * scale + pad
    gap = 4 * pad + scale * 2
    out = np.full((rows * ch + pad, towers * (cols * cw + pad) + (towers - 1) * gap, 3), 255, np.uint8)
    for i in range(k):
        t, j = divmod(i, per_tower)
        r, col = divmod(j, cols)
        y = pad + r * ch
        x = t * (cols * cw + pad + gap) + pad + col * cw
        out[y : y + h * scale, x : x + w * scale] = kernels[i]
        if shares is not None:
            bar = out[y + h * scale + pad : y + h * scale + gauge, x : x + w * scale]
            bar[:] = 215
            bar[:, : round(float(shares[i]) * w * scale)] = 40
    return out


def draw_filters(
    weight: np.ndarray,
    path: str | os.PathLike,
    towers: int = 2,
    scale: int = 4,
    shares: np.ndarray | None = None,
    captions: Sequence[str] = (),
) -> None:
    """Write kernel_grid(...) as a PNG, atomically; `captions` (one line or two per tower) go
    under the towers' grids."""
    from PIL import Image, ImageDraw

    grid = kernel_grid(weight, towers, scale, shares=shares)
    if captions:
        lines = max(caption.count("\n") + 1 for caption in captions)
        picture = Image.new("RGB", (grid.shape[1], grid.shape[0] + 14 * lines + 6), "white")
        picture.paste(Image.fromarray(grid))
        draw = ImageDraw.Draw(picture)
        for t, caption in enumerate(captions):
            draw.multiline_text((3 + t * grid.shape[1] // towers, grid.shape[0] + 3), caption, fill="black")
    else:
        picture = Image.fromarray(grid)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


Tile = tuple[np.ndarray | None, str]  # a 256x256x3 uint8 image (None: unreadable) and its caption


def draw_neighbors(
    rows: Sequence[tuple[Tile, Sequence[Tile]]], path: str | os.PathLike, title: str = ""
) -> None:
    """The paper's Figure 4 as a PNG: a row per query, the query (framed) then its neighbours,
    each with its caption; an image that cannot be read is drawn as a grey tile."""
    from matplotlib.figure import Figure

    cols = 1 + max(len(cells) for _, cells in rows)
    fig = Figure(figsize=(1.7 * cols, 2.0 * len(rows) + 0.3), layout="constrained")
    axes = fig.subplots(len(rows), cols, squeeze=False)
    for r, (query, cells) in enumerate(rows):
        for c, ax in enumerate(axes[r]):
            if c > len(cells):
                ax.axis("off")
                continue
            pixels, caption = [query, *cells][c]
            ax.imshow(pixels if pixels is not None else np.full((256, 256, 3), 200, np.uint8))
            ax.set_title(caption, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                for spine in ax.spines.values():
                    spine.set(color="C3", linewidth=2)
    if title:
        fig.suptitle(title, fontsize=9)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
