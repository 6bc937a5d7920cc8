"""The layer table behind `alexnet info`: shapes, parameters and MACs, read off the modules."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from alexnet_cli.config import MODEL_SWITCHES
from alexnet_cli.model import TOWER_WIDTHS, LocalResponseNorm, ModelConfig, build_model

# Layers worth a row; ReLU and dropout change no shape and hold no weights.
_ROW_TYPES = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AdaptiveAvgPool2d, LocalResponseNorm)
_KIND = {"LocalResponseNorm": "LRN", "MaxPool2d": "MaxPool", "AdaptiveAvgPool2d": "AvgPool"}
# Paper-model layers whose input spans both towers (section 3.2, Figure 2).
_CROSS_TOWER = {"conv3", "fc6", "fc7", "fc8"}


@dataclass
class LayerRow:
    name: str
    kind: str
    output_shape: list[int]  # without the batch dim
    params: int
    macs: int  # multiply-accumulates of conv and linear layers, per image
    towers: list[int] = field(default_factory=list)  # two-tower paper model: towers holding the layer
    input_from: str = ""  # two-tower paper model: "own" tower or "both" towers


def _macs(module: nn.Module, out: torch.Tensor) -> int:
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    return 0


def layer_table(config: ModelConfig, image_size: int = 224) -> list[LayerRow]:
    """One row per layer, in network order; the paper model's tower halves merge into one row."""
    # Towers apart, the paper model runs each tower's own modules, whose hooks give the per-tower
    # rows merged below (on one device it runs both towers of a layer as one functional call).
    towers = TOWER_WIDTHS[config.towers][0]
    model = build_model(config, ("cpu",) * towers if config.arch == "paper" else None).eval()
    rows: dict[str, LayerRow] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            parts = name.split(".")
            if parts[0] == "towers":  # towers.<t>.<layer>: merge the halves along channels
                tower, layer = int(parts[1]), parts[2]
            else:
                tower, layer = (0 if config.arch == "paper" else -1), name
            params = sum(p.numel() for p in module.parameters())
            shape = list(output.shape[1:])
            row = rows.get(layer)
            if row is None:
                rows[layer] = LayerRow(
                    layer,
                    _KIND.get(type(module).__name__, type(module).__name__),
                    shape,
                    params,
                    _macs(module, output),
                )
                row = rows[layer]
            else:
                row.output_shape[0] += shape[0]
                row.params += params
                row.macs += _macs(module, output)
            if tower >= 0 and towers == 2:  # a one-tower net has no towers to tell apart
                row.towers.append(tower)
                row.input_from = "both" if layer in _CROSS_TOWER else "own"

        return hook

    handles = [
        m.register_forward_hook(record(n)) for n, m in model.named_modules() if isinstance(m, _ROW_TYPES)
    ]
    with torch.no_grad():
        model(torch.zeros(1, 3, image_size, image_size))
    for h in handles:
        h.remove()
    return list(rows.values())


def summary(config: ModelConfig, image_size: int = 224) -> dict:
    """The JSON object of `alexnet info --json`."""
    layers = layer_table(config, image_size)
    model = build_model(config)
    return {
        "arch": config.arch,
        "num_classes": config.num_classes,
        **({k: getattr(config, k) for k in MODEL_SWITCHES} if config.arch == "paper" else {}),
        "input_shape": [3, image_size, image_size],
        "total_params": sum(p.numel() for p in model.parameters()),
        "total_macs": sum(r.macs for r in layers),
        "layers": [asdict(r) for r in layers],
    }
