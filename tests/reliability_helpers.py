"""Fault injection shared by tests/test_reliability*.py and benchmarks/kill_trials.py: kill -9
`alexnet prep` or `alexnet train` at a chosen moment, rerun the same command, and compare the
result with an uninterrupted run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
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
    finished_s: float | None = None  # when not killed: how long after it began its work it finished


def run_and_kill(cmd: list[str], point_s: float, folder: Path, started: Callable[[], bool]) -> Killed:
    """Start `cmd`, wait until `started()` (it began its work), wait `point_s` more, SIGKILL it."""
    proc = subprocess.Popen(cmd, env=cli_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while not started() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        t_started = time.monotonic()
        while proc.poll() is None and time.monotonic() < t_started + point_s:
            time.sleep(0.002)
        running = proc.poll() is None
        finished_s = None if running else time.monotonic() - t_started
        if running:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    on_disk = sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return Killed(point_s, running, on_disk, finished_s)


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


def prep_kill(src: Path, out: Path, args: list[str], point_s: float) -> Killed:
    """kill -9 `alexnet prep SRC OUT ARGS` `point_s` after it took its lock."""
    out.parent.mkdir(parents=True, exist_ok=True)
    lock = out.with_name(out.name + ".lock")
    return run_and_kill(cli("prep", src, out, *args), point_s, out.parent, lock.exists)


# --------------------------------------------------------------------------------------------
# train


def train_kill(args: list[str], run_dir: Path, point_s: float) -> Killed:
    """kill -9 `alexnet train ARGS --run-dir RUN_DIR` `point_s` after it made its run folder."""
    return run_and_kill(cli("train", *args, "--run-dir", run_dir), point_s, run_dir, run_dir.exists)


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


# --------------------------------------------------------------------------------------------
# Trials: a reference run, then kills at random points of it, each compared with the reference


@dataclass
class Trial:
    """One kill -9 and rerun: where it hit, and whether the rerun's result equals the reference."""

    point_s: float  # seconds after the command began its work
    killed: bool  # False: the command had already finished when the kill came
    on_disk: list[str]  # the output folder right after the kill
    rerun_code: int
    different: list[str]  # what differs from the reference (empty: identical)
    attempts: int = 1  # runs it took to hit one mid-work (see `kill_at_fraction`)

    @property
    def ok(self) -> bool:
        return self.killed and self.rerun_code == 0 and not self.different

    def line(self, k: int) -> str:
        verdict = "identical" if not self.different else f"DIFFERENT: {', '.join(self.different)[:200]}"
        hit = "killed" if self.killed else "missed (had finished)"
        tries = f" (attempt {self.attempts})" if self.attempts > 1 else ""
        return (f"trial {k}: kill -9 at {self.point_s:.2f}s{tries}: {hit}, {len(self.on_disk)} files on disk; "
                f"rerun exit {self.rerun_code}; {verdict}")


def kill_fractions(rng, n: int, low: float = 0.05, high: float = 0.8) -> list[float]:
    """n moments of a run, as fractions of its working time, drawn from `rng` (kept inside the
    run so that each kill hits it mid-work)."""
    return sorted(rng.uniform(low, high) for _ in range(n))


def kill_at_fraction(kill: Callable[[float], Killed], fraction: float, work_s: float, clear: Callable[[], None],
                     attempts: int = 3) -> tuple[Killed, int]:
    """kill(fraction * work_s); on a shared machine a run can be faster than the reference that
    measured `work_s`, so a kill that came after the end is retried (after `clear()`) at the same
    fraction of that faster run's time. Returns the last Killed and the attempts it took."""
    killed, attempt = kill(fraction * work_s), 1
    while not killed.killed and attempt < attempts:
        clear()
        killed, attempt = kill(fraction * killed.finished_s), attempt + 1
    return killed, attempt


def prep_kill_trials(src: Path, root: Path, args: list[str], n: int, rng) -> tuple[float, list[Trial]]:
    """An uninterrupted `alexnet prep SRC root/reference/d.h5 ARGS`, then `n` kill -9s at random
    points of it, each rerun to the end and compared with the reference (dataset_fingerprint).
    Returns the reference's working seconds and the trials."""
    reference = root / "reference" / "d.h5"
    reference.parent.mkdir(parents=True)
    t_start, total = timed(cli("prep", src, reference, *args), reference.with_name("d.h5.lock").exists)
    expected = dataset_fingerprint(reference)
    trials = []
    for k, fraction in enumerate(kill_fractions(rng, n)):
        out = root / f"trial{k}" / "d.h5"
        killed, attempts = kill_at_fraction(lambda point: prep_kill(src, out, args, point), fraction, total - t_start,
                                            lambda: shutil.rmtree(out.parent))
        rerun = subprocess.run(cli("prep", src, out, *args), env=cli_env(), capture_output=True)
        different = [rerun.stderr.decode().strip()[-300:]] if rerun.returncode else []
        if rerun.returncode == 0:
            got = dataset_fingerprint(out)
            different = [key for key in expected if got[key] != expected[key]] + leftovers(out.parent)
        trials.append(Trial(killed.point_s, killed.killed, killed.on_disk, rerun.returncode, different, attempts))
    return total - t_start, trials


