"""The `alexnet` command line: parse options, call the core package, render the result.

No training, data or model logic lives here. Heavy imports (torch, h5py) happen inside the
commands so that `alexnet --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alexnet_cli import __version__
from alexnet_cli.errors import EXIT_FAILED, AlexnetError, InputError, Preempted

app = typer.Typer(
    name="alexnet",
    help="The 2012 AlexNet paper end to end: prep ImageNet, train the two-tower net, evaluate, predict.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    epilog=(
        "Environment: ALEXNET_DATA (prepared dataset for train/eval), ALEXNET_CHECKPOINT (checkpoint "
        "for eval/predict/filters), ALEXNET_DIST_TIMEOUT_MIN (minutes before a dead torchrun peer fails "
        "the others, default 10).  Exit codes: 0 ok, 1 failed, 2 usage or input error, 75 preempted "
        "(checkpoint written; rerun with --resume auto), 130 interrupted.  Docs: docs/quickstart.md"
    ),
    context_settings={"help_option_names": ["-h", "--help"]},
)
# Rich falls back to 80 columns when output is not a terminal; logs and pipes deserve whole lines.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state = {"debug": False}


def _version(value: bool) -> None:
    if value:
        print(f"alexnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version and exit."),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
) -> None:
    _state["debug"] = debug


def _not_implemented(command: str) -> None:
    raise InputError(f"`alexnet {command}` is not implemented yet")


@app.command()
def prep(
    src: str = typer.Argument(..., help="ImageNet root, folder of the official tars, Kaggle root, or a folder of class folders."),
    out: str = typer.Argument(..., help="Index file to write (OUT.h5); shards go beside it as OUT-<split>-NNNNN.h5."),
    layout: str = typer.Option("auto", help="Source layout: auto, imagenet, archives, kaggle or folders."),
    devkit: Optional[str] = typer.Option(None, help="ILSVRC2012_devkit_t12.tar.gz or its folder (val labels); default: found in SRC."),
    split: Optional[str] = typer.Option(None, help="train, val or both (default: every split found)."),
    shard_size: int = typer.Option(10_000, help="Images per shard file."),
    codec: str = typer.Option("jpeg", help="Storage: jpeg (4:4:4) or raw uint8."),
    quality: int = typer.Option(90, help="JPEG quality (38.8 dB PSNR, 26 KB per crop at 90)."),
    workers: int = typer.Option(0, envvar="ALEXNET_WORKERS", show_envvar=True, help="Worker processes (0: all cores)."),
    force: bool = typer.Option(False, "--force", help="Replace a complete OUT."),
    strict: bool = typer.Option(False, "--strict", help="Fail (exit 1) if any input file cannot be used."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object."),
) -> None:
    """Turn an ImageNet-style dataset into 256x256 HDF5 shards with mean and RGB PCA."""
    from alexnet_cli.data.prep import PrepConfig, prepare

    splits = {None: None, "train": ("train",), "val": ("val",), "both": ("train", "val")}
    if split not in splits:
        raise InputError(f"unknown --split {split!r}; choose train, val or both")
    config = PrepConfig(shard_size, codec, quality, workers, splits[split], layout, devkit, force, strict)
    with _ProgressReporter("prep") as report:
        summary = prepare(src, out, config, progress=report)
    if as_json:
        print(json.dumps(summary.to_json()))
        return
    _render_prep_summary(summary.to_json())


class _ProgressReporter:
    """A progress callback (done, total): a Rich bar on a terminal, a plain line every 10 s otherwise.

    The bar (and its refresh thread) starts at the first report, after prep has started its
    worker processes, so they are never forked from a multi-threaded process."""

    def __init__(self, what: str):
        self.what, self.bar, self.task, self.last, self.start = what, None, None, 0.0, None

    def __enter__(self):
        return self

    def __call__(self, done: int, total: int) -> None:
        import time

        now = time.monotonic()
        if self.start is None:
            self.start, self.first = now, done
        if err_console.is_terminal:
            if self.bar is None:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

                self.bar = Progress(
                    TextColumn(self.what), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"),
                    TimeRemainingColumn(), console=err_console, transient=True,
                )
                self.bar.start()
                self.task = self.bar.add_task(self.what, total=total, completed=done, rate="")
            rate = (done - self.first) / max(now - self.start, 1e-9)
            self.bar.update(self.task, completed=done, rate=f"{rate:,.0f} img/s")
        elif now - self.last >= 10 or done == total:
            self.last = now
            rate = (done - self.first) / max(now - self.start, 1e-9)
            eta = (total - done) / rate if rate > 0 else float("inf")
            eta_text = f", ETA {eta:,.0f} s" if rate > 0 and done < total else ""
            err_console.print(f"{self.what}: {done:,}/{total:,} images ({100 * done / max(total, 1):.1f}%), {rate:,.0f} img/s{eta_text}", highlight=False)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.stop()


def _render_prep_summary(s: dict) -> None:
    table = Table(title=f"{s['output']} ({s['layout']} layout, {s['classes']} classes)")
    for col in ("split", "images", "skipped", "shards", "resumed shards"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, v in s["splits"].items():
        table.add_row(name, f"{v['images']:,}", f"{v['skipped']:,}", str(v["shards"]), str(v["resumed_shards"]))
    console.print(table)
    console.print(
        f"{s['processed']:,} images processed in {s['elapsed_s']:.1f} s ({s['images_per_s']:,.0f} img/s, "
        f"{s['workers']} workers); {s['output_bytes'] / 2**20:,.1f} MiB written", highlight=False
    )
    for note in s["notes"]:
        console.print(note, highlight=False)
    if s["ignored_files"]:
        console.print(f"{s['ignored_files']:,} other files ignored (not images by their extension, or links inside a tar)", highlight=False)
    for row in s["skipped"][:10]:
        console.print(f"skipped ({row['split']}) {row['path']}: {row['reason']}", highlight=False, soft_wrap=True)
    if len(s["skipped"]) > 10:
        console.print(f"... and {len(s['skipped']) - 10} more skipped files: `alexnet inspect {s['output']}` lists them all")


@app.command()
def inspect(
    data: str = typer.Argument(..., help="The OUT.h5 written by `alexnet prep`."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    verify: bool = typer.Option(False, "--verify", help="Re-read every shard and check its checksum and counts (exit 1 on damage)."),
    export: Optional[str] = typer.Option(None, help="Write the first --limit images of --split as PNGs plus labels.csv into this new folder."),
    split: Optional[str] = typer.Option(None, help="Split to --export (default: train, else the first)."),
    limit: int = typer.Option(16, min=1, help="How many images to --export."),
) -> None:
    """Splits, classes, mean, PCA, settings and skipped files of a prepared dataset."""
    from alexnet_cli.data import inspection
    from alexnet_cli.data.format import PreparedDataset

    ds = PreparedDataset(data)
    info = inspection.describe(ds)
    failed = False
    if verify:
        rows = inspection.verify(ds)
        failed = any(r["problems"] for r in rows)
        info["verify"] = {"ok": not failed, "shards": rows}
    if export:
        split = split or ("train" if "train" in ds.splits else next(iter(ds.splits)))
        csv_path = inspection.export(ds, split, limit, export)
        info["export"] = {"folder": export, "labels_csv": str(csv_path), "images": min(limit, ds.splits[split].images)}
    if as_json:
        print(json.dumps(info))
    else:
        _render_inspect(info)
    if failed:
        raise AlexnetError(f"{data}: verification failed (see above); restore the damaged shards or rerun `alexnet prep` with --force")


def _render_inspect(info: dict) -> None:
    table = Table(title=f"{info['path']} (format v{info['format_version']}, {info['num_classes']} classes)")
    for col in ("split", "images", "classes", "shards", "skipped"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for name, v in info["splits"].items():
        table.add_row(name, f"{v['images']:,}", str(v["classes"]), str(v["shards"]), str(v["skipped"]))
    console.print(table)
    if info["mean_rgb"] is not None:
        console.print("mean RGB (0..255): " + ", ".join(f"{m:.3f}" for m in info["mean_rgb"]), highlight=False)
        console.print("PCA eigenvalues: " + ", ".join(f"{v:.5f}" for v in info["pca"]["eigenvalues"]), highlight=False)
        rows = info["pca"]["eigenvectors"]
        console.print("PCA eigenvectors (columns):", highlight=False)
        for r in rows:
            console.print("  " + "  ".join(f"{x:+.4f}" for x in r), highlight=False)
    classes = info["classes"]
    shown = ", ".join(f"{c['index']} {c['wnid']} {c['name']}" for c in classes[:5])
    console.print(f"classes: {shown}{' ...' if len(classes) > 5 else ''}", highlight=False)
    for key, value in info["settings"].items():
        console.print(f"  {key}: {value}", highlight=False, soft_wrap=True)
    for row in info["skipped"][:20]:
        console.print(f"skipped ({row['split']}) {row['path']}: {row['reason']}", highlight=False, soft_wrap=True)
    if len(info["skipped"]) > 20:
        console.print(f"... and {len(info['skipped']) - 20} more (--json lists them all)")
    if "verify" in info:
        for r in info["verify"]["shards"]:
            if r["problems"]:
                console.print(f"[red]DAMAGED[/] {r['split']} {r['shard']}: " + "; ".join(r["problems"]), soft_wrap=True)
        console.print("verify: all shards intact" if info["verify"]["ok"] else "[red]verify: damage found[/]")
    if "export" in info:
        console.print(f"exported {info['export']['images']} images to {info['export']['folder']} ({info['export']['labels_csv']})")


@app.command()
def train(
    data: Optional[str] = typer.Option(None, "--data", envvar="ALEXNET_DATA", show_envvar=True, help="The OUT.h5 written by `alexnet prep`."),
    run_dir: str = typer.Option("runs/alexnet", "--run-dir", help="Holds last.pt, best.pt, metrics.csv and curves.png."),
    epochs: int = typer.Option(90, help="Passes over the training set (section 5: roughly 90)."),
    batch_size: int = typer.Option(128, "--batch-size", help="Global batch size, over all processes (section 5: 128)."),
    lr: float = typer.Option(0.01, "--lr", help="Initial learning rate (section 5: 0.01)."),
    momentum: float = typer.Option(0.9, help="SGD momentum (section 5: 0.9)."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Weight decay (section 5: 0.0005)."),
    schedule: str = typer.Option("plateau", help="'plateau': lr / 10 when val top-1 stops improving (the paper); 'step': / 10 every --step-epochs."),
    lr_drops: int = typer.Option(3, "--lr-drops", help="At most this many lr drops with 'plateau' (section 5: three)."),
    patience: int = typer.Option(5, help="'plateau': epochs without a better val top-1 before a drop."),
    step_epochs: int = typer.Option(30, "--step-epochs", help="'step': epochs between drops."),
    lighting: float = typer.Option(0.1, "--lighting", help="Std of the PCA lighting coefficients (section 4.1: 0.1; 0 turns it off)."),
    arch: str = typer.Option("paper", help="'paper' (two towers) or 'torchvision'."),
    dropout: float = typer.Option(0.5, help="Dropout on fc6 and fc7 outputs (section 4.2: 0.5)."),
    bias_init: float = typer.Option(1.0, "--bias-init", help="Bias of conv2/4/5 and fc6/7 (section 5: 1; Caffe uses 0.1)."),
    gpus: Optional[int] = typer.Option(None, help="0: CPU; 1: one GPU; 2: the paper's split, one tower per GPU. Default: 1 if CUDA is available."),
    devices: Optional[str] = typer.Option(None, help="Explicit placement, e.g. cpu,cpu (the split on the CPU) or cuda:0,cuda:0."),
    workers: int = typer.Option(4, help="Loader worker processes (per training process)."),
    amp: bool = typer.Option(False, "--amp", help="bfloat16 autocast (on GPU; on the CPU it works but is only fast with native bf16)."),
    channels_last: bool = typer.Option(False, "--channels-last", help="NHWC memory layout."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the network."),
    seed: int = typer.Option(0, help="Seeds initial weights, order, augmentation and dropout."),
    resume: Optional[str] = typer.Option(None, "--resume", help="'last': continue --run-dir from last.pt; 'auto': continue if it has one, else start."),
    force: bool = typer.Option(False, "--force", help="Start over in a --run-dir that holds a run (deletes its checkpoints)."),
    max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many optimizer steps in all (writes last.pt)."),
    limit: Optional[int] = typer.Option(None, help="Use at most this many images of each split (spread over the classes)."),
    synthetic: bool = typer.Option(False, "--synthetic", help="Train on generated batches (no data): model throughput."),
    num_classes: int = typer.Option(1000, "--num-classes", help="Classes for --synthetic."),
    checkpoint_every: Optional[int] = typer.Option(None, "--checkpoint-every", help="Also write last.pt every N steps."),
    checkpoint_minutes: float = typer.Option(30.0, "--checkpoint-minutes", help="Also write last.pt when this many minutes passed."),
    log_every: int = typer.Option(50, "--log-every", help="Without a terminal: one progress line per N steps."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to RUN_DIR/tensorboard (needs tensorboard)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (the run's summary) on stdout."),
) -> None:
    """Train the network with the paper's recipe (SGD, augmentation, dropout).

    Exits 75 after SIGTERM/SIGUSR1 with last.pt written: rerun with --resume auto.
    """
    from alexnet_cli.train import TrainConfig
    from alexnet_cli.train import train as run_training

    cfg = TrainConfig(
        data=data, run_dir=run_dir, epochs=epochs, batch_size=batch_size, lr=lr, momentum=momentum,
        weight_decay=weight_decay, schedule=schedule, lr_drops=lr_drops, patience=patience,
        step_epochs=step_epochs, lighting_std=lighting, arch=arch, dropout=dropout, bias_init=bias_init,
        gpus=gpus, devices=tuple(devices.split(",")) if devices else None, workers=workers, amp=amp,
        channels_last=channels_last, compile=compile_, seed=seed, resume=resume, force=force,
        max_steps=max_steps, limit=limit, synthetic=synthetic, num_classes=num_classes,
        checkpoint_every=checkpoint_every, checkpoint_minutes=checkpoint_minutes, log_every=log_every,
        tensorboard=tensorboard,
    )
    summary = run_training(cfg)
    if summary is None:  # not rank 0 of a torchrun job
        return
    if as_json:
        print(json.dumps(summary))
        return
    last = summary["last_epoch"]
    table = Table(title=f"alexnet train: {summary['run_dir']} ({summary['stopped']})")
    table.add_column("epochs")
    table.add_column("steps", justify="right")
    for col in ("train loss", "val top-1", "val top-5", "best val top-1", "img/s"):
        table.add_column(col, justify="right")
    pct = lambda v: "-" if v is None else f"{v:.2f}%"  # noqa: E731
    table.add_row(
        str(summary["epochs_completed"]),
        str(summary["steps"]),
        "-" if last is None else f"{last['train_loss']:.4f}",
        pct(None if last is None else last["val_top1"]),
        pct(None if last is None else last["val_top5"]),
        pct(summary["best_val_top1"]),
        "-" if last is None else f"{last['images_per_s']:,.1f}",
    )
    console.print(table)


_ARCH_HELP = "'torchvision': score torchvision's AlexNet state_dict given by --weights (a checkpoint names its own)."
_WEIGHTS_HELP = "torchvision AlexNet weights (e.g. alexnet-owt-7be5be79.pth), with --arch torchvision."
_GPUS_HELP = "0: CPU, 1: one GPU, 2: the paper's two-GPU split. Default: 1 if a GPU is present, else 0."


@app.command("eval")
def eval_(
    checkpoint: Optional[Path] = typer.Argument(
        None, envvar="ALEXNET_CHECKPOINT", show_envvar=True, help="Checkpoint written by `alexnet train`."
    ),
    data: Optional[Path] = typer.Option(
        None, envvar="ALEXNET_DATA", show_envvar=True, help="Prepared dataset (OUT.h5 from `alexnet prep`)."
    ),
    split: str = typer.Option("val", help="Split to score."),
    ten_crop: bool = typer.Option(
        False, "--ten-crop/--center-crop", help="Average the softmax of 10 crops (section 4.1), or the center crop."
    ),
    gpus: Optional[int] = typer.Option(None, help=_GPUS_HELP),
    batch_size: int = typer.Option(128, min=1, help="Images per batch; crops per forward pass."),
    workers: Optional[int] = typer.Option(None, min=0, help="Data-loading processes. Default: cores per rank, at most 8."),
    arch: Optional[str] = typer.Option(None, help=_ARCH_HELP),
    weights: Optional[Path] = typer.Option(None, help=_WEIGHTS_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    per_class: Optional[Path] = typer.Option(None, help="Write per-class accuracy as CSV to this file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --per-class file."),
) -> None:
    """Top-1/top-5 of a checkpoint, center crop or the paper's 10 crops. Runs under torchrun too."""
    from alexnet_cli.evaluate import EvalConfig, run_eval, write_per_class_csv
    from alexnet_cli.fileio import check_new_file

    if data is None:
        raise InputError("no dataset: pass --data OUT.h5 (from `alexnet prep`) or set ALEXNET_DATA=OUT.h5")
    if checkpoint is None and weights is None and arch != "torchvision":
        raise InputError("no checkpoint: pass CKPT, set ALEXNET_CHECKPOINT=CKPT, or use --arch torchvision --weights FILE")
    if per_class is not None:
        check_new_file(per_class, force)
    config = EvalConfig(data, split, ten_crop, gpus, batch_size, workers)
    result = run_eval(config, checkpoint, arch, weights)
    if not result.is_main:
        return
    if per_class is not None:
        write_per_class_csv(per_class, result.per_class())
    s = result.summary()
    if as_json:
        print(json.dumps({"checkpoint": str(checkpoint or weights), "data": str(data), "split": split, **s}))
        return
    crops = "10 crops" if ten_crop else "center crop"
    table = Table(title=escape(f"{checkpoint or weights} on {data} [{split}], {crops}"))
    table.add_column("")
    table.add_column("top-1", justify="right")
    table.add_column("top-5", justify="right")
    table.add_row("accuracy", f"{s['top1']:.2f}%", f"{s['top5']:.2f}%")
    table.add_row("error", f"{s['top1_error']:.2f}%", f"{s['top5_error']:.2f}%")
    table.add_row("correct", f"{s['top1_correct']:,}", f"{s['top5_correct']:,}")
    table.add_section()
    table.add_row("images", f"{s['images']:,} x {s['crops']} crop(s)", "")
    table.add_row("loss", f"{s['loss']:.4f}", "")
    table.add_row("speed", f"{s['images_per_s']:,.1f} images/s", f"{s['world_size']} process(es)")
    console.print(table)


