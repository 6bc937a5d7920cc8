"""The paper model's CPU training step against torchvision's AlexNet, side by side.

One training step = forward, cross-entropy, backward and an SGD-momentum update (section 5's
momentum 0.9 and weight decay 5e-4) on a float32 batch. The two nets run interleaved in one
process (several steps each per round, the order alternating between rounds) so that both see
the same machine load; the ratio compares best step times, which are the least disturbed by
other work on a shared machine (the CPU-time ratio printed above it is a cross-check that
descheduling by other processes does not move). Also times LRN alone (forward + backward on
conv1's output, both towers' 96 maps) against torch.nn.LocalResponseNorm; --profile adds a
table of where each net's step goes.

    python benchmarks/bench_model.py [--batch-size 64] [--steps 3] [--rounds 5] [--threads N]
                                     [--no-mmap] [--profile]

--no-mmap keeps freed memory in glibc's heap instead of returning every activation-sized block
to the OS (which zero-fills each page again on the next allocation, a large share of a CPU step
here); it applies to both nets, as a training process could set it for itself.

Also times the optimizer step alone on the paper net's 61M parameters: section 5's momentum
form (optim.PaperSGD, biases undecayed: `alexnet train`'s default) against torch's SGD.

The last line is `paper/torchvision images/s = X.XX` (> 1: the paper model is faster).
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from alexnet_cli.model import (  # noqa: E402
    LRN_ALPHA,
    LRN_BETA,
    LRN_K,
    LRN_SIZE,
    ModelConfig,
    build_model,
    local_response_norm,
)


class Timing(NamedTuple):
    wall: float  # seconds
    cpu: float  # CPU-seconds of this process, all threads: less disturbed by other processes


def training_step(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> Callable[[], None]:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        optimizer.step()

    return step


def optimizer_steps(model: torch.nn.Module) -> dict[str, Callable[[], None]]:
    """One optimizer step on fixed random gradients: the paper's form against torch's SGD."""
    from alexnet_cli.config import TrainConfig
    from alexnet_cli.optim import make_optimizer

    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    paper = make_optimizer(TrainConfig(), model)
    torch_sgd = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    return {"PaperSGD, no bias decay": paper.step, "torch.optim.SGD": torch_sgd.step}


def interleaved_times(runs: dict[str, Callable[[], None]], steps: int, rounds: int) -> dict[str, list[Timing]]:
    """(wall, CPU) seconds per call of each run: one warm-up call each, then `rounds` rounds of
    `steps` calls per run, alternating which run goes first."""
    for run in runs.values():
        run()
    times: dict[str, list[Timing]] = {name: [] for name in runs}
    for r in range(rounds):
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
            for _ in range(steps):
                wall, cpu = time.perf_counter(), time.process_time()
                runs[name]()
                times[name].append(Timing(time.perf_counter() - wall, time.process_time() - cpu))
    return times


def lrn_runs(batch_size: int) -> dict[str, Callable[[], None]]:
    """LRN forward + backward on conv1's output (both towers' 48 maps, normalised per tower)."""
    shape = (batch_size, 96, 55, 55)
    a = (torch.randn(shape) * 10).relu_().requires_grad_()
    grad = torch.randn(shape)
    # torch divides alpha by n; multiply it back to get section 3.3's constants.
    torch_lrn = torch.nn.LocalResponseNorm(LRN_SIZE, alpha=LRN_ALPHA * LRN_SIZE, beta=LRN_BETA, k=LRN_K)

    def ours() -> None:
        torch.autograd.grad(local_response_norm(a, groups=2), a, grad)

    def reference() -> None:
        torch.autograd.grad(torch_lrn(a.view(batch_size * 2, 48, 55, 55)).view(shape), a, grad)

    return {"LRN (ours)": ours, "torch.nn.LocalResponseNorm": reference}


def keep_freed_memory() -> None:
    """glibc: serve every allocation from the heap (no mmap) and never trim it back to the OS."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_mmap_max = -1, -4  # from <malloc.h>
    if not (libc.mallopt(m_mmap_max, 0) and libc.mallopt(m_trim_threshold, 2**31 - 1)):
        raise SystemExit("mallopt failed: --no-mmap needs glibc")


def report(times: dict[str, list[Timing]], batch_size: int) -> None:
    for name, ts in times.items():
        walls = [t.wall for t in ts]
        fastest, median = min(walls), statistics.median(walls)
        print(
            f"{name:28s} best {fastest * 1e3:6.0f} ms  median {median * 1e3:6.0f} ms  "
            f"= {batch_size / fastest:5.1f} / {batch_size / median:5.1f} images/s  "
            f"(CPU best {best(ts, 'cpu') * 1e3:6.0f} ms; {len(ts)} timings)"
        )


