"""The `alexnet` command line: parse options, call the core package, render the result.

No training, data or model logic lives here. Heavy imports (torch, h5py) happen inside the
commands so that `alexnet --help` stays fast.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Optional

import typer
from rich.console import Console
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


@app.command("eval")
def eval_() -> None:
    """Top-1/top-5 of a checkpoint, center crop or the paper's 10 crops."""
    _not_implemented("eval")


@app.command()
def predict() -> None:
    """Classify single images with a checkpoint."""
    _not_implemented("predict")


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


