"""Every command's options as a dataclass, with the paper's values as defaults and the section
that gives each. The core takes these configs; the CLI reuses their defaults. Kept free of
torch and numpy, so that `alexnet --help` starts in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LIGHTING_STD = 0.1  # section 4.1: PCA lighting coefficients alpha_i ~ N(0, 0.1)
# prep's JPEG storage: 4:4:4 at quality 90 is 26 KB and 38.8 dB PSNR per 256x256 ImageNet crop;
# 4:2:0 needs quality 95 (29 KB) for the same PSNR (docs/format.md has the table).
JPEG_QUALITY = 90


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild the network."""

    arch: str = "paper"  # "paper" (model.AlexNet) or "torchvision" (torchvision.models.alexnet)
    num_classes: int = 1000
    dropout: float = 0.5  # section 4.2: p = 0.5 on the outputs of fc6 and fc7
    weight_std: float = 0.01  # section 5: every weight ~ N(0, 0.01)
    # Section 5: biases 1 in conv2, conv4, conv5, fc6, fc7 ("accelerates the early stages of
    # learning by providing the ReLUs with positive inputs"), 0 elsewhere. Caffe's bvlc_alexnet
    # uses 0.1 because the loss stayed flat with 1; 0.1 is kept as a documented option.
    bias_init: float = 1.0


@dataclass
class TrainConfig:
    """Every option of `alexnet train`. Defaults are the paper's (section 5 unless noted)."""

    data: str | None = None  # prep's OUT.h5
    run_dir: str = "runs/alexnet"
    # The recipe
    epochs: int = 90  # "roughly 90 cycles through the training set of 1.2 million images"
    batch_size: int = 128  # "stochastic gradient descent with a batch size of 128 examples"
    lr: float = 0.01  # "The learning rate was initialized at 0.01"
    momentum: float = 0.9  # "momentum of 0.9"
    weight_decay: float = 5e-4  # "weight decay of 0.0005"
    # "divide the learning rate by 10 when the validation error rate stopped improving with the
    # current learning rate"; "step" is pytorch/examples' common alternative.
    schedule: str = "plateau"
    lr_drops: int = 3  # "The learning rate was ... reduced three times prior to termination"
    patience: int = 5  # epochs without a better val top-1 before a drop (the paper does not say)
    step_epochs: int = 30  # schedule "step": divide by 10 every 30 epochs
    lighting_std: float = LIGHTING_STD
    # The network (sections 3, 4.2, 5; ModelConfig)
    arch: str = ModelConfig.arch
    dropout: float = ModelConfig.dropout
    bias_init: float = ModelConfig.bias_init
    weight_std: float = ModelConfig.weight_std
    # Hardware
    gpus: int | None = None  # None: 1 if CUDA is available, else 0; 2: the paper's tower split
    devices: tuple[str, ...] | None = None  # explicit placement: ("cpu", "cpu"), ("cuda:0", "cuda:0")
    workers: int = 4
    decode: str = "cpu"  # "gpu": the training GPU decodes the JPEGs (nvJPEG; data/gpu_decode.py)
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = False
    compile: bool = False
    # Run control
    seed: int = 0
    resume: str | None = None  # "last": continue --run-dir; "auto": continue it if it has a checkpoint
    force: bool = False  # start over in a --run-dir that holds a run
    max_steps: int | None = None  # stop after this many optimizer steps in all (a checkpoint is written)
    limit: int | None = None  # use at most this many images of each split
    synthetic: bool = False  # generated batches, no data: model throughput
    num_classes: int = 1000  # for --synthetic (a dataset brings its own classes)
    checkpoint_every: int | None = None  # also write last.pt every N steps
    checkpoint_minutes: float = 30.0  # ... and when this much time passed since the last one
    log_every: int = 50
    tensorboard: bool = False


@dataclass
class EvalConfig:
    """Options of `alexnet eval` (section 4.1)."""

    data: Path | None = None  # the OUT.h5 index file written by `alexnet prep`
    split: str = "val"
    ten_crop: bool = False  # section 4.1: average the softmax over 5 patches and their reflections
    gpus: int | None = None  # 0: CPU, 1: one GPU, 2: the paper's two-GPU split; None: 1 if CUDA is present
    batch_size: int = 128  # images per batch, crops per forward pass (10 passes a batch with ten_crop)
    workers: int | None = None  # loader worker processes; None: the cores per rank, at most 8


@dataclass
class PredictConfig:
    """Options of `alexnet predict`."""

    top_k: int = 5  # classes to report per image
    ten_crop: bool = False  # section 4.1: the mean softmax of 10 crops, else the center crop
    batch_size: int = 64  # images per batch, crops per forward pass


@dataclass
class PrepConfig:
    """Options of `alexnet prep`; the defaults are the paper's crops (section 2)."""

    shard_size: int = 10_000  # images per shard file
    codec: str = "jpeg"  # "jpeg" (quality below) or "raw" uint8
    quality: int = JPEG_QUALITY
    workers: int = 0  # worker processes; 0 = every core this process may use
    splits: tuple[str, ...] | None = None  # None = every split found
    layout: str = "auto"
    devkit: str | None = None
    force: bool = False  # replace a complete OUT
    strict: bool = False  # any skipped input is a failure
    chunk_images: int = 64  # images per worker task


@dataclass
class DemoConfig:
    """Options of `alexnet demo`: the paper's recipe scaled down (demo.reductions says how)."""

    workdir: Path = Path("alexnet-demo")
    train_per_class: int = 60
    val_per_class: int = 10
    epochs: int = 4
    batch_size: int = 32
    lr: float = 0.005
    bias_init: float = 0.1
    seed: int = 0
    workers: int = 2  # prep and loader processes: the two cores of a small machine
