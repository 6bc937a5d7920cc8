"""What the commands print for people: one function per result, from the same dict (or object)
that `--json` prints, so the two can never disagree. Tables go to stdout; errors and progress
go to stderr (cli.main, progress.py)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alexnet_cli.config import MODEL_SWITCHES, ModelConfig

# Rich falls back to 80 columns when output is not a terminal; logs and pipes deserve whole lines.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def _say(text: str, out: Console = console) -> None:
    out.print(text, highlight=False, soft_wrap=True)


def _table(title: str, columns: Sequence[str], right: Sequence[str] = ()) -> Table:
    table = Table(title=escape(title))
    for col in columns:
        table.add_column(col, justify="right" if col in right else "left")
    return table


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}%"


def error(text: str) -> None:
    err_console.print(f"[bold red]error:[/] {escape(text)}", highlight=False, soft_wrap=True)


def prep(s: dict[str, Any]) -> None:
    table = _table(
        f"{s['output']} ({s['layout']} layout, {s['classes']} classes)",
        ("split", "images", "skipped", "shards", "resumed shards"),
        right=("images", "skipped", "shards", "resumed shards"),
    )
    for name, v in s["splits"].items():
        table.add_row(
            name, f"{v['images']:,}", f"{v['skipped']:,}", str(v["shards"]), str(v["resumed_shards"])
        )
    console.print(table)
    _say(
        f"{s['processed']:,} images processed in {s['elapsed_s']:.1f} s ({s['images_per_s']:,.0f} img/s, "
        f"{s['workers']} workers); {s['output_bytes'] / 2**20:,.1f} MiB written"
    )
    for note in s["notes"]:
        _say(note)
    if s["ignored_files"]:
        _say(
            f"{s['ignored_files']:,} other files ignored "
            "(not images by their extension, or links inside a tar)"
        )
    _skipped(s["skipped"], 10, f"`alexnet inspect {s['output']}` lists them all")


def _skipped(rows: list[dict[str, str]], shown: int, rest: str) -> None:
    for row in rows[:shown]:
        _say(f"skipped ({row['split']}) {row['path']}: {row['reason']}")
    if len(rows) > shown:
        _say(f"... and {len(rows) - shown} more skipped files: {rest}")


def inspect(info: dict[str, Any]) -> None:
    table = _table(
        f"{info['path']} (format v{info['format_version']}, {info['num_classes']} classes)",
        ("split", "images", "classes", "shards", "skipped"),
        right=("images", "classes", "shards", "skipped"),
    )
    for name, v in info["splits"].items():
        table.add_row(name, f"{v['images']:,}", str(v["classes"]), str(v["shards"]), str(v["skipped"]))
    console.print(table)
    if info["mean_rgb"] is not None:
        _say("mean RGB (0..255): " + ", ".join(f"{m:.3f}" for m in info["mean_rgb"]))
        _say("PCA eigenvalues: " + ", ".join(f"{v:.5f}" for v in info["pca"]["eigenvalues"]))
        _say("PCA eigenvectors (columns):")
        for r in info["pca"]["eigenvectors"]:
            _say("  " + "  ".join(f"{x:+.4f}" for x in r))
    classes = info["classes"]
    shown = ", ".join(f"{c['index']} {c['wnid']} {c['name']}" for c in classes[:5])
    _say(f"classes: {shown}{' ...' if len(classes) > 5 else ''}")
    for key, value in info["settings"].items():
        _say(f"  {key}: {value}")
    _skipped(info["skipped"], 20, "--json lists them all")
    if "verify" in info:
        for r in info["verify"]["shards"]:
            if r["problems"]:
                console.print(
                    f"[red]DAMAGED[/] {r['split']} {r['shard']}: " + "; ".join(r["problems"]), soft_wrap=True
                )
        console.print("verify: all shards intact" if info["verify"]["ok"] else "[red]verify: damage found[/]")
    if "export" in info:
        _say(
            f"exported {info['export']['images']} images to {info['export']['folder']} "
            f"({info['export']['labels_csv']})"
        )


def train(summary: dict[str, Any]) -> None:
    last = summary["last_epoch"] or {}
    table = _table(
        f"alexnet train: {summary['run_dir']} ({summary['stopped']})",
        ("epochs", "steps", "train loss", "val top-1", "val top-5", "best val top-1", "img/s"),
        right=("steps", "train loss", "val top-1", "val top-5", "best val top-1", "img/s"),
    )
    table.add_row(
        str(summary["epochs_completed"]),
        str(summary["steps"]),
        f"{last['train_loss']:.4f}" if last else "-",
        _pct(last.get("val_top1")),
        _pct(last.get("val_top5")),
        _pct(summary["best_val_top1"]),
        f"{last['images_per_s']:,.1f}" if last else "-",
    )
    console.print(table)


def evaluation(s: dict[str, Any], source: str, data: str, split: str, ten_crop: bool) -> None:
    table = _table(
        f"{source} on {data} [{split}], {'10 crops' if ten_crop else 'center crop'}",
        ("", "top-1", "top-5"),
        right=("top-1", "top-5"),
    )
    table.add_row("accuracy", f"{s['top1']:.2f}%", f"{s['top5']:.2f}%")
    table.add_row("error", f"{s['top1_error']:.2f}%", f"{s['top5_error']:.2f}%")
    table.add_row("correct", f"{s['top1_correct']:,}", f"{s['top5_correct']:,}")
    table.add_section()
    table.add_row("images", f"{s['images']:,} x {s['crops']} crop(s)", "")
    table.add_row("loss", f"{s['loss']:.4f}", "")
    table.add_row("speed", f"{s['images_per_s']:,.1f} images/s", f"{s['world_size']} process(es)")
    console.print(table)


def predictions(done: Sequence[Any], title: str) -> None:
    """predict.Prediction rows: one table section per image, its top-k classes."""
    table = _table(title, ("file", "#", "wnid", "class", "prob"), right=("#", "prob"))
    for p in done:
        for rank, c in enumerate(p.predictions, 1):
            cells = (p.file if rank == 1 else "", str(rank), c["wnid"], c["name"], f"{100 * c['prob']:.2f}%")
            table.add_row(*map(escape, cells))
        table.add_section()
    console.print(table)


def layer_table(s: dict[str, Any], arch: str) -> None:
    towers = any(r["towers"] for r in s["layers"])
    columns = ["layer", "type", "output", "params", "MACs"] + (["towers", "input"] if towers else [])
    # the ablation switches away from the paper's (info.summary has them for arch paper)
    switches = [
        f"{name} {s[name]}" if name != "lrn" else "no LRN"
        for name in MODEL_SWITCHES
        if s.get(name, getattr(ModelConfig, name)) != getattr(ModelConfig, name)
    ]
    table = _table(
        f"AlexNet ({', '.join([arch, *switches])}), input {'x'.join(map(str, s['input_shape']))}",
        columns,
        right=("params", "MACs"),
    )
    for r in s["layers"]:
        cells = [
            r["name"],
            r["kind"],
            "x".join(map(str, r["output_shape"])),
            f"{r['params']:,}",
            f"{r['macs']:,}",
        ]
        table.add_row(*cells, *([",".join(map(str, r["towers"])), r["input_from"]] if towers else []))
    table.add_section()
    table.add_row("total", "", "", f"{s['total_params']:,}", f"{s['total_macs']:,}")
    console.print(table)


def colour_towers(colour: dict[str, Any]) -> None:
    """filters.colour_summary, one line per tower."""
    for t in colour["towers"]:
        _say(
            f"tower {t['tower']}: chroma share mean {t['mean_chroma']:.2f}, median {t['median_chroma']:.2f}; "
            f"{t['colour_specific']} of {t['kernels']} kernels colour-specific (share > "
            f"{colour['colour_specific_above']})"
        )


def wrote(text: str) -> None:
    _say(f"wrote {text}")


def demo_step(out: Console, workdir: Path) -> Callable[[Any], None]:
    """The demo's `show` callback: each step's command line, then what it did."""

    def show(step) -> None:
        out.print(f"\n[bold]$ {escape(step.command)}[/]", highlight=False, soft_wrap=True)
        for line in _demo_lines(step.name, step.result, step.seconds, workdir):
            _say(f"  {line}", out)

    return show


def _demo_lines(name: str, r: dict[str, Any], seconds: float, workdir: Path) -> list[str]:
    if name == "images":
        return [f"{r['train']} training and {r['val']} validation images in {workdir / 'images'}"]
    if name == "prep":
        splits = ", ".join(f"{k}: {v['images']} images" for k, v in r["splits"].items())
        return [f"{splits}, {r['classes']} classes, {r['skipped']} skipped ({seconds:.1f} s)"]
    if name == "train":
        epochs, val = r.get("epochs_completed"), (r.get("last_epoch") or {}).get("val_top1", float("nan"))
        return [
            f"{epochs} epoch{'' if epochs == 1 else 's'}, {r.get('steps')} steps, val top-1 {val:.1f}% "
            f"({seconds:.1f} s); {workdir / 'run'}: best.pt, last.pt, metrics.csv, curves.png"
        ]
    if name == "eval":
        return [
            f"10-crop top-1 {r['top1']:.1f}% (error {r['top1_error']:.1f}%), top-5 {r['top5']:.1f}% "
            f"on {r['images']} validation images; chance is 10% ({seconds:.1f} s)"
        ]
    lines = [
        f"{Path(p['file']).name}: {p['top']['name']} ({100 * p['top']['prob']:.0f}%)"
        for p in r["predictions"]
    ]
    return lines + [f"{r['correct']}/{r['images']} correct"]


def note(text: str) -> None:
    """A core module's note for the person at the terminal (stderr: --json keeps stdout)."""
    _say(text, err_console)


