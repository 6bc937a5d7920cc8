"""The network of Krizhevsky, Sutskever & Hinton (2012): sections 3.1-3.5, 4.2, 5 and Figure 2.

The paper trained one net split over two GPUs. Each GPU held a *tower*: half of the kernels
of every layer. The towers talk only at conv3, fc6, fc7 and fc8 (Figure 2, section 3.2);
conv2, conv4 and conv5 see only their own tower's maps, and LRN normalises within a tower.

The model here is built from exactly those two towers' weights, placed on one device or on
two (``devices=("cuda:0", "cuda:1")``). Split, each tower runs its own modules on its own
device; on one device, each layer of both towers runs as one call (a grouped convolution, LRN
over both towers' maps), the same arithmetic done faster. Whatever the placement,
``state_dict()`` uses one layout, the grouped single-model layout (``conv2.weight`` is
``[256, 48, 5, 5]``, ``fc6.weight`` is ``[4096, 9216]``; the first half of every layer's outputs
is tower 0), so checkpoints move freely between CPU, 1 GPU and 2 GPUs. Input is 224x224;
docs/recipe.md explains the 224-vs-227 choice (conv1 padding 2).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cli import randomness
from alexnet_cli.config import DROPOUT_FORMS, ModelConfig

ARCHES = ("paper", "torchvision")

# Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75. The paper's alpha multiplies the plain
# sum of squares; Caffe and torch.nn.LocalResponseNorm divide alpha by n first.
LRN_SIZE, LRN_K, LRN_ALPHA, LRN_BETA = 5, 2.0, 1e-4, 0.75

# The layers split between the towers, in network order (fc8 is computed whole, on tower 0's
# device, from both towers' fc7 units).
TOWER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
LAYERS = TOWER_LAYERS + ("fc8",)
# The outputs `layer_output` can stop at, in network order: conv layers after their ReLU, pool1
# and pool2 after LRN and pooling, pool5 flattened, fc6 and fc7 after ReLU (and dropout), fc8's
# logits. fc7 is the "last, 4096-dimensional hidden layer" of the paper's Figure 4.
LAYER_OUTPUTS = ("conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8")


def _neighbours(reach: int):
    """(destination, source) slices along the map dim pairing each map with every other map
    within `reach` of it, stopping at the edges (for windowed sums done in place)."""
    for d in range(1, reach + 1):
        yield slice(d, None), slice(None, -d)
        yield slice(None, -d), slice(d, None)


def _pow_into(q: torch.Tensor, exponent: float, out: torch.Tensor) -> torch.Tensor:
    """q^exponent written into `out`. The paper's exponent 3/2 (beta = 3/4 of q = s^-1/2) as
    q * sqrt(q): several times cheaper on CPU than pow with a general exponent."""
    if exponent == 1.5:
        return torch.sqrt(q, out=out).mul_(q)
    return torch.pow(q, exponent, out=out)


class _LRNFunction(torch.autograd.Function):
    """b_i = a_i / (k + alpha * sum_{j in W(i)} a_j^2)^beta, W(i) = the n maps around i (dim 2).

    LRN is memory-bound: on CPU its cost is the passes over activation-sized tensors and, more,
    each fresh allocation of one (the OS zero-fills every page of it). So both directions work in
    place where they can and allocate two such tensors each. With s_i = k + alpha sum a_j^2,
    q_i = s_i^-1/2 (so s^-beta = q^2beta and 1/s = q^2), b_i = a_i s_i^-beta and the window
    symmetric,
        dL/da_j = g_j s_j^-beta - 2 alpha beta a_j * sum_{i in W(j)} g_i b_i q_i^2.
    Saved: a (kept alive by the ReLU before anyway), b (the output, kept by the max-pool after
    it) and q: one activation-sized tensor of its own.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        scale = torch.addcmul(a.new_full((), k), a, a, value=alpha)  # k + alpha a_i^2, ...
        for dst, src in _neighbours(size // 2):  # ... + alpha a_j^2 over the neighbours j
            scale[:, :, dst].addcmul_(a[:, :, src], a[:, :, src], value=alpha)
        q = scale.rsqrt_()
        out = _pow_into(q, 2 * beta, out=torch.empty_like(q)).mul_(a)
        ctx.save_for_backward(a, out, q)
        ctx.hyper = (size, alpha, beta)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor):
        a, out, q = ctx.saved_tensors
        size, alpha, beta = ctx.hyper
        t = (grad * out).mul_(q).mul_(q)  # g_i b_i / s_i
        inner = t.clone()
        for dst, src in _neighbours(size // 2):
            inner[:, :, dst].add_(t[:, :, src])
        grad_a = _pow_into(q, 2 * beta, out=t).mul_(grad).addcmul_(a, inner, value=-2 * alpha * beta)
        return grad_a, None, None, None, None


def local_response_norm(
    x: torch.Tensor,
    size: int = LRN_SIZE,
    alpha: float = LRN_ALPHA,
    beta: float = LRN_BETA,
    k: float = LRN_K,
    groups: int = 1,
) -> torch.Tensor:
    """Section 3.3 over the channels of an NCHW tensor (any memory format), within each of
    `groups` equal blocks of channels: groups=2 normalises two towers' maps side by side."""
    n, c, h, w = x.shape
    # Viewing the channels as (groups, c / groups) puts them in dim 2 for every memory format,
    # and the window stops at each group's edge.
    a = x.view(n, groups, c // groups, h, w)
    lrn = _lrn_plain if _exporting() else _LRNFunction.apply
    return lrn(a, size, alpha, beta, k).view(n, c, h, w)


def _lrn_plain(a: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
    """_LRNFunction's forward in plain out-of-place ops (pad, slices, sum, pow), for exported
    graphs: ONNX and torch.export get a Pad/Slice/Add/Pow chain instead of the in-place slice
    updates of the fast path, which the ONNX exporter turns into ScatterND. Equal to the fast
    path within float32 rounding (tests/test_model.py)."""
    reach, maps = size // 2, a.shape[2]
    squares = F.pad(a * a, (0, 0, 0, 0, reach, reach))  # zero maps beyond the edges, along dim 2
    window = sum(squares[:, :, d : d + maps] for d in range(size))
    return a * (k + alpha * window).pow(-beta)


def _exporting() -> bool:
    """Whether torch.export (which torch.onnx's exporter uses) is tracing the model. torch < 2.6
    has no such flag; export then traces _LRNFunction's own ops, which give the same values."""
    return getattr(torch.compiler, "is_exporting", lambda: False)()


class LocalResponseNorm(nn.Module):
    """Section 3.3's brightness normalisation, over the channel dim of an NCHW tensor."""

    def __init__(
        self, size: int = LRN_SIZE, alpha: float = LRN_ALPHA, beta: float = LRN_BETA, k: float = LRN_K
    ):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return local_response_norm(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


@dataclass(frozen=True)
class DropoutMasks:
    """Where this step's dropout masks come from: the whole global batch's masks are drawn from
    (key, layer) alone, and this process keeps rows `start:start + n` (its share of the batch),
    so a sample's masks do not depend on how many processes share the batch (nor on restarts)."""

    key: tuple[int, ...]  # (run seed, epoch, step)
    start: int  # this process's first sample in the global batch
    global_size: int

    def keep(self, x: torch.Tensor, layer: int, p: float) -> torch.Tensor:
        """Bernoulli(1 - p) keep mask for `x`, this process's rows of the global batch's."""
        g = torch.Generator(device=x.device).manual_seed(
            randomness.torch_seed(randomness.DROPOUT, *self.key, layer)
        )
        u = torch.rand((self.global_size, *x.shape[1:]), generator=g, device=x.device, dtype=torch.float32)
        return u[self.start : self.start + x.shape[0]] >= p


class Dropout(nn.Module):
    """Section 4.2's dropout on a layer's outputs. form "paper": zero each output with
    probability p in training, "at test time ... multiply their outputs by 0.5" (1 - p);
    "inverted": torch's nn.Dropout, which divides the kept outputs by 1 - p in training and
    leaves test time alone. The expected output is the same; the training dynamics are not
    (with "inverted" the next layer sees inputs twice as large while training).

    Masks come from `masks` when the training loop sets them (set_dropout_masks), else from
    torch's global generator."""

    def __init__(self, p: float = 0.5, form: str = "paper"):
        super().__init__()
        if form not in DROPOUT_FORMS:
            raise ValueError(f"unknown dropout form {form!r}; choose one of {', '.join(DROPOUT_FORMS)}")
        self.p, self.form = p, form
        self.layer = 0  # which mask stream: set by set_dropout_masks
        self.masks: DropoutMasks | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0:
            return x
        if not self.training:
            return x * (1 - self.p) if self.form == "paper" else x
        if self.masks is None:
            if self.form == "inverted":
                return F.dropout(x, self.p, training=True)
            keep = torch.empty_like(x).bernoulli_(1 - self.p)
        else:
            keep = self.masks.keep(x, self.layer, self.p).to(x.dtype)
        return x * keep if self.form == "paper" else x * keep / (1 - self.p)

    def extra_repr(self) -> str:
        return f"p={self.p}, form={self.form}"


def set_dropout_masks(model: nn.Module, masks: DropoutMasks | None) -> None:
    """Give every Dropout of `model` this step's mask source (None: torch's generator). Each
    layer draws its own stream, numbered in module order, the same on every placement."""
    for layer, module in enumerate(m for m in model.modules() if isinstance(m, Dropout)):
        module.layer, module.masks = layer, masks


class Tower(nn.Module):
    """One GPU's half of Figure 2: 48-128-192-192-128 kernels, 2048+2048 fc units."""

    def __init__(self, dropout: float = 0.5, dropout_form: str = "paper"):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 48, kernel_size=11, stride=4, padding=2)
        self.norm1 = LocalResponseNorm()
        self.pool1 = nn.MaxPool2d(kernel_size=3, stride=2)  # overlapping pooling, section 3.4
        self.conv2 = nn.Conv2d(48, 128, kernel_size=5, padding=2)
        self.norm2 = LocalResponseNorm()
        self.pool2 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.conv3 = nn.Conv2d(256, 192, kernel_size=3, padding=1)  # sees both towers
        self.conv4 = nn.Conv2d(192, 192, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(192, 128, kernel_size=3, padding=1)
        self.pool5 = nn.MaxPool2d(kernel_size=3, stride=2)
        self.fc6 = nn.Linear(2 * 128 * 6 * 6, 2048)  # sees both towers
        self.drop6 = Dropout(dropout, dropout_form)
        self.fc7 = nn.Linear(2 * 2048, 2048)  # sees both towers
        self.drop7 = Dropout(dropout, dropout_form)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 and conv2: each tower on its own, from the image to 128 maps of 13x13."""
        x = self.pool1(self.norm1(F.relu(self.conv1(x), inplace=True)))
        return self.pool2(self.norm2(F.relu(self.conv2(x), inplace=True)))

    def body(self, both: torch.Tensor) -> torch.Tensor:
        """conv3 over both towers' maps, then conv4 and conv5 on its own."""
        x = F.relu(self.conv3(both), inplace=True)
        x = F.relu(self.conv4(x), inplace=True)
        return torch.flatten(self.pool5(F.relu(self.conv5(x), inplace=True)), 1)

    def fc6_units(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop6(F.relu(self.fc6(both)))

    def fc7_units(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop7(F.relu(self.fc7(both)))


class AlexNet(nn.Module):
    """The paper's network. ``devices=None``: one device, each layer of both towers computed in one
    call; two names: tower 0 on the first, tower 1 on the second, each running its own modules
    (``("cpu", "cpu")`` runs the split on the CPU). Outputs land on the first."""

    def __init__(
        self,
        num_classes: int = 1000,
        devices: Sequence[str | torch.device] | None = None,
        dropout: float = 0.5,
        dropout_form: str = "paper",
        weight_std: float = 0.01,
        bias_init: float = 1.0,
    ):
        super().__init__()
        self.towers = nn.ModuleList([Tower(dropout, dropout_form), Tower(dropout, dropout_form)])
        self.fc8 = nn.Linear(2 * 2048, num_classes)
        init_paper(self, weight_std, bias_init)
        self.towers_apart = False  # True once place()d: each tower then runs on its own device
        if devices is not None:
            self.place(devices)
        self.register_state_dict_post_hook(_merge_towers_hook)
        self.register_load_state_dict_pre_hook(_split_towers_hook)

    def place(self, devices: Sequence[str | torch.device]) -> AlexNet:
        """Put tower 0 (and fc8) on devices[0] and tower 1 on devices[1]."""
        if len(devices) != 2:
            raise ValueError(f"devices needs two entries (one per tower), got {list(devices)}")
        self.towers[0].to(devices[0])
        self.fc8.to(devices[0])
        self.towers[1].to(devices[1])
        self.towers_apart = True
        return self

    @property
    def devices(self) -> tuple[torch.device, torch.device]:
        """Where tower 0 and tower 1 live (read from the weights, so .to() keeps it true)."""
        return self.towers[0].conv1.weight.device, self.towers[1].conv1.weight.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.towers_apart:
            return next(out for name, out in self.layer_outputs(x) if name == "fc8")
        t0, t1 = self.towers
        d0, d1 = self.devices
        # Tensors cross between the towers only here: into conv3, fc6, fc7 and fc8.
        a0, a1 = t0.stem(_cpu_nhwc(x.to(d0))), t1.stem(_cpu_nhwc(x.to(d1)))
        b0, b1 = t0.body(_join(a0, a1, d0)), t1.body(_join(a0, a1, d1))
        f0, f1 = _join(b0, b1, d0), _join(b0, b1, d1)
        c0, c1 = t0.fc6_units(f0), t1.fc6_units(f1)
        e0, e1 = t0.fc7_units(_join(c0, c1, d0)), t1.fc7_units(_join(c0, c1, d1))
        return self.fc8(_join(e0, e1, d0))

    def layer_outputs(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Both towers on one device: (name, output) of each layer in LAYER_OUTPUTS order, both
        towers' maps side by side (tower 0 first). The same arithmetic as the split, but each
        conv layer of both towers runs as one convolution with the grouped layout's weights
        (conv1's 96 kernels as one conv, conv2/4/5 as 2-group convs) and LRN normalises both
        towers' maps in one call: fewer, larger kernels, which oneDNN runs faster than two
        half-width ones. Pooling has no weights, so tower 0's pooling modules serve both."""
        if self.towers_apart:
            raise ValueError("layer_outputs runs both towers on one device; build the model without devices")
        t0, t1 = self.towers
        x = _cpu_nhwc(x.to(self.devices[0]))
        yield "conv1", (x := F.relu(_conv(x, t0.conv1, t1.conv1), inplace=True))
        yield "pool1", (x := t0.pool1(local_response_norm(x, groups=2)))
        yield "conv2", (x := F.relu(_conv(x, t0.conv2, t1.conv2), inplace=True))
        yield "pool2", (x := t0.pool2(local_response_norm(x, groups=2)))
        yield "conv3", (x := F.relu(_conv(x, t0.conv3, t1.conv3), inplace=True))
        yield "conv4", (x := F.relu(_conv(x, t0.conv4, t1.conv4), inplace=True))
        yield "conv5", (x := F.relu(_conv(x, t0.conv5, t1.conv5), inplace=True))
        yield "pool5", (x := torch.flatten(t0.pool5(x), 1))
        yield "fc6", (x := torch.cat([t0.fc6_units(x), t1.fc6_units(x)], dim=1))
        yield "fc7", (x := torch.cat([t0.fc7_units(x), t1.fc7_units(x)], dim=1))
        yield "fc8", self.fc8(x)


def _cpu_nhwc(x: torch.Tensor) -> torch.Tensor:
    """On CPU, the image batch in channels_last (NHWC) memory order, which every layer after it
    keeps: on CPU most of this network's convolutions and all its max-pools run faster in NHWC
    (docs/benchmarks.md). Both placements use it, so split and unsplit round alike."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def _conv(x: torch.Tensor, half0: nn.Conv2d, half1: nn.Conv2d) -> torch.Tensor:
    """Both towers' halves of a conv layer as one convolution with the grouped layout's weights.
    A layer that sees only its own tower's maps (conv2, conv4, conv5) is a 2-group conv."""
    weight, bias = torch.cat([half0.weight, half1.weight]), torch.cat([half0.bias, half1.bias])
    groups = x.shape[1] // half0.in_channels
    return F.conv2d(x, weight, bias, half0.stride, half0.padding, groups=groups)


def _join(a: torch.Tensor, b: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Both towers' outputs, tower 0 first, on `device` (the only cross-tower traffic)."""
    return torch.cat([a.to(device, non_blocking=True), b.to(device, non_blocking=True)], dim=1)


@torch.no_grad()
def init_paper(model: AlexNet, weight_std: float = 0.01, bias_init: float = 1.0) -> None:
    """Section 5: weights ~ N(0, 0.01); biases `bias_init` in conv2, conv4, conv5, fc6, fc7, else 0."""
    ones = {"conv2", "conv4", "conv5", "fc6", "fc7"}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            module.weight.normal_(0.0, weight_std)
            module.bias.fill_(bias_init if name.rsplit(".", 1)[-1] in ones else 0.0)


def merge_towers(state: dict, prefix: str = "") -> OrderedDict[str, torch.Tensor]:
    """Per-tower tensors (``towers.0.conv2.weight`` ...) -> the grouped layout (``conv2.weight``),
    in network order. Works on any dict keyed like the model's parameters (e.g. momentum)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict(
        (k, v) for k, v in state.items() if not k.startswith(prefix)
    )
    for layer in LAYERS:
        for kind in ("weight", "bias"):
            if layer == "fc8":
                out[f"{prefix}fc8.{kind}"] = state[f"{prefix}fc8.{kind}"]
                continue
            a, b = state[f"{prefix}towers.0.{layer}.{kind}"], state[f"{prefix}towers.1.{layer}.{kind}"]
            out[f"{prefix}{layer}.{kind}"] = torch.cat([a, b.to(a.device)])
    return out


def split_towers(state: dict, prefix: str = "") -> None:
    """The grouped layout -> per-tower tensors, in place (inverse of merge_towers)."""
    for layer in TOWER_LAYERS:
        for kind in ("weight", "bias"):
            key = f"{prefix}{layer}.{kind}"
            if key in state:
                half0, half1 = state.pop(key).chunk(2)
                state[f"{prefix}towers.0.{layer}.{kind}"] = half0
                state[f"{prefix}towers.1.{layer}.{kind}"] = half1


def _merge_towers_hook(module, state, prefix, local_metadata):
    merged = merge_towers(state, prefix)
    state.clear()
    state.update(merged)


def _split_towers_hook(module, state, prefix, *args):
    split_towers(state, prefix)


# torchvision's AlexNet (one tower, no LRN) in the paper's layer names. Outputs: where in its
# forward each of LAYER_OUTPUTS ends, as (stage, end of the stage's slice); pool5 is avgpool's
# output (6x6 already at 224x224, so the pool itself). Weights: the module holding each layer's.
TORCHVISION_OUTPUTS = {
    "conv1": ("features", 2),
    "pool1": ("features", 3),
    "conv2": ("features", 5),
    "pool2": ("features", 6),
    "conv3": ("features", 8),
    "conv4": ("features", 10),
    "conv5": ("features", 12),
    "pool5": ("avgpool", 0),
    "fc6": ("classifier", 3),
    "fc7": ("classifier", 6),
    "fc8": ("classifier", 7),
}
TORCHVISION_WEIGHTS = {
    "features.0": "conv1",
    "features.3": "conv2",
    "features.6": "conv3",
    "features.8": "conv4",
    "features.10": "conv5",
    "classifier.1": "fc6",
    "classifier.4": "fc7",
    "classifier.6": "fc8",
}


def layer_output(model: nn.Module, x: torch.Tensor, layer: str) -> torch.Tensor:
    """What `layer` (one of LAYER_OUTPUTS) outputs for the input batch x, computing no layer after
    it. Either architecture; the paper's with both towers on one device."""
    if layer not in LAYER_OUTPUTS:
        raise ValueError(f"unknown layer {layer!r}; choose one of {', '.join(LAYER_OUTPUTS)}")
    if isinstance(model, AlexNet):
        return next(out for name, out in model.layer_outputs(x) if name == layer)
    stage, end = TORCHVISION_OUTPUTS[layer]
    if stage == "features":
        return model.features[:end](x)
    x = torch.flatten(model.avgpool(model.features(x)), 1)
    return x if stage == "avgpool" else model.classifier[:end](x)


def layer_of(parameter: str) -> str:
    """The layer (one of LAYERS) a parameter name of either architecture belongs to:
    ``towers.1.conv2.weight`` and ``features.3.weight`` are both conv2."""
    parts = parameter.split(".")
    if parts[0] == "towers":
        return parts[2]
    return parts[0] if parts[0] in LAYERS else TORCHVISION_WEIGHTS[".".join(parts[:2])]


def arch_of(model: nn.Module) -> str:
    """The ARCHES name of a network build_model made."""
    return "paper" if isinstance(model, AlexNet) else "torchvision"


def build_model(config: ModelConfig, devices: Sequence[str | torch.device] | None = None) -> nn.Module:
    """The network a config names: the paper's, or torchvision's single-tower variant."""
    if config.arch == "paper":
        return AlexNet(
            config.num_classes,
            devices,
            config.dropout,
            config.dropout_form,
            config.weight_std,
            config.bias_init,
        )
    if config.arch == "torchvision":
        from torchvision.models import alexnet

        if devices is not None and len({str(d) for d in devices}) > 1:
            raise ValueError("arch 'torchvision' has no towers to split; use arch 'paper' for two devices")
        model = alexnet(weights=None, num_classes=config.num_classes, dropout=config.dropout)
        for i, module in enumerate(model.classifier):  # ours, so that the form and masks apply too
            if isinstance(module, nn.Dropout):
                model.classifier[i] = Dropout(config.dropout, config.dropout_form)
        return model.to(devices[0]) if devices is not None else model
    raise ValueError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHES)}")
