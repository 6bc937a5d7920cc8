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


