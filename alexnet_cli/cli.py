"""The `alexnet` command line: parse options, call the core package, render the result.

No training, data or model logic lives here. Heavy imports (torch, h5py) happen inside the
commands so that `alexnet --help` stays fast.
"""

from __future__ import annotations

import json
import sys
import traceback
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from alexnet_cli import __version__
from alexnet_cli.errors import EXIT_FAILED, AlexnetError, InputError

app = typer.Typer(
    name="alexnet",
    help="The 2012 AlexNet paper end to end: prep ImageNet, train the two-tower net, evaluate, predict.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
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
def prep() -> None:
    """Turn an ImageNet-style dataset into 256x256 HDF5 shards with mean and RGB PCA."""
    _not_implemented("prep")


@app.command()
def train() -> None:
    """Train the network with the paper's recipe (SGD, augmentation, dropout)."""
    _not_implemented("train")


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
    except AlexnetError as e:
        if _state["debug"]:
            traceback.print_exc()
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug, not a user error: still one line unless --debug
        if _state["debug"]:
            raise
        err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {e} (rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)


