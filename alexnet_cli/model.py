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

For the paper's ablations (docs/claims.md) the net can also be one tower (section 3.2's
comparison net, TOWER_WIDTHS), use tanh (3.1), go without LRN (3.3) or pool without overlap
(3.4): ModelConfig's switches, the paper's choices by default.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from alexnet_cli import randomness
from alexnet_cli.config import DROPOUT_FORMS, ModelConfig, switch_problem

ARCHES = ("paper", "torchvision")

# Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75. The paper's alpha multiplies the plain
# sum of squares; Caffe and torch.nn.LocalResponseNorm divide alpha by n first.
LRN_SIZE, LRN_K, LRN_ALPHA, LRN_BETA = 5, 2.0, 1e-4, 0.75

# Kernels (units) per tower of conv1-conv5, fc6 and fc7, for each `towers` layout, and how many
# towers it has (section 3.2). "two": Figure 2. "one-half": the net the paper compares against,
# "half as many kernels in each convolutional layer trained on one GPU", except that conv5 (and
# so fc6, fc7) keeps all its kernels, "to make the two nets have approximately the same number
# of parameters" (footnote 2): 59.8M against 61.0M with 1000 classes. "one-full": one tower as
# wide as both, every layer seeing all of the layer before (as torchvision's and Caffe's nets).
TOWER_WIDTHS = {
    "two": (2, (48, 128, 192, 192, 128, 2048, 2048)),
    "one-half": (1, (48, 128, 192, 192, 256, 4096, 4096)),
    "one-full": (1, (96, 256, 384, 384, 256, 4096, 4096)),
}
POOL_SIZES = {"overlap": 3, "plain": 2}  # section 3.4: z; the stride s is 2 in both
# The layers split between the towers, in network order (fc8 is computed whole, on tower 0's
# device, from both towers' fc7 units).
TOWER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
LAYERS = TOWER_LAYERS + ("fc8",)
# The outputs `layer_output` can stop at, in network order: conv layers after their ReLU (tanh), pool1
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


def activate(x: torch.Tensor, activation: str = "relu", inplace: bool = True) -> torch.Tensor:
    """Section 3.1's nonlinearity: the ReLU, max(0, x), or the saturating tanh(x) it replaced."""
    if activation == "relu":
        return F.relu(x, inplace=inplace)
    return x.tanh_() if inplace else torch.tanh(x)


