"""The network of Krizhevsky, Sutskever & Hinton (2012): sections 3.1-3.5, 4.2, 5 and Figure 2.

The paper trained one net split over two GPUs. Each GPU held a *tower*: half of the kernels
of every layer. The towers talk only at conv3, fc6, fc7 and fc8 (Figure 2, section 3.2);
conv2, conv4 and conv5 see only their own tower's maps, and LRN normalises within a tower.

The model here is built from exactly those two towers, placed on one device or on two
(``devices=("cuda:0", "cuda:1")``), so the single-device and the split network run the same
code. Whatever the placement, ``state_dict()`` uses one layout, the grouped single-model
layout (``conv2.weight`` is ``[256, 48, 5, 5]``, ``fc6.weight`` is ``[4096, 9216]``; the first
half of every layer's outputs is tower 0), so checkpoints move freely between CPU, 1 GPU and
2 GPUs. Input is 224x224; docs/recipe.md explains the 224-vs-227 choice (conv1 padding 2).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

ARCHES = ("paper", "torchvision")

# Section 3.3: k = 2, n = 5, alpha = 1e-4, beta = 0.75. The paper's alpha multiplies the plain
# sum of squares; Caffe and torch.nn.LocalResponseNorm divide alpha by n first.
LRN_SIZE, LRN_K, LRN_ALPHA, LRN_BETA = 5, 2.0, 1e-4, 0.75

# The layers split between the towers, in network order (fc8 is computed whole, on tower 0's
# device, from both towers' fc7 units).
TOWER_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")
LAYERS = TOWER_LAYERS + ("fc8",)


@dataclass
class ModelConfig:
    """What a checkpoint needs to rebuild the network."""

    arch: str = "paper"  # "paper" (this file) or "torchvision" (torchvision.models.alexnet)
    num_classes: int = 1000
    dropout: float = 0.5  # section 4.2: p = 0.5 on the outputs of fc6 and fc7
    weight_std: float = 0.01  # section 5: every weight ~ N(0, 0.01)
    # Section 5: biases 1 in conv2, conv4, conv5, fc6, fc7 ("accelerates the early stages of
    # learning by providing the ReLUs with positive inputs"), 0 elsewhere. Caffe's bvlc_alexnet
    # uses 0.1 because the loss stayed flat with 1; 0.1 is kept as a documented option.
    bias_init: float = 1.0


def _window_sum(t: torch.Tensor, size: int) -> torch.Tensor:
    """Sum over `size` adjacent maps (dim 2) centred on each map, stopping at the edges."""
    out = t.clone()
    for d in range(1, size // 2 + 1):
        out[:, :, d:] += t[:, :, :-d]
        out[:, :, :-d] += t[:, :, d:]
    return out


class _LRNFunction(torch.autograd.Function):
    """b_i = a_i / (k + alpha * sum_{j in W(i)} a_j^2)^beta, W(i) = the n maps around i.

    Hand-written backward: it saves only the input (already kept alive by the ReLU before it)
    and the denominator base, where autograd through avg_pool3d keeps several intermediates.
    With s_i = k + alpha * sum a_j^2 and the window symmetric,
        dL/da_j = g_j s_j^-beta - 2 alpha beta a_j * sum_{i in W(j)} g_i a_i s_i^(-beta-1).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, size: int, alpha: float, beta: float, k: float) -> torch.Tensor:
        scale = _window_sum(x * x, size).mul_(alpha).add_(k)
        ctx.save_for_backward(x, scale)
        ctx.hyper = (size, alpha, beta)
        return x * scale.pow(-beta)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, scale = ctx.saved_tensors
        size, alpha, beta = ctx.hyper
        scale_pow = scale.pow(-beta)
        inner = _window_sum(grad * x * scale_pow / scale, size)
        grad_x = grad * scale_pow - (2 * alpha * beta) * x * inner
        return grad_x, None, None, None, None


class LocalResponseNorm(nn.Module):
    """Section 3.3's brightness normalisation, over the channel dim of an NCHW tensor."""

    def __init__(self, size: int = LRN_SIZE, alpha: float = LRN_ALPHA, beta: float = LRN_BETA, k: float = LRN_K):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # A length-1 dim in front of the channels lets _window_sum slice dim 2 for any layout.
        y = _LRNFunction.apply(x.unsqueeze(1), self.size, self.alpha, self.beta, self.k)
        return y.squeeze(1)

    def extra_repr(self) -> str:
        return f"size={self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


