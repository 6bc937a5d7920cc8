"""The paper's Figure 1 (section 3.1): "A four-layer convolutional neural network with ReLUs (solid
line) reaches a 25% training error rate on CIFAR-10 six times faster than an equivalent network
with tanh neurons (dashed line). The learning rates for each network were chosen independently
to make training as fast as possible. No regularization of any kind was employed."

CIFAR-10 is not available offline, so the images are ../shared/data/tiny-imagenet-10's (10
ImageNet classes, 500 training images each) downsampled from 64x64 to CIFAR's 32x32. The paper
does not give its four-layer net; this one follows cuda-convnet's CIFAR-10 example
(layers-80sec.cfg): three 5x5 conv layers of 32, 32 and 64 kernels, each followed by a 3x3
stride-2 pooling (max, then average, average), and a 10-way fully-connected layer; no LRN, no
dropout, no weight decay, no augmentation. Each activation trains with plain SGD (batch 128,
momentum 0.9) at each rate of a small grid, until the training error (over the epoch's batches,
as they are trained on) falls below the threshold or the epoch cap is reached; the fastest rate
of each activation is its result, as in the paper.

This is a benchmark apparatus, not part of the CLI: the CLI's networks are the paper's AlexNet
(`alexnet train --activation tanh` swaps AlexNet's units; too slow on a CPU for this curve).

    python benchmarks/figure1.py [--lrs 0.03,0.01,0.1,0.003] [--seeds 0,1] [--threshold 25] [--max-epochs 150]

Each run keeps its state in its own folder (resumes after an interruption) and its curve in
result.json; the last lines print epochs to the threshold per rate and the tanh/ReLU ratio.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT.parent / "shared" / "data" / "tiny-imagenet-10"
SIZE = 32  # CIFAR-10's images


def load_images(src: Path = TINY, cache: Path = Path("/tmp/claims")) -> tuple[np.ndarray, np.ndarray]:
    """tiny-imagenet-10's training images at 32x32 (antialiased), uint8 [N, 32, 32, 3], and labels
    (sorted-wnid order); cached as .npz."""
    cached = cache / f"tiny-imagenet-10-train-{SIZE}.npz"
    if cached.exists():
        with np.load(cached) as f:
            return f["x"], f["y"]
    from PIL import Image

    wnids = sorted(p.name for p in (src / "train").iterdir() if p.is_dir())
    xs, ys = [], []
    for label, wnid in enumerate(wnids):
        for f in sorted((src / "train" / wnid).rglob("*.JPEG")):
            with Image.open(f) as im:
                xs.append(
                    np.asarray(
                        im.convert("RGB").resize((SIZE, SIZE), Image.Resampling.BILINEAR, reducing_gap=None)
                    )
                )
            ys.append(label)
    x, y = np.stack(xs), np.array(ys, np.int64)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez(cached, x=x, y=y)
    return x, y


class FourLayerNet(nn.Module):
    """conv 5x5x32 - maxpool 3/2 - conv 5x5x32 - avgpool 3/2 - conv 5x5x64 - avgpool 3/2 - fc 10,
    every conv followed by `activation` (cuda-convnet's layers-80sec.cfg without its LRN)."""

    def __init__(self, activation: str):
        super().__init__()
        self.act = torch.relu if activation == "relu" else torch.tanh
        self.conv1 = nn.Conv2d(3, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 32, 5, padding=2)
        self.conv3 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc = nn.Linear(64 * 3 * 3, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.act(self.conv1(x)), 3, 2)  # 32 -> 15
        x = F.avg_pool2d(self.act(self.conv2(x)), 3, 2)  # 15 -> 7
        x = F.avg_pool2d(self.act(self.conv3(x)), 3, 2)  # 7 -> 3
        return self.fc(x.flatten(1))


def network_input(x: np.ndarray) -> torch.Tensor:
    """uint8 NHWC -> float NCHW in [0, 1] minus the per-pixel mean of the training set (section 2's
    preprocessing at this scale)."""
    t = torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255
    # channels_last: oneDNN runs these small convolutions 1.3x faster in NHWC on the CPU
    return (t - t.mean(0, keepdim=True)).contiguous(memory_format=torch.channels_last)


def train_to_error(
    x: torch.Tensor,
    y: torch.Tensor,
    activation: str,
    lr: float,
    seed: int,
    run_dir: Path,
    threshold: float = 25.0,
    max_epochs: int = 150,
    batch_size: int = 128,
) -> dict:
    """Train until the epoch's training error (%) is below `threshold` or `max_epochs` pass; returns
    {"errors": per-epoch training error, "losses", "epochs_to_threshold" (None if not reached), ...}.
    The state after every epoch is run_dir/state.pt, so a rerun continues where this one stopped;
    the finished result is run_dir/result.json (a rerun just reads it)."""
    done = run_dir / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = FourLayerNet(activation).to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    errors, losses, seconds = [], [], 0.0
    state = run_dir / "state.pt"
    if state.exists():
        s = torch.load(state, weights_only=True)
        model.load_state_dict(s["model"])
        opt.load_state_dict(s["optimizer"])
        errors, losses, seconds = s["errors"], s["losses"], s["seconds"]
    while len(errors) < max_epochs and not (errors and errors[-1] < threshold):
        epoch, start = len(errors), time.perf_counter()
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        wrong, loss_sum = 0, 0.0
        for k in range(0, len(x), batch_size):
            idx = order[k : k + batch_size]
            logits = model(x[idx])
            loss = F.cross_entropy(logits, y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            wrong += int((logits.argmax(1) != y[idx]).sum())
            loss_sum += loss.item() * len(idx)
        if not math.isfinite(loss_sum):  # this rate diverges: no point going on
            errors.append(100.0)
            losses.append(float("nan"))
            break
        errors.append(100.0 * wrong / len(x))
        losses.append(loss_sum / len(x))
        seconds += time.perf_counter() - start
        torch.save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "errors": errors,
                "losses": losses,
                "seconds": seconds,
            },
            state,
        )
    reached = next((i + 1 for i, e in enumerate(errors) if e < threshold), None)
    result = {
        "activation": activation,
        "lr": lr,
        "seed": seed,
        "threshold": threshold,
        "max_epochs": max_epochs,
        "errors": errors,
        "losses": losses,
        "epochs_to_threshold": reached,
        "seconds": seconds,
        "images": len(x),
        "batch_size": batch_size,
    }
    done.write_text(json.dumps(result))
    state.unlink(missing_ok=True)
    return result