def train_kill_trials(args: list[str], root: Path, n: int, rng) -> tuple[float, list[Trial]]:
    """An uninterrupted `alexnet train ARGS --run-dir root/reference`, then `n` kill -9s at random
    points of it, each resumed with --resume auto and compared with the reference: bit-identical
    weights in last.pt and best.pt, and the same losses and accuracies in metrics.csv. A trial's
    run folder is deleted once compared (checkpoints of the paper net are hundreds of MB)."""
    reference = root / "reference"
    t_start, total = timed(cli("train", *args, "--run-dir", reference), reference.exists)
    trials = []
    for k, fraction in enumerate(kill_fractions(rng, n)):
        run_dir = root / f"trial{k}"
        killed, attempts = kill_at_fraction(lambda point: train_kill(args, run_dir, point), fraction, total - t_start,
                                            lambda: shutil.rmtree(run_dir))
        rerun = subprocess.run(cli("train", *args, "--run-dir", run_dir, "--resume", "auto", "--json"), env=cli_env(),
                               capture_output=True)
        different = [rerun.stderr.decode().strip()[-300:]] if rerun.returncode else []
        if rerun.returncode == 0:
            for name in ("last.pt", "best.pt"):
                different += [f"{name}:{key}" for key in different_weights(weights(run_dir / name), weights(reference / name))]
            if learning_curve(run_dir) != learning_curve(reference):
                different.append("metrics.csv")
            different += leftovers(run_dir)
        trials.append(Trial(killed.point_s, killed.killed, killed.on_disk, rerun.returncode, different, attempts))
        shutil.rmtree(run_dir)
    return total - t_start, trials


def learning_curve(run_dir: Path) -> list[dict]:
    """metrics.csv without its timings (which differ from run to run)."""
    with open(run_dir / "metrics.csv", newline="") as f:
        return [{k: v for k, v in row.items() if k not in ("images_per_s", "elapsed_s")} for row in csv.DictReader(f)]


# --------------------------------------------------------------------------------------------
# A rank of a 2-process run dies (SIGKILL) or hangs (SIGSTOP)


@dataclass
class RankFault:
    victim: int
    how: str  # "kill" (SIGKILL) or "stop" (SIGSTOP: alive but never answers)
    survivor_code: int | None  # None: still running `bound_s` after the fault (a hang)
    exit_s: float  # from the fault to the survivor's exit
    survivor_err: list[str]  # its stderr, progress lines left out
    checkpoint_step: int | None  # the step of last.pt when the run was resumed
    resume_codes: list[int]
    resumed: list[str]  # the resumed run's "resuming ..." line(s)
    summary: dict | None  # the resumed run's --json summary (rank 0)

    def line(self) -> str:
        err = self.survivor_err[-1] if self.survivor_err else ""
        return (f"{self.how} rank {self.victim}: survivor exit {self.survivor_code} after {self.exit_s:.1f}s ({err[:160]}); "
                f"resumed from step {self.checkpoint_step}: exit {self.resume_codes}, "
                f"{self.summary and self.summary['steps']} steps, stopped {self.summary and self.summary['stopped']}")


def rank_fault_trial(args: list[str], run_dir: Path, victim: int, how: str = "kill", delay_s: float = 0.0,
                     timeout_min: str = "0.5", bound_s: float = 120) -> RankFault:
    """Two gloo ranks of `alexnet train ARGS --run-dir RUN_DIR` started by hand; once last.pt
    exists (and `delay_s` later) rank `victim` gets SIGKILL or SIGSTOP; the survivor must exit
    by itself. Then both ranks rerun with --resume auto."""
    import torch

    timeout_env = {"ALEXNET_DIST_TIMEOUT_MIN": timeout_min}
    procs = start_ranks(cli("train", *args, "--run-dir", run_dir), 2, **timeout_env)
    survivor = procs[1 - victim]
    try:
        deadline = time.monotonic() + 600
        while not (run_dir / "last.pt").exists() and all(p.poll() is None for p in procs):
            assert time.monotonic() < deadline, "no checkpoint within 600 s"
            time.sleep(0.01)
        time.sleep(delay_s)
        procs[victim].send_signal(signal.SIGKILL if how == "kill" else signal.SIGSTOP)
        t_fault = time.monotonic()
        try:
            _, err = survivor.communicate(timeout=bound_s)
            code = survivor.returncode
        except subprocess.TimeoutExpired:
            err, code = "", None
        exit_s = time.monotonic() - t_fault
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()  # SIGKILL ends a stopped process too
            p.communicate()
    checkpoint_step = torch.load(run_dir / "last.pt", weights_only=True, mmap=True)["step"]
    procs = start_ranks(cli("train", *args, "--run-dir", run_dir, "--resume", "auto", "--json"), 2, **timeout_env)
    outputs = [p.communicate(timeout=600) for p in procs]
    summaries = [json.loads(line) for line in outputs[0][0].splitlines() if line.startswith("{")]
    return RankFault(
        victim, how, code, exit_s,
        [line for line in err.strip().splitlines() if not line.startswith("epoch ")],
        checkpoint_step,
        [p.returncode for p in procs],
        [line for line in outputs[0][1].splitlines() if line.startswith("resuming")],
        summaries[0] if summaries else None,
    )


class CodePayload:
    """Unpickling this runs `touch marker`: what a malicious checkpoint would carry. Loaders must
    refuse it, and the marker must never appear."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
