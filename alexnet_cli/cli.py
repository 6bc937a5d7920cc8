"""The `alexnet` command line. Each command: options -> a config dataclass -> one core call ->
one render function (render.py). Option defaults are the dataclasses' own.

Heavy imports (torch, h5py) happen inside the commands so that `alexnet --help` stays fast.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import Annotated

import typer

from alexnet_cli import __version__, render
from alexnet_cli.config import (
    DemoConfig,
    EvalConfig,
    ExportConfig,
    FeaturesConfig,
    ModelConfig,
    NeighborsConfig,
    PredictConfig,
    PrepConfig,
    TrainConfig,
    switch_problem,
)
from alexnet_cli.errors import EXIT_FAILED, AlexnetError, InputError, Preempted, no_checkpoint, no_dataset

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
_state = {"debug": False}

# option defaults come from these
T, E, P, R, F, N = TrainConfig, EvalConfig, PredictConfig, PrepConfig, FeaturesConfig, NeighborsConfig
ARCH_HELP = (
    "'torchvision': score torchvision's AlexNet state_dict given by --weights (a checkpoint names its own)."
)
WEIGHTS_HELP = (
    "torchvision AlexNet weights (e.g. alexnet-owt-7be5be79.pth) with --arch torchvision, or 'torchvision': "
    "its pretrained ImageNet weights (downloaded once into TORCH_HOME)."
)
CKPT_HELP = (
    "Checkpoint written by `alexnet train`, a .safetensors export, or 'torchvision' (its pretrained weights)."
)
LAYER_HELP = "conv1..conv5 (after ReLU), pool1, pool2, pool5, fc6, fc7 (the last hidden layer), fc8 (logits)."
GPUS_HELP = "0: CPU, 1: one GPU, 2: the paper's two-GPU split. Default: 1 if a GPU is present, else 0."
CHECKPOINT_HELP = "Checkpoint written by `alexnet train`."
JSON_HELP = "Print one JSON object instead of tables."
# The paper net's ablation switches (sections 3.1-3.4; docs/claims.md), for train and info
ACTIVATION_HELP = "'relu' (section 3.1) or 'tanh', the saturating unit the paper compares it with."
LRN_HELP = "Local response normalisation after conv1 and conv2 (section 3.3)."
POOL_HELP = "'overlap': max-pool 3x3, stride 2 (section 3.4); 'plain': 2x2, stride 2."
TOWERS_HELP = (
    "'two': Figure 2's towers; 'one-half': one tower of half the kernels, conv5 and fc kept whole "
    "(section 3.2's comparison net); 'one-full': one tower as wide as both."
)


def _version(value: bool) -> None:
    if value:
        print(f"alexnet {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show the full traceback of an error."),
) -> None:
    _state["debug"] = debug


@app.command()
def prep(
    src: str = typer.Argument(
        ..., help="ImageNet root, folder of the official tars, Kaggle root, or a folder of class folders."
    ),
    out: str = typer.Argument(
        ..., help="Index file to write (OUT.h5); shards go beside it as OUT-<split>-NNNNN.h5."
    ),
    layout: str = typer.Option(R.layout, help="Source layout: auto, imagenet, archives, kaggle or folders."),
    devkit: str | None = typer.Option(
        R.devkit, help="ILSVRC2012_devkit_t12.tar.gz or its folder (val labels); default: found in SRC."
    ),
    split: str | None = typer.Option(None, help="train, val or both (default: every split found)."),
    shard_size: int = typer.Option(R.shard_size, help="Images per shard file."),
    codec: str = typer.Option(R.codec, help="Storage: jpeg (4:4:4) or raw uint8."),
    quality: int = typer.Option(R.quality, help="JPEG quality (38.8 dB PSNR, 26 KB per crop at 90)."),
    workers: int = typer.Option(
        R.workers, envvar="ALEXNET_WORKERS", show_envvar=True, help="Worker processes (0: all cores)."
    ),
    force: bool = typer.Option(
        R.force,
        "--force",
        help="Replace a complete OUT made from other inputs or settings (the same command again is a no-op).",
    ),
    strict: bool = typer.Option(R.strict, "--strict", help="Fail (exit 1) if any input file cannot be used."),
    as_json: bool = typer.Option(False, "--json", help="Print the final summary as one JSON object."),
) -> None:
    """Turn an ImageNet-style dataset into 256x256 HDF5 shards with mean and RGB PCA."""
    from alexnet_cli.data.prep import SPLIT_CHOICES, prepare
    from alexnet_cli.progress import CountProgress

    if split not in SPLIT_CHOICES:
        raise InputError(f"unknown --split {split!r}; choose train, val or both")
    config = PrepConfig(
        shard_size, codec, quality, workers, SPLIT_CHOICES[split], layout, devkit, force, strict
    )
    with CountProgress("prep") as report:
        summary = prepare(src, out, config, progress=report).to_json()
    print(json.dumps(summary)) if as_json else render.prep(summary)


@app.command()
def inspect(
    data: str = typer.Argument(..., help="The OUT.h5 written by `alexnet prep`."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    verify: bool = typer.Option(
        False, "--verify", help="Re-read every shard and check its checksum and counts (exit 1 on damage)."
    ),
    export: str | None = typer.Option(
        None, help="Write the first --limit images of --split as PNGs plus labels.csv into this new folder."
    ),
    split: str | None = typer.Option(None, help="Split to --export (default: train, else the first)."),
    limit: int = typer.Option(16, min=1, help="How many images to --export."),
) -> None:
    """Splits, classes, mean, PCA, settings and skipped files of a prepared dataset."""
    from alexnet_cli.data import inspection

    info = inspection.inspect(data, verify, export, split, limit)
    print(json.dumps(info)) if as_json else render.inspect(info)
    if verify and not info["verify"]["ok"]:
        raise AlexnetError(
            f"{data}: verification failed (see above); "
            "restore the damaged shards or rerun `alexnet prep` with --force"
        )


# `alexnet train`'s options; each default is TrainConfig's (the paper's value).
_Data = Annotated[
    str | None,
    typer.Option(
        "--data", envvar="ALEXNET_DATA", show_envvar=True, help="The OUT.h5 written by `alexnet prep`."
    ),
]
_RunDir = Annotated[
    str, typer.Option("--run-dir", help="Holds last.pt, best.pt, metrics.csv and curves.png.")
]
_Epochs = Annotated[int, typer.Option(help="Passes over the training set (section 5: roughly 90).")]
_BatchSize = Annotated[
    int, typer.Option("--batch-size", help="Global batch size, over all processes (section 5: 128).")
]
_Lr = Annotated[float, typer.Option("--lr", help="Initial learning rate (section 5: 0.01).")]
_Momentum = Annotated[float, typer.Option(help="SGD momentum (section 5: 0.9).")]
_MomentumForm = Annotated[
    str,
    typer.Option(
        "--momentum-form",
        help="'paper': the learning rate inside the velocity (section 5, Caffe); 'torch': torch's SGD.",
    ),
]
_WeightDecay = Annotated[float, typer.Option("--weight-decay", help="Weight decay (section 5: 0.0005).")]
_BiasDecay = Annotated[
    bool,
    typer.Option("--bias-decay/--no-bias-decay", help="Also decay the biases (cuda-convnet2 and Caffe: no)."),
]
_Schedule = Annotated[
    str,
    typer.Option(
        help="'plateau': lr / 10 when val top-1 stops improving (the paper); "
        "'step': / 10 every --step-epochs."
    ),
]
_LrDrops = Annotated[
    int, typer.Option("--lr-drops", help="At most this many lr drops with 'plateau' (section 5: three).")
]
_Patience = Annotated[int, typer.Option(help="'plateau': epochs without a better val top-1 before a drop.")]
_StepEpochs = Annotated[int, typer.Option("--step-epochs", help="'step': epochs between drops.")]
_Lighting = Annotated[
    float,
    typer.Option(
        "--lighting", help="Std of the PCA lighting coefficients (section 4.1: 0.1; 0 turns it off)."
    ),
]
_Arch = Annotated[str, typer.Option(help="'paper' (two towers) or 'torchvision'.")]
_LightingUnits = Annotated[
    str,
    typer.Option(
        "--lighting-units",
        help="'eigenvalue': alpha_i lambda_i (the paper's words); 'stddev': sqrt(lambda_i) (cuda-convnet2).",
    ),
]
_Dropout = Annotated[float, typer.Option(help="Dropout on fc6 and fc7 outputs (section 4.2: 0.5).")]
_DropoutForm = Annotated[
    str,
    typer.Option(
        "--dropout-form",
        help="'paper': no rescale in training, x(1-p) at test (section 4.2); 'inverted': torch's nn.Dropout.",
    ),
]
_BiasInit = Annotated[
    float, typer.Option("--bias-init", help="Bias of conv2/4/5 and fc6/7 (section 5: 1; Caffe uses 0.1).")
]
_Activation = Annotated[str, typer.Option(help=ACTIVATION_HELP)]
_Lrn = Annotated[bool, typer.Option("--lrn/--no-lrn", help=LRN_HELP)]
_Pool = Annotated[str, typer.Option(help=POOL_HELP)]
_Towers = Annotated[str, typer.Option(help=TOWERS_HELP)]
_CropFlip = Annotated[
    bool,
    typer.Option(
        "--crop-flip/--no-crop-flip",
        help="Random 224 patches and reflections (section 4.1); --no-crop-flip: the center patch, "
        "unreflected (PCA lighting is --lighting).",
    ),
]
_Gpus = Annotated[int | None, typer.Option(help=GPUS_HELP)]
_Devices = Annotated[
    str | None, typer.Option(help="Explicit placement, e.g. cpu,cpu (the split on the CPU) or cuda:0,cuda:0.")
]
_Workers = Annotated[int, typer.Option(help="Loader worker processes (per training process).")]
_Decode = Annotated[
    str,
    typer.Option(
        "--decode",
        help="'cpu': loader workers decode the JPEGs; 'gpu': the GPU does (nvJPEG), "
        "for few CPU cores per GPU.",
    ),
]
_Amp = Annotated[
    bool,
    typer.Option(
        "--amp", help="bfloat16 autocast (on GPU; on the CPU it works but is only fast with native bf16)."
    ),
]
_ChannelsLast = Annotated[bool, typer.Option("--channels-last", help="NHWC memory layout.")]
_Compile = Annotated[bool, typer.Option("--compile", help="torch.compile the network.")]
_Seed = Annotated[int, typer.Option(help="Seeds initial weights, order, augmentation and dropout.")]
_Resume = Annotated[
    str | None,
    typer.Option(
        "--resume",
        help="'last': continue --run-dir from last.pt; 'auto': continue if it has one, else start.",
    ),
]
_Force = Annotated[
    bool,
    typer.Option("--force", help="Start over in a --run-dir that holds a run (deletes its checkpoints)."),
]
_MaxSteps = Annotated[
    int | None,
    typer.Option("--max-steps", help="Stop after this many optimizer steps in all (writes last.pt)."),
]
_Limit = Annotated[
    int | None, typer.Option(help="Use at most this many images of each split (spread over the classes).")
]
_Synthetic = Annotated[
    bool, typer.Option("--synthetic", help="Train on generated batches (no data): model throughput.")
]
_NumClasses = Annotated[int, typer.Option("--num-classes", help="Classes for --synthetic.")]
_CheckpointEvery = Annotated[
    int | None, typer.Option("--checkpoint-every", help="Also write last.pt every N steps.")
]
_CheckpointMinutes = Annotated[
    float, typer.Option("--checkpoint-minutes", help="Also write last.pt when this many minutes passed.")
]
_LogEvery = Annotated[
    int, typer.Option("--log-every", help="Without a terminal: one progress line per N steps.")
]
_Tensorboard = Annotated[
    bool, typer.Option("--tensorboard", help="Also log to RUN_DIR/tensorboard (needs tensorboard).")
]
_InitFrom = Annotated[
    str | None,
    typer.Option(
        "--init-from",
        help="Fine-tune: start from this checkpoint's weights and preprocessing (or a .safetensors, or "
        "'torchvision'); fc8 is re-initialised when the classes differ.",
    ),
]
_Freeze = Annotated[
    str | None, typer.Option(help="Keep the weights fixed up to 'features' (conv1-conv5), 'fc6' or 'fc7'.")
]
_AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object (the run's summary) on stdout.")]


@app.command()
def train(
    data: _Data = T.data,
    run_dir: _RunDir = T.run_dir,
    epochs: _Epochs = T.epochs,
    batch_size: _BatchSize = T.batch_size,
    lr: _Lr = T.lr,
    momentum: _Momentum = T.momentum,
    momentum_form: _MomentumForm = T.momentum_form,
    weight_decay: _WeightDecay = T.weight_decay,
    bias_decay: _BiasDecay = T.bias_decay,
    schedule: _Schedule = T.schedule,
    lr_drops: _LrDrops = T.lr_drops,
    patience: _Patience = T.patience,
    step_epochs: _StepEpochs = T.step_epochs,
    lighting: _Lighting = T.lighting_std,
    arch: _Arch = T.arch,
    lighting_units: _LightingUnits = T.lighting_units,
    crop_flip: _CropFlip = T.crop_flip,
    dropout: _Dropout = T.dropout,
    dropout_form: _DropoutForm = T.dropout_form,
    bias_init: _BiasInit = T.bias_init,
    activation: _Activation = T.activation,
    lrn: _Lrn = T.lrn,
    pool: _Pool = T.pool,
    towers: _Towers = T.towers,
    gpus: _Gpus = T.gpus,
    devices: _Devices = None,
    workers: _Workers = T.workers,
    decode: _Decode = T.decode,
    amp: _Amp = T.amp,
    channels_last: _ChannelsLast = T.channels_last,
    compile_: _Compile = T.compile,
    seed: _Seed = T.seed,
    resume: _Resume = T.resume,
    force: _Force = T.force,
    max_steps: _MaxSteps = T.max_steps,
    limit: _Limit = T.limit,
    synthetic: _Synthetic = T.synthetic,
    num_classes: _NumClasses = T.num_classes,
    checkpoint_every: _CheckpointEvery = T.checkpoint_every,
    checkpoint_minutes: _CheckpointMinutes = T.checkpoint_minutes,
    log_every: _LogEvery = T.log_every,
    tensorboard: _Tensorboard = T.tensorboard,
    init_from: _InitFrom = T.init_from,
    freeze: _Freeze = T.freeze,
    as_json: _AsJson = False,
) -> None:
    """Train the network with the paper's recipe (SGD, augmentation, dropout).

    Exits 75 after SIGTERM/SIGUSR1 with last.pt written: rerun with --resume auto.
    """
    # Every parameter but --json is the TrainConfig field of its name (--lighting: lighting_std).
    options = {k: v for k, v in locals().items() if k != "as_json"}
    from alexnet_cli.train import train as run_training

    options["devices"] = tuple(devices.split(",")) if devices else None
    options["lighting_std"], options["compile"] = options.pop("lighting"), options.pop("compile_")
    cfg = TrainConfig(**options)
    summary = run_training(cfg)
    if summary is not None:  # None: not rank 0 of a torchrun job
        print(json.dumps(summary)) if as_json else render.train(summary)


@app.command("eval")
def eval_(
    checkpoint: Path | None = typer.Argument(
        None, envvar="ALEXNET_CHECKPOINT", show_envvar=True, help=CHECKPOINT_HELP
    ),
    data: Path | None = typer.Option(
        E.data, envvar="ALEXNET_DATA", show_envvar=True, help="Prepared dataset (OUT.h5 from `alexnet prep`)."
    ),
    split: str = typer.Option(E.split, help="Split to score."),
    ten_crop: bool = typer.Option(
        E.ten_crop,
        "--ten-crop/--center-crop",
        help="Average the softmax of 10 crops (section 4.1), or the center crop.",
    ),
    gpus: int | None = typer.Option(E.gpus, help=GPUS_HELP),
    batch_size: int = typer.Option(E.batch_size, min=1, help="Images per batch; crops per forward pass."),
    workers: int | None = typer.Option(
        E.workers, min=0, help="Data-loading processes. Default: cores per rank, at most 8."
    ),
    arch: str | None = typer.Option(None, help=ARCH_HELP),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    decode: _Decode = E.decode,
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
    per_class: Path | None = typer.Option(None, help="Write per-class accuracy as CSV to this file."),
    force: bool = typer.Option(False, "--force", help="Replace an existing --per-class file."),
) -> None:
    """Top-1/top-5 of a checkpoint, center crop or the paper's 10 crops. Runs under torchrun too."""
    from alexnet_cli.evaluate import run_eval, write_per_class_csv
    from alexnet_cli.fileio import check_new_file

    if data is None:
        raise no_dataset()
    if checkpoint is None and weights is None and arch != "torchvision":
        raise no_checkpoint()
    if per_class is not None:
        check_new_file(per_class, force)
    config = EvalConfig(data, split, ten_crop, gpus, batch_size, workers, decode)
    result = run_eval(config, checkpoint, arch, weights)
    if not result.is_main:
        return
    if per_class is not None:
        write_per_class_csv(per_class, result.per_class())
    s = result.summary()
    source = str(checkpoint or weights)
    if as_json:
        print(json.dumps({"checkpoint": source, "data": str(data), "split": split, **s}))
    else:
        render.evaluation(s, source, str(data), split, ten_crop)


