"""Exact sharding across ranks: every item once, no padding."""

from __future__ import annotations

import pytest

from alexnet_cli.distributed import BACKEND_ENV, DistInfo, init, shard_range


@pytest.mark.parametrize("n,world", [(0, 2), (1, 2), (10, 3), (7, 7), (5, 8), (1000, 4)])
def test_shard_range_covers_every_item_exactly_once(n, world):
    items = [i for r in range(world) for i in shard_range(n, r, world)]
    assert items == list(range(n))
    sizes = [len(shard_range(n, r, world)) for r in range(world)]
    assert max(sizes) - min(sizes) <= 1


def test_single_process_defaults(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert init() == DistInfo(0, 1, 0)
    assert init().is_main and not init().enabled


def test_the_backend_env_overrides_the_default(monkeypatch):
    """ALEXNET_DIST_BACKEND=gloo lets two torchrun processes share one GPU (NCCL refuses)."""
    import torch.distributed as dist

    chosen = []
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend, timeout: chosen.append(backend))
    init("nccl")
    monkeypatch.setenv(BACKEND_ENV, "gloo")
    init("nccl")
    assert chosen == ["nccl", "gloo"]
