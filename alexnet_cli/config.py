"""Every command's options as a dataclass, with the paper's values as defaults and the section
that gives each. The core takes these configs; the CLI reuses their defaults. Kept free of
torch and numpy, so that `alexnet --help` starts in a fraction of a second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

LIGHTING_STD = 0.1  # section 4.1: PCA lighting coefficients alpha_i ~ N(0, 0.1)
# Choices where the paper's text allows readings: docs/recipe.md has the paper's sentence, what
# cuda-convnet2 and Caffe do, and why the default is what it is.
DROPOUT_FORMS = ("paper", "inverted")  # x0.5 at test (section 4.2) / x2 in training (nn.Dropout)
MOMENTUM_FORMS = ("paper", "torch")  # the rate inside the velocity (section 5, Caffe) / torch's SGD
LIGHTING_UNITS = ("eigenvalue", "stddev")  # alpha_i lambda_i in [0,1] pixel units / alpha_i sqrt(lambda_i)
# The paper's ingredients as switches, the first value its own, for the ablations it reports
# (docs/claims.md, benchmarks/claims.py).
ACTIVATIONS = ("relu", "tanh")  # 3.1: max(0, x) / the saturating tanh(x) it compares against
POOLS = ("overlap", "plain")  # 3.4: max-pool z = 3, s = 2 (overlapping) / z = 2, s = 2
# 3.2: the two-tower net / "a net with half as many kernels in each convolutional layer trained
# on one GPU" (footnote 2: conv5 and the fc layers kept whole) / one tower as wide as both
TOWERS = ("two", "one-half", "one-full")
MODEL_SWITCHES = ("activation", "lrn", "pool", "towers")  # ModelConfig's fields for them
# What a checkpoint written before these choices existed was trained with.
LEGACY_RECIPE = {
    "dropout_form": "inverted",
    "momentum_form": "torch",
    "bias_decay": True,
    "lighting_units": "eigenvalue",
    "activation": "relu",
    "lrn": True,
    "pool": "overlap",
    "towers": "two",
    "crop_flip": True,
}
# prep's JPEG storage: 4:4:4 at quality 90 is 26 KB and 38.8 dB PSNR per 256x256 ImageNet crop;
# 4:2:0 needs quality 95 (29 KB) for the same PSNR (docs/format.md has the table).
JPEG_QUALITY = 90


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild the network."""

    arch: str = "paper"  # "paper" (model.AlexNet) or "torchvision" (torchvision.models.alexnet)
    num_classes: int = 1000
    dropout: float = 0.5  # section 4.2: p = 0.5 on the outputs of fc6 and fc7
    # Section 4.2: "setting to zero the output of each hidden neuron with probability 0.5 ...
    # At test time, we use all the neurons but multiply their outputs by 0.5".
    dropout_form: str = "paper"
    weight_std: float = 0.01  # section 5: every weight ~ N(0, 0.01)
    # Section 5: biases 1 in conv2, conv4, conv5, fc6, fc7 ("accelerates the early stages of
    # learning by providing the ReLUs with positive inputs"), 0 elsewhere. Caffe's bvlc_alexnet
    # uses 0.1 because the loss stayed flat with 1; 0.1 is kept as a documented option.
    bias_init: float = 1.0
    # Switches for the paper's ablations (sections 3.1-3.4); arch "paper" only.
    activation: str = "relu"  # ACTIVATIONS: after every conv and fc6/fc7 (section 3.1)
    lrn: bool = True  # local response normalisation after conv1 and conv2 (section 3.3)
    pool: str = "overlap"  # POOLS: the max-pools after conv1, conv2 and conv5 (section 3.4)
    towers: str = "two"  # TOWERS: model.TOWER_WIDTHS has each layout's kernels (section 3.2)