def fastest(results: list[dict]) -> dict | None:
    """The run that reached the threshold in the fewest epochs (the paper's choice of rate)."""
    reached = [r for r in results if r["epochs_to_threshold"] is not None]
    return min(reached, key=lambda r: r["epochs_to_threshold"]) if reached else None


def measure(
    out: Path, lrs: list[float], seeds: list[int], threshold: float = 25.0, max_epochs: int = 150
) -> dict:
    """Figure 1's comparison: per activation, the fastest of `lrs` with seeds[0] (the rates in the
    order given; a rate is stopped once it can no longer beat the fastest so far, so only the
    winner's curve is complete), then that rate again with every other seed. Returns
    {"runs": every result, "ratios": {seed: tanh epochs / ReLU epochs (None: one never got
    there)}, "best": {activation: [its fastest run's result per seed]}}."""
    x, y = load_images()
    x, y = network_input(x), torch.from_numpy(y)
    runs, best = [], {}
    for act in ("relu", "tanh"):
        tried: list[dict] = []
        for lr in lrs:
            leader = fastest(tried)
            cap = leader["epochs_to_threshold"] - 1 if leader else max_epochs
            if cap < 1:
                break
            tried.append(
                train_to_error(x, y, act, lr, seeds[0], out / f"{act}-lr{lr:g}-s{seeds[0]}", threshold, cap)
            )
        runs += tried
        winner = fastest(tried)
        lr = (winner or min(tried, key=lambda r: r["errors"][-1]))["lr"]
        best[act] = [winner or next(r for r in tried if r["lr"] == lr)]
        for seed in seeds[1:]:
            r = train_to_error(x, y, act, lr, seed, out / f"{act}-lr{lr:g}-s{seed}", threshold, max_epochs)
            runs.append(r)
            best[act].append(r)
    ratios = {}
    for relu, tanh in zip(best["relu"], best["tanh"], strict=True):
        e_relu, e_tanh = relu["epochs_to_threshold"], tanh["epochs_to_threshold"]
        ratios[relu["seed"]] = e_tanh / e_relu if e_relu and e_tanh else None
    return {"runs": runs, "ratios": ratios, "best": best, "threshold": threshold, "max_epochs": max_epochs}


def draw(m: dict, path: Path) -> None:
    """Training error per epoch (`measure`'s runs): every rate thin, each activation's chosen rate
    thick (ReLU solid, tanh dashed, as in the paper's Figure 1)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    chosen = [r for runs in m["best"].values() for r in runs]
    for r in m["runs"]:
        thick = r in chosen
        ax.plot(
            range(1, len(r["errors"]) + 1),
            r["errors"],
            "-" if r["activation"] == "relu" else "--",
            color="C0" if r["activation"] == "relu" else "C3",
            lw=2 if thick else 0.8,
            alpha=1 if thick else 0.45,
            label=f"{r['activation']}, lr {r['lr']:g}, seed {r['seed']}",
        )
    ax.axhline(m["threshold"], color="gray", lw=0.8, ls=":")
    ax.set(
        xlabel="epochs",
        ylabel="training error rate (%)",
        ylim=(0, 100),
        title="Figure 1, small scale: four-layer CNN on tiny-imagenet-10 at 32x32",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize="x-small", ncol=2)
    fig.savefig(path, format="png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/claims/figure1"))
    p.add_argument("--lrs", default="0.03,0.01,0.1,0.003", help="tried in this order, per activation")
    p.add_argument("--seeds", default="0,1", help="the first picks the rates; the others repeat them")
    p.add_argument("--threshold", type=float, default=25.0)
    p.add_argument("--max-epochs", type=int, default=150)
    a = p.parse_args()
    m = measure(
        a.out,
        [float(v) for v in a.lrs.split(",")],
        [int(v) for v in a.seeds.split(",")],
        a.threshold,
        a.max_epochs,
    )
    for r in m["runs"]:
        print(
            f"{r['activation']} lr {r['lr']:g} seed {r['seed']}: epochs to {a.threshold:g}% training error "
            f"{r['epochs_to_threshold']} (last {r['errors'][-1]:.1f}% after {len(r['errors'])} epochs, "
            f"{r['seconds']:.0f} s)"
        )
    for seed, ratio in m["ratios"].items():
        print(
            f"seed {seed}: tanh needs {ratio:.1f}x the epochs of ReLU"
            if ratio
            else f"seed {seed}: not measured"
        )
    draw(m, a.out / "figure1.png")


if __name__ == "__main__":
    main()