class Tower(nn.Module):
    """One GPU's half of Figure 2: 48-128-192-192-128 kernels, 2048+2048 fc units."""

    def __init__(self, dropout: float = 0.5):
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
        self.drop6 = nn.Dropout(dropout)
        self.fc7 = nn.Linear(2 * 2048, 2048)  # sees both towers
        self.drop7 = nn.Dropout(dropout)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """conv1 and conv2: each tower on its own, from the image to 128 maps of 13x13."""
        x = self.pool1(self.norm1(F.relu(self.conv1(x))))
        return self.pool2(self.norm2(F.relu(self.conv2(x))))

    def body(self, both: torch.Tensor) -> torch.Tensor:
        """conv3 over both towers' maps, then conv4 and conv5 on its own."""
        x = F.relu(self.conv3(both))
        x = F.relu(self.conv4(x))
        return torch.flatten(self.pool5(F.relu(self.conv5(x))), 1)

    def fc6_units(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop6(F.relu(self.fc6(both)))

    def fc7_units(self, both: torch.Tensor) -> torch.Tensor:
        return self.drop7(F.relu(self.fc7(both)))


class AlexNet(nn.Module):
    """The paper's network. ``devices=None``: one device; two names: tower 0 on the first, tower 1
    on the second (``("cpu", "cpu")`` runs the split on the CPU). Outputs land on the first."""

    def __init__(
        self,
        num_classes: int = 1000,
        devices: Sequence[str | torch.device] | None = None,
        dropout: float = 0.5,
        weight_std: float = 0.01,
        bias_init: float = 1.0,
    ):
        super().__init__()
        self.towers = nn.ModuleList([Tower(dropout), Tower(dropout)])
        self.fc8 = nn.Linear(2 * 2048, num_classes)
        init_paper(self, weight_std, bias_init)
        if devices is not None:
            self.place(devices)
        self.register_state_dict_post_hook(_merge_towers_hook)
        self.register_load_state_dict_pre_hook(_split_towers_hook)

    def place(self, devices: Sequence[str | torch.device]) -> "AlexNet":
        """Put tower 0 (and fc8) on devices[0] and tower 1 on devices[1]."""
        if len(devices) != 2:
            raise ValueError(f"devices needs two entries (one per tower), got {list(devices)}")
        self.towers[0].to(devices[0])
        self.fc8.to(devices[0])
        self.towers[1].to(devices[1])
        return self

    @property
    def devices(self) -> tuple[torch.device, torch.device]:
        """Where tower 0 and tower 1 live (read from the weights, so .to() keeps it true)."""
        return self.towers[0].conv1.weight.device, self.towers[1].conv1.weight.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0, t1 = self.towers
        d0, d1 = self.devices
        # Tensors cross between the towers only here: into conv3, fc6, fc7 and fc8.
        a0, a1 = t0.stem(x.to(d0)), t1.stem(x.to(d1))
        b0, b1 = t0.body(_join(a0, a1, d0)), t1.body(_join(a0, a1, d1))
        c0, c1 = t0.fc6_units(_join(b0, b1, d0)), t1.fc6_units(_join(b0, b1, d1))
        e0, e1 = t0.fc7_units(_join(c0, c1, d0)), t1.fc7_units(_join(c0, c1, d1))
        return self.fc8(_join(e0, e1, d0))


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


def merge_towers(state: dict, prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """Per-tower tensors (``towers.0.conv2.weight`` ...) -> the grouped layout (``conv2.weight``),
    in network order. Works on any dict keyed like the model's parameters (e.g. momentum)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict((k, v) for k, v in state.items() if not k.startswith(prefix))
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


def build_model(config: ModelConfig, devices: Sequence[str | torch.device] | None = None) -> nn.Module:
    """The network a config names: the paper's, or torchvision's single-tower variant."""
    if config.arch == "paper":
        return AlexNet(config.num_classes, devices, config.dropout, config.weight_std, config.bias_init)
    if config.arch == "torchvision":
        from torchvision.models import alexnet

        if devices is not None and len({str(d) for d in devices}) > 1:
            raise ValueError("arch 'torchvision' has no towers to split; use arch 'paper' for two devices")
        model = alexnet(weights=None, num_classes=config.num_classes, dropout=config.dropout)
        return model.to(devices[0]) if devices is not None else model
    raise ValueError(f"unknown arch {config.arch!r}; choose one of {', '.join(ARCHES)}")