@app.command()
def predict(
    images: list[str] = typer.Argument(..., help="Image files, folders (searched recursively for image extensions), or - for stdin."),
    checkpoint: Optional[Path] = typer.Option(
        None, envvar="ALEXNET_CHECKPOINT", show_envvar=True, help="Checkpoint written by `alexnet train`."
    ),
    top_k: int = typer.Option(5, min=1, help="Classes to show per image."),
    ten_crop: bool = typer.Option(False, "--ten-crop", help="Average the softmax of 10 crops (section 4.1)."),
    arch: Optional[str] = typer.Option(None, help=_ARCH_HELP),
    weights: Optional[Path] = typer.Option(None, help=_WEIGHTS_HELP),
    gpus: Optional[int] = typer.Option(None, help=_GPUS_HELP),
    batch_size: int = typer.Option(64, min=1, help="Images per batch; crops per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
    csv_file: Optional[Path] = typer.Option(None, "--csv", help="Also write the predictions as CSV to this file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --csv file."),
) -> None:
    """Classify images with a checkpoint: top-k classes with WordNet id, name and probability."""
    from alexnet_cli.evaluate import devices_for, load_classifier, resolve_gpus
    from alexnet_cli.fileio import check_new_file
    from alexnet_cli.predict import Failure, collect_inputs
    from alexnet_cli.predict import predict as run_predict
    from alexnet_cli.predict import write_csv

    if checkpoint is None and weights is None and arch != "torchvision":
        raise InputError(
            "no checkpoint: pass --checkpoint CKPT or set ALEXNET_CHECKPOINT=CKPT "
            "(or use --arch torchvision --weights FILE.pth)"
        )
    if csv_file is not None:
        check_new_file(csv_file, force)
    classifier = load_classifier(devices_for(resolve_gpus(gpus)), checkpoint, arch, weights)
    inputs = collect_inputs(images, sys.stdin.buffer if "-" in images else None)
    done, failed = [], 0
    for result in run_predict(classifier, inputs, top_k, ten_crop, batch_size):
        if isinstance(result, Failure):
            failed += 1
            err_console.print(f"[bold red]error:[/] {escape(result.error)}", highlight=False, soft_wrap=True)
        else:
            done.append(result)
    if csv_file is not None:
        write_csv(csv_file, done)
    if as_json:
        print(json.dumps([{"file": p.file, "predictions": p.predictions} for p in done]))
    else:
        table = Table(title=escape(f"{checkpoint or weights}{', 10 crops' if ten_crop else ''}"))
        for col in ("file", "#", "wnid", "class", "prob"):
            table.add_column(col, justify="right" if col in ("#", "prob") else "left")
        for p in done:
            for rank, c in enumerate(p.predictions, 1):
                cells = (p.file if rank == 1 else "", str(rank), c["wnid"], c["name"], f"{100 * c['prob']:.2f}%")
                table.add_row(*map(escape, cells))
            table.add_section()
        console.print(table)
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def demo(
    workdir: Path = typer.Option(Path("alexnet-demo"), help="Folder for the demo's images, dataset and run (replaced on rerun)."),
    epochs: int = typer.Option(4, min=1, help="Training epochs."),
    seed: int = typer.Option(0, help="Seeds the images, the weights and the augmentation."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object on stdout at the end."),
) -> None:
    """The embedded demo: draw 10 classes of shapes, then prep -> train -> eval (10 crops) -> predict.

    The network is the paper's; the recipe is scaled down to finish in a few minutes on 2 CPU
    cores, and the demo prints exactly what it reduced."""
    from alexnet_cli.demo import DemoConfig, reductions, run_demo

    cfg = DemoConfig(workdir=workdir, epochs=epochs, seed=seed)
    out = err_console if as_json else console  # --json keeps stdout for the one object
    out.print("[bold]alexnet demo[/]: the paper's network, end to end on generated images. Reduced against the paper:")
    for line in reductions(cfg):
        out.print(f"  - {line}", highlight=False)

    def show(step) -> None:
        out.print(f"\n[bold]$ {escape(step.command)}[/]", highlight=False, soft_wrap=True)
        r = step.result
        if step.name == "images":
            out.print(f"  {r['train']} training and {r['val']} validation images in {workdir / 'images'}")
        elif step.name == "prep":
            splits = ", ".join(f"{k}: {v['images']} images" for k, v in r["splits"].items())
            out.print(f"  {splits}, {r['classes']} classes, {r['skipped']} skipped ({step.seconds:.1f} s)")
        elif step.name == "train":
            last = r.get("last_epoch", {})
            out.print(
                f"  {r.get('epochs_completed')} epoch{'' if r.get('epochs_completed') == 1 else 's'}, {r.get('steps')} steps, val top-1 {last.get('val_top1', float('nan')):.1f}% "
                f"({step.seconds:.1f} s); {workdir / 'run'}: best.pt, last.pt, metrics.csv, curves.png",
                highlight=False,
            )
        elif step.name == "eval":
            out.print(
                f"  10-crop top-1 {r['top1']:.1f}% (error {r['top1_error']:.1f}%), top-5 {r['top5']:.1f}% "
                f"on {r['images']} validation images; chance is 10% ({step.seconds:.1f} s)",
                highlight=False,
            )
        elif step.name == "predict":
            for p in r["predictions"]:
                top = p["top"]
                out.print(f"  {escape(Path(p['file']).name)}: {escape(top['name'])} ({100 * top['prob']:.0f}%)", highlight=False)
            out.print(f"  {r['correct']}/{r['images']} correct")

    summary = run_demo(cfg, show)  # training progress goes to stderr either way
    out.print(
        f"\n[bold]done[/] in {summary['seconds']:.0f} s: 10-crop top-1 {summary['top1']:.1f}% vs 10% chance. "
        f"Try: alexnet predict YOUR.jpg --checkpoint {summary['checkpoint']}",
        highlight=False,
        soft_wrap=True,
    )
    if as_json:
        print(json.dumps(summary))


@app.command()
def filters(
    checkpoint: Optional[Path] = typer.Argument(
        None, envvar="ALEXNET_CHECKPOINT", show_envvar=True, help="Checkpoint written by `alexnet train`."
    ),
    output: Path = typer.Option(Path("conv1.png"), "-o", "--output", help="PNG file to write."),
    weights: Optional[Path] = typer.Option(None, help="torchvision AlexNet weights instead of a checkpoint (64 kernels, one tower)."),
    scale: int = typer.Option(4, min=1, max=32, help="Pixels per kernel pixel."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
) -> None:
    """conv1's kernels as a picture, tower 0 left and tower 1 right (the paper's Figure 3)."""
    from alexnet_cli.checkpoint import load_checkpoint, load_torchvision_weights
    from alexnet_cli.fileio import check_new_file
    from alexnet_cli.plots import draw_filters

    check_new_file(output, force)
    if weights is not None:
        weight, towers = load_torchvision_weights(weights).get("features.0.weight"), 1
        source = weights
    elif checkpoint is not None:
        ckpt = load_checkpoint(checkpoint)
        towers = 2 if ckpt["model_config"].get("arch", "paper") == "paper" else 1
        weight = ckpt["model"].get("conv1.weight" if towers == 2 else "features.0.weight")
        source = checkpoint
    else:
        raise InputError("no checkpoint: pass CKPT, set ALEXNET_CHECKPOINT=CKPT, or use --weights FILE.pth")
    if weight is None or weight.ndim != 4 or weight.shape[1] != 3:
        raise InputError(f"{source}: has no conv1 kernels of shape [K, 3, h, w]")
    draw_filters(weight.float().numpy(), output, towers, scale)
    console.print(f"wrote {output}: {weight.shape[0]} kernels of {weight.shape[2]}x{weight.shape[3]}"
                  + (", tower 0 left, tower 1 right" if towers == 2 else ""), highlight=False)


@app.command()
def plot(
    run_dirs: list[Path] = typer.Argument(..., help="Run folders (or metrics.csv files) of `alexnet train`; several are compared."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="PNG file. Default: RUN_DIR/curves.png for one run, curves.png for several."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file (one run's own curves.png is always redrawn)."),
) -> None:
    """Redraw loss and top-1/top-5 curves from metrics.csv; several runs are drawn together."""
    from alexnet_cli.fileio import check_new_file
    from alexnet_cli.plots import draw_runs, read_metrics

    runs = {}
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
    console.print(f"wrote {output} ({', '.join(f'{k}: {len(v)} epochs' for k, v in runs.items())})", highlight=False)


@app.command()
def info(
    arch: str = typer.Option("paper", help="Architecture: 'paper' (two towers) or 'torchvision'."),
    num_classes: int = typer.Option(1000, min=1, help="Number of output classes."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
) -> None:
    """The layer table: output shape, parameters, MACs and towers of every layer."""
    from alexnet_cli.info import summary
    from alexnet_cli.model import ARCHES, ModelConfig

    if arch not in ARCHES:
        raise InputError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHES)}")
    s = summary(ModelConfig(arch=arch, num_classes=num_classes))
    if as_json:
        print(json.dumps(s))
        return
    table = Table(title=f"AlexNet ({arch}), input {'x'.join(map(str, s['input_shape']))}")
    columns = ["layer", "type", "output", "params", "MACs"] + (["towers", "input"] if arch == "paper" else [])
    for col in columns:
        table.add_column(col, justify="right" if col in ("params", "MACs") else "left", no_wrap=True)
    for r in s["layers"]:
        shape = "x".join(map(str, r["output_shape"]))
        cells = [r["name"], r["kind"], shape, f"{r['params']:,}", f"{r['macs']:,}"]
        table.add_row(*cells, *([",".join(map(str, r["towers"])), r["input_from"]] if arch == "paper" else []))
    table.add_section()
    table.add_row("total", "", "", f"{s['total_params']:,}", f"{s['total_macs']:,}")
    console.print(table)


def main(argv: Optional[list[str]] = None) -> None:
    """Entry point: expected errors become one line on stderr and a documented exit code."""
    try:
        app(args=argv, prog_name="alexnet")
    except Preempted as e:
        # Every rank stops after the same step (the signal is all-reduced) and only rank 0 writes
        # last.pt: one line from it says it all. A requested stop is not an error.
        if os.environ.get("RANK", "0") == "0":
            if _state["debug"]:
                traceback.print_exc()
            err_console.print(escape(str(e)), highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except AlexnetError as e:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug, not a user error: still one line unless --debug
        if _state["debug"]:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {escape(str(e))} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)


