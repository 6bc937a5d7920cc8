"""Shared fixtures. Real images come from ../shared/data (see its README); tests that need them
skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(os.environ.get("ALEXNET_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real ImageNet test images; skip when it is not beside the checkout."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real test images not found at {SHARED_DATA} (set ALEXNET_SHARED_DATA)")
    return SHARED_DATA