class Tower(nn.Module):
    """One GPU's half of Figure 2: 48-128-192-192-128 kernels, 2048+2048 fc units; or, with other
    `widths` (TOWER_WIDTHS), the one tower of a one-tower net (`n_towers` = 1)."""

    def __init__(
        self,
        dropout: float = 0.5,
        dropout_form: str = "paper",
        widths: Sequence[int] = TOWER_WIDTHS["two"][1],
        n_towers: int = 2,
        activation: str = "relu",
        lrn: bool = True,
        pool: str = "overlap",
    ):
        super().__init__()
        c1, c2, c3, c4, c5, f6, f7 = widths
        z = POOL_SIZES[pool]  # overlapping pooling (z = 3, s = 2), section 3.4
        self.activation = activation
        self.conv1 = nn.Conv2d(3, c1, kernel_size=11, stride=4, padding=2)
        self.norm1 = LocalResponseNorm() if lrn else nn.Identity()
        self.pool1 = nn.MaxPool2d(kernel_size=z, stride=2)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5, padding=2)
        self.norm2 = LocalResponseNorm() if lrn else nn.Identity()
        self.pool2 = nn.MaxPool2d(kernel_size=z, stride=2)
        self.conv3 = nn.Conv2d(n_towers * c2, c3, kernel_size=3, padding=1)  # sees every tower
        self.conv4 = nn.Conv2d(c3, c4, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(c4, c5, kernel_size=3, padding=1)
        self.pool5 = nn.MaxPool2d(kernel_size=z, stride=2)
        self.fc6 = nn.Linear(n_towers * c5 * 6 * 6, f6)  # sees every tower
        self.drop6 = Dropout(dropout, dropout_form)
        self.fc7 = nn.Linear(n_towers * f6, f7)  # sees every tower
        self.drop7 = Dropout(dropout, dropout_form)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 and conv2: each tower on its own, from the image to its maps of 13x13."""
        x = self.pool1(self.norm1(activate(self.conv1(x), self.activation)))
        return self.pool2(self.norm2(activate(self.conv2(x), self.activation)))

    def body(self, both: torch.Tensor) -> torch.Tensor:
        """conv3 over every tower's maps, then conv4 and conv5 on its own."""
        x = activate(self.conv3(both), self.activation)
        x = activate(self.conv4(x), self.activation)
        return torch.flatten(self.pool5(activate(self.conv5(x), self.activation)), 1)

    def fc6_units(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop6(activate(self.fc6(both), self.activation, inplace=False))

    def fc7_units(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop7(activate(self.fc7(both), self.activation, inplace=False))


class AlexNet(nn.Module):
    """The paper's network. ``devices=None``: one device, each layer of both towers computed in one
    call; two names: tower 0 on the first, tower 1 on the second, each running its own modules
    (``("cpu", "cpu")`` runs the split on the CPU). Outputs land on the first. A one-tower net
    (`towers` "one-half" or "one-full") takes one device name, or None."""

    def __init__(
        self,
        num_classes: int = 1000,
        devices: Sequence[str | torch.device] | None = None,
        dropout: float = 0.5,
        dropout_form: str = "paper",
        weight_std: float = 0.01,
        bias_init: float = 1.0,
        activation: str = "relu",
        lrn: bool = True,
        pool: str = "overlap",
        towers: str = "two",
    ):
        super().__init__()
        problem = switch_problem(ModelConfig(activation=activation, lrn=lrn, pool=pool, towers=towers))
        if problem:
            raise ValueError(problem)
        count, widths = TOWER_WIDTHS[towers]
        self.activation, self.lrn = activation, lrn
        self.towers = nn.ModuleList(
            [Tower(dropout, dropout_form, widths, count, activation, lrn, pool) for _ in range(count)]
        )
        self.fc8 = nn.Linear(count * widths[-1], num_classes)
        init_paper(self, weight_std, bias_init)
        self.towers_apart = False  # True once place()d: each tower then runs on its own device
        if devices is not None:
            self.place(devices)
        self.register_state_dict_post_hook(_merge_towers_hook)
        self.register_load_state_dict_pre_hook(_split_towers_hook)

    def place(self, devices: Sequence[str | torch.device]) -> AlexNet:
        """Put tower 0 (and fc8) on devices[0] and tower 1 on devices[1] (one tower: devices[0],
        its own modules run one by one, as `alexnet info` needs for its per-module rows)."""
        if len(devices) != len(self.towers):
            entries = "two entries" if len(self.towers) == 2 else "one entry"
            raise ValueError(f"devices needs {entries} (one per tower), got {list(devices)}")
        for tower, device in zip(self.towers, devices, strict=True):
            tower.to(device)
        self.fc8.to(devices[0])
        self.towers_apart = True
        return self

    @property
    def devices(self) -> tuple[torch.device, ...]:
        """Where each tower lives (read from the weights, so .to() keeps it true)."""
        return tuple(t.conv1.weight.device for t in self.towers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.towers_apart:
            return next(out for name, out in self.layer_outputs(x) if name == "fc8")
        pairs = list(zip(self.towers, self.devices, strict=True))
        # Tensors cross between the towers only here: into conv3, fc6, fc7 and fc8.
        a = [t.stem(_cpu_nhwc(x.to(d))) for t, d in pairs]
        b = [t.body(_join(a, d)) for t, d in pairs]
        c = [t.fc6_units(_join(b, d)) for t, d in pairs]
        e = [t.fc7_units(_join(c, d)) for t, d in pairs]
        return self.fc8(_join(e, self.devices[0]))

    def layer_outputs(self, x: torch.Tensor) -> Iterator[tuple[str, torch.Tensor]]:
        """Both towers on one device: (name, output) of each layer in LAYER_OUTPUTS order, both
        towers' maps side by side (tower 0 first). The same arithmetic as the split, but each
        conv layer of both towers runs as one convolution with the grouped layout's weights
        (conv1's 96 kernels as one conv, conv2/4/5 as 2-group convs) and LRN normalises both
        towers' maps in one call: fewer, larger kernels, which oneDNN runs faster than two
        half-width ones. Pooling has no weights, so tower 0's pooling modules serve both."""
        if self.towers_apart:
            raise ValueError("layer_outputs runs both towers on one device; build the model without devices")
        towers, act = self.towers, self.activation
        t0 = towers[0]

        def conv(x: torch.Tensor, layer: str) -> torch.Tensor:
            return activate(_conv(x, [t.get_submodule(layer) for t in towers]), act)

        def norm(x: torch.Tensor) -> torch.Tensor:
            return local_response_norm(x, groups=len(towers)) if self.lrn else x

        x = _cpu_nhwc(x.to(self.devices[0]))
        yield "conv1", (x := conv(x, "conv1"))
        yield "pool1", (x := t0.pool1(norm(x)))
        yield "conv2", (x := conv(x, "conv2"))
        yield "pool2", (x := t0.pool2(norm(x)))
        yield "conv3", (x := conv(x, "conv3"))
        yield "conv4", (x := conv(x, "conv4"))
        yield "conv5", (x := conv(x, "conv5"))
        yield "pool5", (x := torch.flatten(t0.pool5(x), 1))
        yield "fc6", (x := torch.cat([t.fc6_units(x) for t in towers], dim=1))
        yield "fc7", (x := torch.cat([t.fc7_units(x) for t in towers], dim=1))
        yield "fc8", self.fc8(x)


def _cpu_nhwc(x: torch.Tensor) -> torch.Tensor:
    """On CPU, the image batch in channels_last (NHWC) memory order, which every layer after it
    keeps: on CPU most of this network's convolutions and all its max-pools run faster in NHWC
    (docs/benchmarks.md). Both placements use it, so split and unsplit round alike."""
    return x.contiguous(memory_format=torch.channels_last) if x.device.type == "cpu" else x


def _conv(x: torch.Tensor, parts: Sequence[nn.Conv2d]) -> torch.Tensor:
    """Every tower's part of a conv layer as one convolution with the grouped layout's weights.
    A layer that sees only its own tower's maps (conv2, conv4, conv5) is a 2-group conv."""
    if len(parts) == 1:
        return parts[0](x)
    weight, bias = torch.cat([p.weight for p in parts]), torch.cat([p.bias for p in parts])
    first = parts[0]
    groups = x.shape[1] // first.in_channels
    return F.conv2d(x, weight, bias, first.stride, first.padding, groups=groups)


def _join(parts: Sequence[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Every tower's outputs, tower 0 first, on `device` (the only cross-tower traffic)."""
    return torch.cat([p.to(device, non_blocking=True) for p in parts], dim=1)


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
    in network order; a one-tower net's are only renamed. Works on any dict keyed like the
    model's parameters (e.g. momentum)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict(
        (k, v) for k, v in state.items() if not k.startswith(prefix)
    )
    for layer in LAYERS:
        for kind in ("weight", "bias"):
            if layer == "fc8":
                out[f"{prefix}fc8.{kind}"] = state[f"{prefix}fc8.{kind}"]
                continue
            parts, t = [], 0
            while (key := f"{prefix}towers.{t}.{layer}.{kind}") in state:
                parts.append(state[key])
                t += 1
            out[f"{prefix}{layer}.{kind}"] = (
                torch.cat([p.to(parts[0].device) for p in parts]) if len(parts) > 1 else parts[0]
            )
    return out


def split_towers(state: dict, prefix: str = "", towers: int = 2) -> None:
    """The grouped layout -> per-tower tensors of `towers` towers, in place (inverse of
    merge_towers)."""
    for layer in TOWER_LAYERS:
        for kind in ("weight", "bias"):
            key = f"{prefix}{layer}.{kind}"
            if key in state:
                for t, part in enumerate(state.pop(key).chunk(towers)):
                    state[f"{prefix}towers.{t}.{layer}.{kind}"] = part


def _merge_towers_hook(module, state, prefix, local_metadata):
    merged = merge_towers(state, prefix)
    state.clear()
    state.update(merged)


def _split_towers_hook(module, state, prefix, *args):
    split_towers(state, prefix, len(module.towers))


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
            config.activation,
            config.lrn,
            config.pool,
            config.towers,
        )
    if config.arch == "torchvision":
        from torchvision.models import alexnet

        problem = switch_problem(config)
        if problem:
            raise ValueError(problem)

        if devices is not None and len({str(d) for d in devices}) > 1:
            raise ValueError("arch 'torchvision' has no towers to split; use arch 'paper' for two devices")
        model = alexnet(weights=None, num_classes=config.num_classes, dropout=config.dropout)
        for i, module in enumerate(model.classifier):  # ours, so that the form and masks apply too
            if isinstance(module, nn.Dropout):
                model.classifier[i] = Dropout(config.dropout, config.dropout_form)
        return model.to(devices[0]) if devices is not None else model
    raise ValueError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHES)}")
