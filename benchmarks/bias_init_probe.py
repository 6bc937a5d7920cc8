"""Why (or whether) the paper's bias 1 blows up: per-layer activations and gradients over the
first steps of `alexnet train`'s own training step, for one recipe.

Builds the run exactly as `alexnet train` does (train.set_up, then train.train_step on the
loader's batches), with the two towers placed apart on the CPU (`--devices cpu,cpu`, the same
arithmetic as one device) so that every layer's module is called and can be observed. Prints a
markdown table per observed step: for each layer of tower 0, the mean and the largest
pre-activation (before ReLU; fc8: the logits), the share of units above zero, the gradient norm
of its weights and the size of the step taken (|dw| / |w|); and the loss of every step.

    python benchmarks/bias_init_probe.py --data DS.h5 [--steps 20] [--batch-size 128] [--lr 0.01]
        [--bias-init 1] [--dropout-form paper] [--momentum-form paper] [--no-bias-decay] [--show 1,2,3,5,10,20]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from contextlib import closing
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_cli import distributed  # noqa: E402
from alexnet_cli.checkpoint import EpochTotals  # noqa: E402
from alexnet_cli.config import TrainConfig  # noqa: E402
from alexnet_cli.devices import placement  # noqa: E402
from alexnet_cli.preemption import stop_signals  # noqa: E402
from alexnet_cli.progress import TrainProgress  # noqa: E402
from alexnet_cli.train import RunningTotals, set_up, train_step  # noqa: E402

LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7")


def observe(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Forward hooks keeping tower 0's pre-activations and the logits of the latest forward."""
    seen: dict[str, torch.Tensor] = {}
    tower = model.towers[0]
    for name in LAYERS:
        getattr(tower, name).register_forward_hook(lambda m, i, out, name=name: seen.__setitem__(name, out.detach()))
    model.fc8.register_forward_hook(lambda m, i, out: seen.__setitem__("fc8", out.detach()))
    return seen


def weights_of(model: torch.nn.Module, name: str) -> torch.Tensor:
    return (model.towers[0] if name != "fc8" else model).get_submodule(name).weight


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--bias-init", type=float, default=1.0)
    p.add_argument("--dropout-form", default="paper")
    p.add_argument("--momentum-form", default="paper")
    p.add_argument("--bias-decay", action="store_true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--show", default="1,2,3,5,10,20", help="steps whose per-layer table is printed")
    a = p.parse_args()
    show = {int(s) for s in a.show.split(",")}
    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as run_dir, stop_signals() as stop:
        cfg = TrainConfig(data=a.data, run_dir=run_dir, batch_size=a.batch_size, lr=a.lr, bias_init=a.bias_init,
                          dropout_form=a.dropout_form, momentum_form=a.momentum_form, bias_decay=a.bias_decay,
                          devices=("cpu", "cpu"), workers=a.workers, seed=a.seed, epochs=1000)
        run = set_up(cfg, placement(devices=cfg.devices), distributed.DistInfo(), stop, TrainProgress(False))
        seen = observe(run.model)
        print(f"recipe: bias {a.bias_init}, lr {a.lr}, batch {a.batch_size}, dropout {a.dropout_form}, "
              f"momentum {a.momentum_form}, bias decay {a.bias_decay}, {len(run.data.classes)} classes, seed {a.seed}")
        losses, step, epoch = [], 0, 0
        run.net.train()
        while step < a.steps:
            run.totals = RunningTotals(EpochTotals(), run.device)
            with closing(run.data.train_batches(epoch, 0)) as batches:
                for batch in batches:
                    before = {n: weights_of(run.model, n).detach().clone() for n in (*LAYERS, "fc8")}
                    report = train_step(run, batch, epoch)
                    run.state.step += 1
                    run.state.epoch_step += 1
                    step += 1
                    losses.append(report.loss)
                    if step in show:
                        print(f"\nstep {step}: loss {report.loss:.3f}\n")
                        print("| layer | mean pre-act | max pre-act | share > 0 | grad norm | step / weight |")
                        print("|---|---:|---:|---:|---:|---:|")
                        for n in (*LAYERS, "fc8"):
                            w, out = weights_of(run.model, n), seen[n]
                            moved = float((w.detach() - before[n]).norm() / before[n].norm())
                            grad = float(w.grad.norm()) if w.grad is not None else math.nan
                            print(f"| {n} | {float(out.mean()):.3g} | {float(out.max()):.3g} | "
                                  f"{float((out > 0).float().mean()):.2f} | {grad:.3g} | {moved:.2e} |")
                    if step >= a.steps:
                        break
            epoch, run.state.epoch_step = epoch + 1, 0
        print("\nloss per step: " + ", ".join(f"{v:.2f}" for v in losses))


if __name__ == "__main__":
    main()