def best(ts: list[Timing], field: str = "wall") -> float:
    return min(getattr(t, field) for t in ts)


def step_profile(events) -> dict[str, float]:
    """Milliseconds of one profiled training step by part of the network."""
    ms = {}

    def total(*names: str) -> float:
        return sum(e.cpu_time_total for e in events if e.name in names) / 1e3

    forward = [e for e in events if e.name == "aten::mkldnn_convolution"]
    backward = [e for e in events if e.name == "aten::convolution_backward"][::-1]  # conv5 first
    for i, (f, b) in enumerate(zip(forward, backward), start=1):
        ms[f"conv{i} (forward + backward)"] = (f.cpu_time_total + b.cpu_time_total) / 1e3
    ms["LRN (both layers)"] = total("_LRNFunction", "_LRNFunctionBackward")
    ms["max-pool"] = total("aten::max_pool2d_with_indices", "aten::max_pool2d_with_indices_backward")
    ms["ReLU"] = total("aten::relu_", "aten::threshold_backward")
    ms["fc6-fc8"] = total("aten::addmm", "aten::mm")
    ms["SGD step and zero_grad"] = total("Optimizer.step#SGD.step", "Optimizer.zero_grad#SGD.zero_grad")
    step = sum(e.self_cpu_time_total for e in events) / 1e3
    ms["other (input layout, dropout, loss, autograd)"] = step - sum(ms.values())
    ms["step"] = step
    return ms


def profile_table(runs: dict[str, Callable[[], None]], rounds: int) -> None:
    """A Markdown table of where each net's step goes (the fastest of `rounds` profiled steps)."""
    from torch.profiler import ProfilerActivity, profile

    tables = {}
    for name, run in runs.items():
        run()
        for _ in range(rounds):
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                run()
            ms = step_profile(prof.events())
            if name not in tables or ms["step"] < tables[name]["step"]:
                tables[name] = ms
    paper, tv = tables["paper"], tables["torchvision"]
    print("| part | paper (ms) | torchvision (ms) | difference (ms) |\n|---|---:|---:|---:|")
    for part in paper:
        print(f"| {part} | {paper[part]:.0f} | {tv.get(part, 0):.0f} | {paper[part] - tv.get(part, 0):+.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3, help="steps per model per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-lrn", action="store_true", help="skip the LRN-alone timing")
    parser.add_argument("--no-mmap", action="store_true", help="glibc: keep freed memory for reuse (both nets)")
    parser.add_argument("--profile", action="store_true", help="also print where each step's time goes")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's, one per core)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.no_mmap:
        keep_freed_memory()

    torch.manual_seed(0)
    images = torch.randn(args.batch_size, 3, 224, 224)
    labels = torch.randint(0, 1000, (args.batch_size,))
    allocator = "glibc heap only (--no-mmap)" if args.no_mmap else "default allocator"
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads, batch {args.batch_size}, float32, CPU, {allocator}")
    if not args.no_lrn:
        lrn = interleaved_times(lrn_runs(args.batch_size), steps=1, rounds=args.rounds)
        report(lrn, args.batch_size)
        speedup = best(lrn["torch.nn.LocalResponseNorm"]) / best(lrn["LRN (ours)"])
        print(f"LRN forward+backward: ours is {speedup:.1f}x as fast")
    steps = {
        arch: training_step(build_model(ModelConfig(arch=arch)).train(), images, labels)
        for arch in ("paper", "torchvision")
    }
    times = interleaved_times(steps, args.steps, args.rounds)
    print("training step (forward + backward + SGD momentum):")
    report(times, args.batch_size)
    if args.profile:
        profile_table(steps, args.rounds)
    opt = interleaved_times(optimizer_steps(build_model(ModelConfig())), args.steps, args.rounds)
    print("optimizer step alone (61M parameters):")
    report(opt, args.batch_size)
    ratio = best(opt["torch.optim.SGD"]) / best(opt["PaperSGD, no bias decay"])
    print(f"optimizer step: paper form / torch SGD speed = {ratio:.2f} (>= 1: no slower)")
    paper, tv = times["paper"], times["torchvision"]
    print(f"paper/torchvision by best CPU time = {best(tv, 'cpu') / best(paper, 'cpu'):.2f}")
    print(f"paper/torchvision images/s = {best(tv) / best(paper):.2f}")


if __name__ == "__main__":
    main()