@app.command()
def predict(
    images: list[str] = typer.Argument(
        ..., help="Image files, folders (searched recursively for image extensions), or - for stdin."
    ),
    checkpoint: Path | None = typer.Option(
        None, envvar="ALEXNET_CHECKPOINT", show_envvar=True, help=CHECKPOINT_HELP
    ),
    top_k: int = typer.Option(P.top_k, min=1, help="Classes to show per image."),
    ten_crop: bool = typer.Option(
        P.ten_crop, "--ten-crop", help="Average the softmax of 10 crops (section 4.1)."
    ),
    arch: str | None = typer.Option(None, help=ARCH_HELP),
    weights: Path | None = typer.Option(None, help=WEIGHTS_HELP),
    gpus: int | None = typer.Option(None, help=GPUS_HELP),
    batch_size: int = typer.Option(P.batch_size, min=1, help="Images per batch; crops per forward pass."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON list instead of a table."),
    csv_file: Path | None = typer.Option(
        None, "--csv", help="Also write the predictions as CSV to this file."
    ),
    force: bool = typer.Option(False, "--force", help="Replace an existing --csv file."),
) -> None:
    """Classify images with a checkpoint: top-k classes with WordNet id, name and probability."""
    from alexnet_cli.classifier import load_classifier
    from alexnet_cli.devices import placement
    from alexnet_cli.fileio import check_new_file
    from alexnet_cli.predict import Failure, collect_inputs, write_csv
    from alexnet_cli.predict import predict as run_predict

    if checkpoint is None and weights is None and arch != "torchvision":
        raise no_checkpoint("--checkpoint CKPT")
    if csv_file is not None:
        check_new_file(csv_file, force)
    classifier = load_classifier(placement(gpus).devices, checkpoint, arch, weights)
    inputs = collect_inputs(images, sys.stdin.buffer if "-" in images else None)
    done, failed = [], 0
    for result in run_predict(classifier, inputs, top_k, ten_crop, batch_size):
        if isinstance(result, Failure):
            failed += 1
            render.error(result.error)
        else:
            done.append(result)
    if csv_file is not None:
        write_csv(csv_file, done)
    if as_json:
        print(json.dumps([{"file": p.file, "predictions": p.predictions} for p in done]))
    else:
        render.predictions(done, f"{checkpoint or weights}{', 10 crops' if ten_crop else ''}")
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def demo(
    workdir: Path = typer.Option(
        DemoConfig.workdir, help="Folder for the demo's images, dataset and run (replaced on rerun)."
    ),
    epochs: int = typer.Option(DemoConfig.epochs, min=1, help="Training epochs."),
    seed: int = typer.Option(DemoConfig.seed, help="Seeds the images, the weights and the augmentation."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON summary object on stdout at the end."),
) -> None:
    """The embedded demo: draw 10 classes of shapes, then prep -> train -> eval (10 crops) -> predict.

    The network is the paper's; the recipe is scaled down to finish in a few minutes on 2 CPU
    cores, and the demo prints exactly what it reduced."""
    from alexnet_cli.demo import reductions, run_demo

    cfg = DemoConfig(workdir=workdir, epochs=epochs, seed=seed)
    out = render.err_console if as_json else render.console  # --json keeps stdout for the one object
    out.print(
        "[bold]alexnet demo[/]: the paper's network, end to end on generated images. "
        "Reduced against the paper:"
    )
    for line in reductions(cfg):
        out.print(f"  - {line}", highlight=False)
    summary = run_demo(cfg, render.demo_step(out, workdir))  # training progress goes to stderr either way
    out.print(
        f"\n[bold]done[/] in {summary['seconds']:.0f} s: 10-crop top-1 {summary['top1']:.1f}% vs 10% chance. "
        f"Try: alexnet predict YOUR.jpg --checkpoint {summary['checkpoint']}",
        highlight=False,
        soft_wrap=True,
    )
    if as_json:
        print(json.dumps(summary))


@app.command("export")
def export_(
    checkpoint: str = typer.Argument(..., help=CKPT_HELP),
    out: Path = typer.Argument(
        ...,
        help="OUT.onnx (ONNX), OUT.pt2 (torch.export) or OUT.safetensors (weights); its card goes beside it.",
    ),
    opset: int | None = typer.Option(ExportConfig.opset, min=7, help="ONNX opset. Default: the exporter's."),
    force: bool = typer.Option(ExportConfig.force, "--force", help="Replace an existing OUT and its card."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a line."),
) -> None:
    """The inference network as ONNX, a torch.export program or safetensors weights, with a JSON card.

    The graphs take uint8 images [batch, 256, 256, 3] (what predict feeds the network) and hold
    the normalisation (mean image), the center crop and the network; see docs/export.md."""
    from alexnet_cli.export import run_export

    result = run_export(checkpoint, ExportConfig(out, force, opset))
    print(json.dumps(result.to_json())) if as_json else render.export(result)


@app.command()
def features(
    checkpoint: str = typer.Argument(..., help=CKPT_HELP),
    images: list[str] = typer.Argument(
        ...,
        help="Image files and folders (searched recursively), or one prepared dataset (OUT.h5) with --split.",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="HDF5 file to write: features, sources, index, labels."
    ),
    layer: str = typer.Option(F.layer, help=LAYER_HELP),
    split: str = typer.Option(F.split, help="The split of a prepared dataset."),
    batch_size: int = typer.Option(F.batch_size, min=1, help="Images per forward pass."),
    gpus: int | None = typer.Option(
        F.gpus, help="0: CPU, 1: one GPU. Default: 1 if a GPU is present, else 0."
    ),
    workers: int | None = typer.Option(
        F.workers,
        min=0,
        help="Decoding processes (a split) or threads (files). Default: the cores, at most 8.",
    ),
    force: bool = typer.Option(
        F.force, "--force", help="Replace an existing OUT (and start over, not resume)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a line."),
) -> None:
    """A layer's activations for each image, one row per image with its source, in HDF5.

    Written to OUT.partial as it goes: rerun the same command after an interruption to continue."""
    from alexnet_cli.features import run_features
    from alexnet_cli.progress import CountProgress

    config = FeaturesConfig(out, layer, split, batch_size, gpus, workers, force)
    with CountProgress("features") as report:
        result = run_features(checkpoint, images, config, report, render.note)
    print(json.dumps(result.to_json())) if as_json else render.features(result)
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def neighbors(
    checkpoint: str = typer.Argument(..., help=CKPT_HELP),
    queries: list[str] = typer.Argument(..., help="Query image files or folders."),
    gallery: Path = typer.Option(
        ...,
        help="A prepared dataset (its --split's features, computed once and cached) or a features file.",
    ),
    split: str = typer.Option(N.split, help="The gallery dataset's split."),
    k: int = typer.Option(N.k, "-k", min=1, help="Neighbours per query (Figure 4: 6)."),
    layer: str = typer.Option(N.layer, help=LAYER_HELP),
    out: Path | None = typer.Option(N.figure, "--out", "-o", help="Draw Figure 4's grid into this PNG."),
    cache: Path | None = typer.Option(
        N.cache,
        envvar="ALEXNET_CACHE",
        show_envvar=True,
        help="Folder of cached gallery features (~/.cache/alexnet-cli).",
    ),
    chunk_mb: int = typer.Option(
        N.chunk_mb, min=1, help="Gallery MiB read per step: the search's memory bound."
    ),
    batch_size: int = typer.Option(N.batch_size, min=1, help="Images per forward pass."),
    gpus: int | None = typer.Option(
        N.gpus, help="0: CPU, 1: one GPU. Default: 1 if a GPU is present, else 0."
    ),
    workers: int | None = typer.Option(
        N.workers, min=0, help="Decoding processes for the gallery (default: cores, <= 8)."
    ),
    force: bool = typer.Option(N.force, "--force", help="Replace an existing --out file."),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The paper's Figure 4: each query's k nearest gallery images by Euclidean distance of fc7 vectors."""
    from alexnet_cli.neighbors import run_neighbors
    from alexnet_cli.progress import CountProgress

    config = NeighborsConfig(gallery, split, k, layer, out, cache, chunk_mb, batch_size, gpus, workers, force)
    with CountProgress("gallery features") as features_report, CountProgress("search") as search_report:
        result = run_neighbors(checkpoint, queries, config, render.note, features_report, search_report)
    for line in result.failed:
        render.error(line)
    print(json.dumps(result.to_json())) if as_json else render.neighbors(result)
    if result.failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def filters(
    checkpoint: Path | None = typer.Argument(
        None, envvar="ALEXNET_CHECKPOINT", show_envvar=True, help=CHECKPOINT_HELP
    ),
    output: Path = typer.Option(Path("conv1.png"), "-o", "--output", help="PNG file to write."),
    weights: Path | None = typer.Option(
        None, help="torchvision AlexNet weights instead of a checkpoint (64 kernels, one tower)."
    ),
    scale: int = typer.Option(4, min=1, max=32, help="Pixels per kernel pixel."),
    force: bool = typer.Option(False, "--force", help="Replace an existing output file."),
    as_json: bool = typer.Option(
        False, "--json", help="Print one JSON object: the picture and each tower's colour measure."
    ),
) -> None:
    """conv1's kernels as a picture, tower 0 left and tower 1 right (the paper's Figure 3), each
    with a gauge of its chroma share: how colour-specific it is (section 6.1)."""
    from alexnet_cli.fileio import check_new_file
    from alexnet_cli.filters import colour_summary, conv1_kernels
    from alexnet_cli.plots import draw_filters

    check_new_file(output, force)
    kernels = conv1_kernels(checkpoint, weights)
    colour = colour_summary(kernels)
    captions = [
        f"tower {t['tower']}: chroma share {t['mean_chroma']:.2f} (mean)\n"
        f"{t['colour_specific']} of {t['kernels']} colour-specific"
        for t in colour["towers"]
    ]
    draw_filters(kernels.weight, output, kernels.towers, scale, colour["chroma"], captions)
    k, _, h, w = kernels.weight.shape
    if as_json:
        print(json.dumps({"output": str(output), "source": kernels.source, "kernel_size": [h, w], **colour}))
        return
    render.wrote(
        f"{output}: {k} kernels of {h}x{w}" + (", tower 0 left, tower 1 right" if kernels.towers == 2 else "")
    )
    render.colour_towers(colour)


@app.command()
def plot(
    run_dirs: list[Path] = typer.Argument(
        ..., help="Run folders (or metrics.csv files) of `alexnet train`; several are compared."
    ),
    output: Path | None = typer.Option(
        None,
        "-o",
        "--output",
        help="PNG file. Default: RUN_DIR/curves.png for one run, curves.png for several.",
    ),
    force: bool = typer.Option(
        False, "--force", help="Replace an existing output file (one run's own curves.png is always redrawn)."
    ),
) -> None:
    """Redraw loss and top-1/top-5 curves from metrics.csv; several runs are drawn together."""
    from alexnet_cli.plots import plot_runs

    output, runs = plot_runs(run_dirs, output, force)
    render.wrote(f"{output} ({', '.join(f'{k}: {len(v)} epochs' for k, v in runs.items())})")


@app.command()
def info(
    arch: str = typer.Option(ModelConfig.arch, help="Architecture: 'paper' (two towers) or 'torchvision'."),
    num_classes: int = typer.Option(ModelConfig.num_classes, min=1, help="Number of output classes."),
    activation: str = typer.Option(ModelConfig.activation, help=ACTIVATION_HELP),
    lrn: bool = typer.Option(ModelConfig.lrn, "--lrn/--no-lrn", help=LRN_HELP),
    pool: str = typer.Option(ModelConfig.pool, help=POOL_HELP),
    towers: str = typer.Option(ModelConfig.towers, help=TOWERS_HELP),
    as_json: bool = typer.Option(False, "--json", help=JSON_HELP),
) -> None:
    """The layer table: output shape, parameters, MACs and towers of every layer."""
    from alexnet_cli.info import summary
    from alexnet_cli.model import ARCHES

    if arch not in ARCHES:
        raise InputError(f"unknown --arch {arch!r}; choose one of: {', '.join(ARCHES)}")
    config = ModelConfig(
        arch=arch, num_classes=num_classes, activation=activation, lrn=lrn, pool=pool, towers=towers
    )
    problem = switch_problem(config)
    if problem:
        raise InputError(problem)
    s = summary(config)
    print(json.dumps(s)) if as_json else render.layer_table(s, arch)


def main(argv: list[str] | None = None) -> None:
    """Entry point: expected errors become one line on stderr and a documented exit code."""
    try:
        app(args=argv, prog_name="alexnet")
    except Preempted as e:
        # Every rank stops after the same step (the signal is all-reduced) and only rank 0 writes
        # last.pt: one line from it says it all. A requested stop is not an error.
        if os.environ.get("RANK", "0") == "0":
            if _state["debug"]:
                traceback.print_exc()
            render.note(str(e))
        sys.exit(e.exit_code)
    except AlexnetError as e:
        if _state["debug"]:
            traceback.print_exc()
        render.error(str(e))
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        render.err_console.print("interrupted")
        sys.exit(130)
    except Exception as e:  # a bug, not a user error: still one line unless --debug
        if _state["debug"]:
            raise
        render.err_console.print(
            f"[bold red]internal error:[/] {type(e).__name__}: {render.escape(str(e))} "
            "(rerun with --debug for the traceback)",
            highlight=False,
            soft_wrap=True,
        )
        sys.exit(EXIT_FAILED)
