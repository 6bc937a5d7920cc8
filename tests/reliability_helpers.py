"""Fault injection shared by tests/test_reliability*.py and benchmarks/kill_trials.py: kill -9
`alexnet prep` or `alexnet train` at a chosen moment, rerun the same command, and compare the
result with an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import h5py

REPO_ROOT = Path(__file__).resolve().parents[1]
# Names a crash may leave behind: shard being written, atomic_path's temp files, prep's lock.
LEFTOVER_SUFFIXES = (".partial", ".tmp", ".lock")


def cli(*args: object) -> list[str]:
    return [sys.executable, "-m", "alexnet_cli", *map(str, args)]


def cli_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), **extra}


def leftovers(folder: Path) -> list[str]:
    """Half-written or stale files in `folder` (recursively)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.name.endswith(LEFTOVER_SUFFIXES))


def real_image_source(sample_folder: Path, root: Path, images: int = 48, classes: int = 3, start: int = 200) -> Path:
    """A folder of class folders holding links to real ImageNet JPEGs (nothing copied)."""
    for k, f in enumerate(sorted(sample_folder.glob("*.JPEG"))[start : start + images]):
        (root / f"class{k % classes}").mkdir(parents=True, exist_ok=True)
        (root / f"class{k % classes}" / f.name).symlink_to(f)
    return root


@dataclass
class Killed:
    """What a kill -9 hit: when, whether the process was still running, what was on disk."""

    point_s: float
    killed: bool  # False: the command had already finished
    on_disk: list[str] = field(default_factory=list)


def run_and_kill(cmd: list[str], point_s: float, folder: Path, started: Callable[[], bool]) -> Killed:
    """Start `cmd`, wait until `started()` (it began its work), wait `point_s` more, SIGKILL it."""
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(point_s)
        running = proc.poll() is None
        if running:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    on_disk = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return Killed(point_s, running, on_disk)


def timed(cmd: list[str], started: Callable[[], bool]) -> tuple[float, float]:
    """Run `cmd` to the end: (seconds until `started()`, seconds in all). Fails on a non-zero exit."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    t_start = None
    while proc.poll() is None:
        if t_start is None and started():
            t_start = time.monotonic() - t0
        time.sleep(0.005)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err
    total = time.monotonic() - t0
    return (t_start if t_start is not None else 0.0), total


# --------------------------------------------------------------------------------------------
# prep


def dataset_fingerprint(index: Path) -> dict:
    """Everything a prepared dataset holds, as comparable data: `inspect --json --verify` (minus
    its own path), each shard's stored sha256 and plan fingerprint, and the stored statistics."""
    result = subprocess.run(cli("inspect", index, "--json", "--verify"), env=cli_env(), capture_output=True)
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(result.stdout)
    info.pop("path")
    assert info["verify"]["ok"], info["verify"]
    shards = {}
    for path in sorted(index.parent.glob(f"{index.stem}-*.h5")):
        with h5py.File(path, "r") as f:
            shards[path.name] = {k: str(f.attrs[k]) for k in ("sha256", "plan", "images")}
    with h5py.File(index, "r") as f:
        stats = {k: hashlib.sha256(f["stats"][k][()].tobytes()).hexdigest() for k in f["stats"] if isinstance(f["stats"][k], h5py.Dataset)}
    return {"inspect": info, "shards": shards, "stats": stats}


def prep_kill_trial(src: Path, out: Path, args: list[str], point_s: float) -> tuple[Killed, subprocess.CompletedProcess]:
    """kill -9 `alexnet prep SRC OUT ARGS` `point_s` after it took its lock, then rerun it."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(out.name + ".lock")
    killed = run_and_kill(cli("prep", src, out, *args), point_s, out.parent, lock.exists)
    rerun = subprocess.run(cli("prep", src, out, *args), env=cli_env(), capture_output=True)
    return killed, rerun


# --------------------------------------------------------------------------------------------
# train


def train_kill_trial(args: list[str], run_dir: Path, point_s: float) -> tuple[Killed, subprocess.CompletedProcess]:
    """kill -9 `alexnet train ARGS --run-dir RUN_DIR` `point_s` after it made its run folder,
    then rerun it with --resume auto."""
    killed = run_and_kill(cli("train", *args, "--run-dir", run_dir), point_s, run_dir, run_dir.exists)
    rerun = subprocess.run(cli("train", *args, "--run-dir", run_dir, "--resume", "auto", "--json"), env=cli_env(),
                           capture_output=True)
    return killed, rerun


def weights(path: Path) -> dict:
    import torch

    return torch.load(path, weights_only=True, mmap=True)["model"]


def different_weights(a: dict, b: dict) -> list[str]:
    """Names of the tensors that are not bit-identical (empty: the same weights)."""
    import torch

    if a.keys() != b.keys():
        return sorted(set(a) ^ set(b))
    return [k for k in a if not torch.equal(a[k], b[k])]


# --------------------------------------------------------------------------------------------
# torch.distributed ranks started by hand (no torchrun agent, which would itself stop the
# survivors): what a rank does on its own when a peer dies or hangs.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_ranks(cmd: list[str], world_size: int, **env: str) -> list[subprocess.Popen]:
    port = str(free_port())
    procs = []
    for rank in range(world_size):
        rank_env = cli_env(RANK=str(rank), WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank),
                           LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1", MASTER_PORT=port,
                           OMP_NUM_THREADS="1", **env)
        procs.append(subprocess.Popen(cmd, env=rank_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    return procs
