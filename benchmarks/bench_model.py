"""The paper model's CPU training step against torchvision's AlexNet, side by side.

One training step = forward, cross-entropy, backward and an SGD-momentum update (section 5's
momentum 0.9 and weight decay 5e-4) on a float32 batch. The two nets run interleaved in one
process (several steps each per round, the order alternating between rounds) so that both see
the same machine load; the ratio compares best step times, which are the least disturbed by
other work on a shared machine. Also times LRN alone (forward + backward on conv1's output,
both towers' 96 maps) against torch.nn.LocalResponseNorm.

    python benchmarks/bench_model.py [--batch-size 64] [--steps 3] [--rounds 5]

The last line is `paper/torchvision images/s = X.XX` (> 1: the paper model is faster).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_cli.model import LRN_ALPHA, LRN_BETA, LRN_K, LRN_SIZE, ModelConfig, build_model, local_response_norm  # noqa: E402


def training_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def interleaved_times(runs: dict[str, Callable[[], None]], steps: int, rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each run: one warm-up call each, then `rounds` rounds of `steps` calls
    per run, alternating which run goes first."""
    for run in runs.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
            for _ in range(steps):
                start = time.perf_counter()
                runs[name]()
                times[name].append(time.perf_counter() - start)
    return times


def lrn_runs(batch_size: int) -> dict[str, Callable[[], None]]:
    """LRN forward + backward on conv1's output (both towers' 48 maps, normalised per tower)."""
    shape = (batch_size, 96, 55, 55)
    a = (torch.randn(shape) * 10).relu_().requires_grad_()
    grad = torch.randn(shape)
    # torch divides alpha by n; multiply it back to get section 3.3's constants.
    torch_lrn = torch.nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)

    def ours() -> None:
        local_response_norm(a, groups=2).backward(grad)

    def reference() -> None:
        torch_lrn(a.view(batch_size * 2, 48, 55, 55)).view(shape).backward(grad)

    return {"LRN (ours)": ours, "torch.nn.LocalResponseNorm": reference}


def report(times: dict[str, list[float]], batch_size: int) -> None:
    for name, ts in times.items():
        best, median = min(ts), statistics.median(ts)
        print(
            f"{name:28s} best {best * 1e3:7.0f} ms  median {median * 1e3:7.0f} ms  "
            f"({batch_size / best:6.1f} / {batch_size / median:6.1f} images/s at best / median, {len(ts)} steps)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-lrn", action="store_true", help="skip the LRN-alone timing")
    args = parser.parse_args()

    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 224, 224)
    labels = torch.randint(0, 1000, (args.batch_size,))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, float32, CPU")
    if not args.no_lrn:
        report(interleaved_times(lrn_runs(args.batch_size), steps=1, rounds=args.rounds), args.batch_size)
    steps = {
        arch: training_step(build_model(ModelConfig(arch=arch)).train(), images, labels)
        for arch in ("paper", "torchvision")
    }
    times = interleaved_times(steps, args.steps, args.rounds)
    report(times, args.batch_size)
    print(f"paper/torchvision images/s = {min(times['torchvision']) / min(times['paper']):.2f}")


if __name__ == "__main__":
    main()
