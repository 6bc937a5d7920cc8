"""Section 5's optimisation: stochastic gradient descent with momentum and weight decay, and the
learning-rate schedule.

The paper's update rule is

    v <- 0.9 v - 0.0005 e w - e dL/dw
    w <- w + v

with the learning rate e inside the velocity v, as Caffe's SGDSolver and cuda-convnet2 apply it.
torch's SGD keeps the velocity without the rate (b <- 0.9 b + dL/dw + 0.0005 w; w <- w - e b):
the same steps while e is constant (v = -e b), but at a rate drop torch applies the new rate
to everything the velocity holds at once, while in the paper's form the steps taken at the old
rate fade out at the momentum's pace. `PaperSGD` is torch's SGD (its fast foreach/fused
kernels) with the buffer rescaled by old/new rate whenever the rate changes, which is exactly
the paper's form: v = -e_new b_new = -e_old b_old.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from alexnet_cli.config import TrainConfig


class PaperSGD(torch.optim.SGD):
    """torch.optim.SGD with the learning rate kept inside the velocity (section 5, Caffe)."""

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            before = group.setdefault("velocity_lr", group["lr"])
            if group["lr"] != before:
                for p in group["params"]:
                    buf = self.state[p].get("momentum_buffer")
                    if buf is not None:
                        buf.mul_(before / group["lr"])
                group["velocity_lr"] = group["lr"]
        return super().step(closure)


def parameter_groups(model: nn.Module, weight_decay: float, bias_decay: bool) -> list[dict[str, Any]]:
    """The paper decays the weights w; with `bias_decay` false the biases get none, as in
    cuda-convnet2 (biases built with wc=0) and Caffe's bvlc_alexnet (decay_mult: 0)."""
    if bias_decay:
        return [{"params": list(model.parameters()), "weight_decay": weight_decay}]
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not n.endswith("bias")], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0},
    ]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.bias_decay)
    sgd = PaperSGD if cfg.momentum_form == "paper" else torch.optim.SGD
    return sgd(groups, lr=cfg.lr, momentum=cfg.momentum)


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    """ "divide the learning rate by 10 when the validation error rate stopped improving" (at
    most `lr_drops` times), or pytorch/examples' step schedule."""
    if cfg.schedule == "plateau":
        # min_lr stops the drops after `lr_drops` of them ("reduced three times").
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode="max",
            factor=0.1,
            patience=cfg.patience,
            min_lr=cfg.lr * 0.1**cfg.lr_drops * (1 - 1e-6),
        )
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_epochs, gamma=0.1)