def switch_problem(config: ModelConfig | TrainConfig) -> str | None:
    """What is wrong with `config`'s ablation switches, as one line naming the options (None:
    nothing): an unknown choice, or a switch set for arch "torchvision", which has none."""
    for name, choices in (("activation", ACTIVATIONS), ("pool", POOLS), ("towers", TOWERS)):
        if getattr(config, name) not in choices:
            return f"--{name} {getattr(config, name)}: choose one of {', '.join(choices)}"
    changed = [f"--{k}" for k in MODEL_SWITCHES if getattr(config, k) != getattr(ModelConfig, k)]
    if config.arch == "torchvision" and changed:
        return f"--arch torchvision has no {', '.join(changed)} switch; they are --arch paper's"
    return None


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
    # v <- 0.9 v - 0.0005 e w - e dL/dw; w <- w + v: the rate inside the velocity (section 5)
    momentum_form: str = "paper"
    # The update rule decays "w", the weights; cuda-convnet2 and Caffe leave biases undecayed.
    bias_decay: bool = False
    # "divide the learning rate by 10 when the validation error rate stopped improving with the
    # current learning rate"; "step" is pytorch/examples' common alternative.
    schedule: str = "plateau"
    lr_drops: int = 3  # "The learning rate was ... reduced three times prior to termination"
    patience: int = 5  # epochs without a better val top-1 before a drop (the paper does not say)
    step_epochs: int = 30  # schedule "step": divide by 10 every 30 epochs
    lighting_std: float = LIGHTING_STD
    # "magnitudes proportional to the corresponding eigenvalues": of the [0,1]-pixel covariance
    lighting_units: str = "eigenvalue"
    # Section 4.1's "translations and horizontal reflections": a random 224x224 patch, reflected
    # with probability 1/2; False: the center patch, unreflected (the lighting draws stay the same)
    crop_flip: bool = True
    # The network (sections 3, 4.2, 5; ModelConfig)
    arch: str = ModelConfig.arch
    dropout: float = ModelConfig.dropout
    dropout_form: str = ModelConfig.dropout_form
    bias_init: float = ModelConfig.bias_init
    weight_std: float = ModelConfig.weight_std
    activation: str = ModelConfig.activation
    lrn: bool = ModelConfig.lrn
    pool: str = ModelConfig.pool
    towers: str = ModelConfig.towers
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
    # Fine-tuning (finetune.py)
    init_from: str | None = None  # start from this checkpoint's weights (a .safetensors, `torchvision`)
    freeze: str | None = None  # finetune.FREEZE: keep the weights up to this layer fixed


@dataclass
class EvalConfig:
    """Options of `alexnet eval` (section 4.1)."""

    data: Path | None = None  # the OUT.h5 index file written by `alexnet prep`
    split: str = "val"
    ten_crop: bool = False  # section 4.1: average the softmax over 5 patches and their reflections
    gpus: int | None = None  # 0: CPU, 1: one GPU, 2: the paper's two-GPU split; None: 1 if CUDA is present
    batch_size: int = 128  # images per batch, crops per forward pass (10 passes a batch with ten_crop)
    workers: int | None = None  # loader worker processes; None: the cores per rank, at most 8
    decode: str = "cpu"  # "gpu": the GPU decodes the stored JPEGs (nvJPEG; data/gpu_decode.py)


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
    epochs: int = 6
    batch_size: int = 32  # 600 images: batches of 128 would leave 5 steps an epoch
    lr: float = TrainConfig.lr
    bias_init: float = TrainConfig.bias_init
    seed: int = 0
    workers: int = 2  # prep and loader processes: the two cores of a small machine


@dataclass
class ExportConfig:
    """Options of `alexnet export`."""

    out: Path  # .onnx, .pt2 or .safetensors
    force: bool = False  # replace an existing OUT and its card
    opset: int | None = None  # ONNX opset; None: the exporter's default


@dataclass
class FeaturesConfig:
    """Options of `alexnet features`."""

    out: Path  # the HDF5 file to write
    layer: str = "fc7"  # Figure 4's "last, 4096-dimensional hidden layer"
    split: str = "train"  # the split of a prepared dataset given as input
    batch_size: int = 64
    gpus: int | None = None  # 0: CPU, 1: one GPU; None: 1 if CUDA is present
    workers: int | None = (
        None  # decoding processes for a split (threads for files); None: the cores, at most 8
    )
    force: bool = False  # replace an existing OUT (and discard a partial one)


@dataclass
class NeighborsConfig:
    """Options of `alexnet neighbors`."""

    gallery: Path  # a prepared dataset (OUT.h5 of prep) or a features file of `alexnet features`
    split: str = "train"  # Figure 4: neighbours among the training images
    k: int = 6  # Figure 4: six per query
    layer: str = "fc7"  # Figure 4: the last hidden layer
    figure: Path | None = None  # the grid PNG to draw
    cache: Path | None = None  # folder of cached gallery features; None: default_cache()
    chunk_mb: int = 64  # gallery rows read per step, in MiB: the search's memory bound
    batch_size: int = 64
    gpus: int | None = None
    workers: int | None = None
    force: bool = False  # replace an existing figure
