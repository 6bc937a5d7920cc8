"""Where a process computes: `--gpus` / `--devices` -> the devices of the network's towers.

One resolver for every command, so train, eval and predict read the options alike. Under
torchrun each process takes the next 1 (`--gpus 1`) or 2 (`--gpus 2`) GPUs of its node, by
LOCAL_RANK.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from alexnet_cli.errors import InputError


@dataclass(frozen=True)
class Placement:
    device: torch.device  # inputs, labels and fc8 (tower 0's device)
    towers: tuple[torch.device, torch.device] | None  # the paper's split, or None for one device

    @property
    def devices(self) -> list[torch.device]:
        """One device, or tower 0's and tower 1's."""
        return list(self.towers) if self.towers else [self.device]

    def describe(self) -> str:
        return ",".join(str(d) for d in self.devices)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity: a SLURM or taskset share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def placement(
    gpus: int | None = None, devices: tuple[str, ...] | None = None, local_rank: int = 0
) -> Placement:
    """--gpus 0/1/2 (None: 1 if CUDA is available, else 0) or explicit --devices (one name, or
    two: tower 0, tower 1) -> where the towers go."""
    available = cuda_count()
    if devices:
        what = "--devices " + ",".join(devices)
        try:
            named = tuple(torch.device(d.strip()) for d in devices)
        except (RuntimeError, ValueError):
            raise InputError(f"{what}: not device names; e.g. cpu,cpu or cuda:0,cuda:1") from None
        if len(named) not in (1, 2):
            raise InputError(f"{what}: give one device, or two (tower 0, tower 1)")
    else:
        gpus = (1 if available else 0) if gpus is None else gpus
        what = f"--gpus {gpus}"
        if gpus not in (0, 1, 2):
            raise InputError(
                f"{what}: choose 0 (CPU), 1 (one GPU) or 2 (the paper's two-GPU split); for more GPUs "
                "launch one process per GPU (or pair) with torchrun"
            )
        first = gpus * local_rank
        named = (
            (torch.device("cpu"),)
            if gpus == 0
            else tuple(torch.device("cuda", first + i) for i in range(gpus))
        )
    needed = max(((d.index or 0) + 1 for d in named if d.type == "cuda"), default=0)
    if needed > available:
        rank = f" (local rank {local_rank})" if local_rank else ""
        raise InputError(
            f"{what} needs {needed} GPU(s) on this machine{rank} but it has {available}; "
            "use --gpus 0 for the CPU"
        )
    return Placement(named[0], (named[0], named[1]) if len(named) == 2 else None)