def export(r: Any) -> None:
    """export.ExportResult."""
    what = (
        "weights and preprocessing"
        if r.format == "safetensors"
        else f"uint8 images [batch, 256, 256, 3] -> logits [batch, {r.classes}]"
    )
    _say(
        f"wrote {r.output} ({r.format}, {r.bytes / 2**20:,.1f} MiB: {what}) and its card {r.card}; "
        f"checked: it matches torch within {r.max_abs_diff:.2g} ({r.seconds:.1f} s)"
    )


def features(r: Any) -> None:
    """features.FeaturesResult."""
    resumed = f" (resumed after {r.resumed_at:,})" if r.resumed_at else ""
    _say(
        f"wrote {r.output}: {r.rows:,} rows of {r.layer} ({r.dim:,} floats each) from {r.inputs:,} inputs, "
        f"{len(r.failed)} skipped, in {r.seconds:.1f} s{resumed}"
    )


def neighbors(r: Any) -> None:
    """neighbors.NeighborsResult: a table per query, then where the gallery came from."""
    for q in r.queries:
        table = _table(q.file, ("#", "distance", "class", "gallery image"), right=("#", "distance"))
        table.title_justify = "left"
        for n in q.neighbors:
            table.add_row(
                str(n["rank"]), f"{n['distance']:.4g}", escape(n["name"] or "-"), escape(n["source"])
            )
        console.print(table)
    figure = f"; figure: {r.figure}" if r.figure else ""
    _say(
        f"{r.layer} of {r.rows:,} gallery images ({r.cache} {r.features}) "
        f"searched in {r.search_seconds:.2f} s{figure}"
    )
