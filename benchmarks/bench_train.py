"""Training throughput: the paper's two-tower network vs torchvision.models.alexnet, images/s.

Both go through the same `alexnet train --synthetic` loop (one batch of random patches made
once on the device, device-side augmentation, SGD step), same batch size and device; only
--arch differs. Each measurement is the second epoch of a 2-epoch run (the first warms up),
and the rounds alternate the two models so that a noisy machine slows both alike.

    python benchmarks/bench_train.py [--batch-size 32] [--steps 3] [--rounds 2] [--gpus 0] [--amp] [--channels-last]

The last line prints the ratio paper / torchvision.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alexnet_cli.progress import TrainProgress  # noqa: E402
from alexnet_cli.config import TrainConfig  # noqa: E402
from alexnet_cli.train import train  # noqa: E402


def images_per_s(arch: str, a: argparse.Namespace) -> float:
    with tempfile.TemporaryDirectory(prefix="bench-train-") as run:
        summary = train(
            TrainConfig(
                synthetic=True, arch=arch, run_dir=run, epochs=2, batch_size=a.batch_size, limit=a.batch_size * a.steps,
                num_classes=1000, gpus=a.gpus, devices=tuple(a.devices.split(",")) if a.devices else None,
                amp=a.amp, channels_last=a.channels_last, compile=a.compile,
            ),
            TrainProgress(enabled=False),
        )
    return summary["last_epoch"]["images_per_s"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="steps per measured epoch")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--gpus", type=int, default=None)
    p.add_argument("--devices", default=None, help="e.g. cuda:0,cuda:0 (the paper model only)")
    p.add_argument("--amp", action="store_true")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--compile", action="store_true")
    a = p.parse_args()
    rates: dict[str, list[float]] = {"paper": [], "torchvision": []}
    for r in range(a.rounds):
        for arch in rates:
            if arch == "torchvision" and a.devices and len(a.devices.split(",")) == 2:
                saved, a.devices = a.devices, a.devices.split(",")[0]
                rates[arch].append(images_per_s(arch, a))
                a.devices = saved
            else:
                rates[arch].append(images_per_s(arch, a))
        print(f"round {r + 1}: paper {rates['paper'][-1]:.1f} img/s, torchvision {rates['torchvision'][-1]:.1f} img/s", flush=True)
    paper, tv = statistics.median(rates["paper"]), statistics.median(rates["torchvision"])
    flags = " ".join(f for f, on in (("--amp", a.amp), ("--channels-last", a.channels_last), ("--compile", a.compile)) if on)
    print(f"batch {a.batch_size}{' ' + flags if flags else ''}: median training images/s: paper {paper:.1f}, torchvision {tv:.1f}")
    print(f"ratio paper/torchvision: {paper / tv:.2f}x")


if __name__ == "__main__":
    main()
