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

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 600, input: bytes | None = None):
    """Run `python -m alexnet_cli ARGS` in a subprocess that imports *this* checkout's package."""
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alexnet_cli", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        input=input,
    )
