"""torch.distributed plumbing for runs under torchrun (one process per 1 or 2 GPUs, or CPU/gloo).

Outside torchrun everything here degrades to a single process: rank 0 of world 1.
"""

from __future__ import annotations

import datetime
import math
import os
import re
from dataclasses import dataclass

import torch
import torch.distributed as dist

from alexnet_cli.errors import AlexnetError, InputError

TIMEOUT_ENV = "ALEXNET_DIST_TIMEOUT_MIN"
TIMEOUT_MINUTES = 10.0
# "gloo" for several processes on one GPU (`--devices cuda:0` in each): NCCL refuses two
# ranks on one device. Anything else the caller's choice.
BACKEND_ENV = "ALEXNET_DIST_BACKEND"


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def collective_timeout() -> datetime.timedelta:
    """How long a collective waits for its peers before it raises: a dead or stuck peer must
    not hang the others forever. $ALEXNET_DIST_TIMEOUT_MIN minutes (fractions allowed: 0.25 is
    15 s), default 10: longer than any one step or checkpoint write."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    try:
        minutes = float(value or TIMEOUT_MINUTES)
    except ValueError:
        minutes = math.nan
    if not 0 < minutes < math.inf:
        raise InputError(f"{TIMEOUT_ENV}={value!r} is not a positive number of minutes; set it to e.g. 10")
    return datetime.timedelta(minutes=minutes)


def init(backend: str | None = None, timeout: datetime.timedelta | None = None) -> DistInfo:
    """Join the process group torchrun describes (env://); a no-op outside torchrun.

    backend: "nccl" for CUDA, "gloo" for CPU; default picks by CUDA availability; either way
    $ALEXNET_DIST_BACKEND, where set, decides.
    timeout: for every collective; default `collective_timeout()`.
    """
    if not launched_by_torchrun():
        return DistInfo()
    info = DistInfo(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    )
    if not dist.is_initialized():
        backend = os.environ.get(BACKEND_ENV) or backend or ("nccl" if torch.cuda.is_available() else "gloo")
        dist.init_process_group(backend=backend, timeout=timeout or collective_timeout())
    return info


def peer_failure(e: RuntimeError, rank: int, fix: str) -> AlexnetError:
    """A collective that failed because another process of the run died (its connection
    closed) or stopped responding (the timeout), as one line ending with `fix` (how to go on)."""
    # e.g. "[../gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:36277. This
    # is typically caused by ...": the first sentence, without the source location.
    reason = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip().splitlines()[0]).split(". ")[0][:160]
    return AlexnetError(
        f"rank {rank}: {reason} (another process of the run died, or hung past {TIMEOUT_ENV}="
        f"{collective_timeout().total_seconds() / 60:g} min); {fix}"
    )


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard_range(n: int, rank: int, world_size: int) -> range:
    """This rank's contiguous share of n items: every item exactly once, no padding duplicates
    (shares differ by at most one item)."""
    base, extra = divmod(n, world_size)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all ranks in place (identity in a single process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def any_rank(flag: bool, device: torch.device) -> bool:
    """Whether `flag` is true on at least one rank (every rank gets the same answer)."""
    return all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
