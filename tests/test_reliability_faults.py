"""Faults (docs/reliability.md): kill -9 `prep` and `train` at random points, then rerun them:
the same output as an uninterrupted run, bit for bit; a rank of a 2-process run that dies makes
the other exit by itself with one line, and the run resumes. CI runs 2 kill points each;
benchmarks/kill_trials.py runs the full counts.

The kill points are drawn from a seed that is printed (run with -s to see it) and named in every
failure; ALEXNET_KILL_SEED=N replays a seed's points (their timing still varies a little)."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from alexnet_cli.distributed import collective_timeout
from alexnet_cli.errors import EXIT_FAILED, EXIT_PREEMPTED, InputError
from tests.conftest import make_dataset
from tests.reliability_helpers import (
    Trial,
    cli,
    cli_env,
    prep_kill_trials,
    rank_fault_trial,
    real_image_source,
    start_ranks,
    train_kill_trials,
)

CI_TRIALS = 2


@pytest.fixture
def seed() -> int:
    value = int(os.environ.get("ALEXNET_KILL_SEED") or random.SystemRandom().randrange(2**31))
    print(f"kill points drawn with ALEXNET_KILL_SEED={value}")
    return value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """8 train images (2 classes), batch 4: 2 steps an epoch."""
    return make_dataset(tmp_path_factory.mktemp("faults-data"), classes=2, train_per_class=4, val_per_class=2)


def assert_all_ok(seed: int, work_s: float, trials: list[Trial]) -> None:
    report = "\n".join([f"ALEXNET_KILL_SEED={seed}: reference worked {work_s:.2f}s"] + [t.line(k) for k, t in enumerate(trials)])
    print(report)
    assert all(t.ok for t in trials), report


def test_prep_killed_at_random_points_reruns_to_the_uninterrupted_output(shared_data, tmp_path, seed):
    """96 real JPEGs in 24 shards; each rerun must give the same `inspect --json --verify`,
    per-shard sha256 and statistics as the uninterrupted run, and leave no partial or lock file."""
    src = real_image_source(shared_data / "imagenet-sample", tmp_path / "src", images=96, classes=3)
    work_s, trials = prep_kill_trials(src, tmp_path, ["--shard-size", "4", "--workers", "1"], CI_TRIALS, random.Random(seed))
    assert_all_ok(seed, work_s, trials)


def test_train_killed_at_random_points_resumes_to_bit_identical_weights(tiny, tmp_path, seed):
    """One epoch of 2 steps with a checkpoint after each (so kills land before, between and
    during checkpoint writes, mid-epoch and at the epoch's end); dropout on, CPU, seed 0.
    benchmarks/kill_trials.py runs 2 epochs, across the epoch boundary (checkpoints of the
    paper net take seconds to write here, which sets the test's length)."""
    args = ["--data", tiny, "--epochs", "1", "--batch-size", "4", "--workers", "0", "--gpus", "0",
            "--checkpoint-every", "1"]
    work_s, trials = train_kill_trials(args, tmp_path, CI_TRIALS, random.Random(seed))
    assert_all_ok(seed, work_s, trials)


def test_a_dead_rank_makes_the_survivor_exit_with_one_line_and_the_run_resumes(tiny, tmp_path):
    """Rank 0 (the store host and checkpoint writer) is killed after its first checkpoint; rank 1
    must exit on its own with exit 1 and one line (long before the 30 s collective timeout set
    here), and both ranks rerun with --resume auto complete the run from that checkpoint."""
    args = ["--data", tiny, "--epochs", "1", "--batch-size", "4", "--workers", "0", "--gpus", "0",
            "--checkpoint-every", "1", "--log-every", "1"]
    fault = rank_fault_trial(args, tmp_path / "run", victim=0, how="kill", timeout_min="0.5")
    print(fault.line())
    assert fault.survivor_code == EXIT_FAILED and fault.exit_s < 30, fault
    (line,) = fault.survivor_err
    assert line.startswith("error: rank 1: ") and "another process of the run died" in line, line
    assert f"--resume auto to continue from {tmp_path / 'run' / 'last.pt'}" in line, line
    assert fault.checkpoint_step == 1
    assert fault.resume_codes == [0, 0], fault
    assert fault.resumed == [f"resuming {tmp_path / 'run' / 'last.pt'}: epoch 1, step 1 of it"]
    assert fault.summary["steps"] == 2 and fault.summary["stopped"] == "completed" and fault.summary["world_size"] == 2


def test_a_signal_to_both_ranks_stops_them_at_one_step_with_one_line_from_rank_0(tiny, tmp_path):
    """What SLURM does to a 2-process run (preemption, scancel, the time-limit trap): SIGTERM to
    every process. Both ranks finish the same step and exit 75; rank 0, which wrote last.pt,
    says so in one line; rank 1 prints nothing; no traceback."""
    args = ["--data", tiny, "--run-dir", tmp_path / "run", "--epochs", "2", "--batch-size", "4",
            "--workers", "1", "--gpus", "0", "--log-every", "1", "--checkpoint-minutes", "60"]
    procs = start_ranks(cli("train", *args), 2)
    try:
        for line in procs[0].stderr:
            if "step 1/2" in line:
                break
        for p in procs:
            p.send_signal(signal.SIGTERM)
        outputs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert [p.returncode for p in procs] == [EXIT_PREEMPTED, EXIT_PREEMPTED], outputs
    said = [[line for line in err.splitlines() if not line.startswith("epoch ")] for _, err in outputs]
    step = torch.load(tmp_path / "run" / "last.pt", weights_only=True, mmap=True)["step"]
    expected = (f"stopped by a signal after step {step} (epoch {(step - 1) // 2 + 1}); wrote "
                f"{tmp_path / 'run' / 'last.pt'}; rerun the same command with --resume auto to continue")
    assert said[0] == [expected], said
    assert said[1] == [], said


HANGING_PEER = """
import os, time, torch
from alexnet_cli import distributed
info = distributed.init("gloo")
distributed.all_reduce_sum(torch.ones(1))  # both ranks joined
if info.rank == 1:
    time.sleep(120)  # alive, but never joins the next collective
t0 = time.monotonic()
try:
    distributed.all_reduce_sum(torch.ones(1))
except RuntimeError as e:
    print(round(time.monotonic() - t0, 1), str(e).splitlines()[0], flush=True)
    os._exit(3)  # not sys.exit: gloo's threads, still waiting on the hung peer, may abort the interpreter's exit
"""


def test_a_hung_peer_fails_the_collective_after_the_timeout_from_the_environment():
    """ALEXNET_DIST_TIMEOUT_MIN reaches every collective (0.05 min = 3 s here): a peer that is
    alive but stuck makes the others raise, which train turns into one line and exit 1."""
    procs = start_ranks([sys.executable, "-c", HANGING_PEER], 2, ALEXNET_DIST_TIMEOUT_MIN="0.05")
    try:
        t0 = time.monotonic()
        out, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode == 3, err
    seconds, message = out.split(" ", 1)
    assert 2.5 <= float(seconds) < 20 and waited < 60, out
    assert "3000ms" in message or "imed out" in message, message


@pytest.mark.parametrize("value", ["x", "0", "-2", "inf", "nan"])
def test_a_bad_collective_timeout_is_an_input_error(monkeypatch, value):
    monkeypatch.setenv("ALEXNET_DIST_TIMEOUT_MIN", value)
    with pytest.raises(InputError, match="ALEXNET_DIST_TIMEOUT_MIN=.* is not a positive number of minutes"):
        collective_timeout()


def test_the_collective_timeout_defaults_to_10_minutes_and_takes_fractions(monkeypatch):
    monkeypatch.delenv("ALEXNET_DIST_TIMEOUT_MIN", raising=False)
    assert collective_timeout().total_seconds() == 600
    monkeypatch.setenv("ALEXNET_DIST_TIMEOUT_MIN", "0.25")
    assert collective_timeout().total_seconds() == 15


FREED_HEAP = """
import torch
from alexnet_cli.memory import release_free_heap
from alexnet_cli.memory import keep_freed_memory

def rss_mib():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmRSS:")) // 1024

keep_freed_memory()
before = rss_mib()
x = torch.ones(300 * 2**20, dtype=torch.uint8)  # 300 MiB of heap, touched
del x
kept = rss_mib()
release_free_heap()
print(before, kept, rss_mib())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator and /proc")
def test_the_freed_heap_train_keeps_is_released_before_loader_workers_fork():
    """train keeps freed heap for speed; workers forked from it would each inherit (and, as the
    main process reuses it, own a copy of) up to 1 GiB: batch_loader releases it first."""
    r = subprocess.run([sys.executable, "-c", FREED_HEAP], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    before, kept, released = map(int, r.stdout.split())
    assert kept - before > 250 and kept - released > 250, r.stdout


DYING_PEER = """
import os
from alexnet_cli import distributed
distributed.init("gloo")
os._exit(0)  # joined the run, then died before scoring anything
"""


def test_a_dead_peer_of_a_distributed_eval_is_one_line_saying_to_rerun(tmp_path):
    """Rank 1 of a 2-process `alexnet eval` dies after joining: rank 0's first collective fails
    and it exits 1 with one line naming the cause and the fix, not an internal error."""
    from alexnet_cli.data.format.index import PreparedDataset
    from tests.conftest import write_checkpoint
    from tests.reliability_helpers import cli, free_port

    data = make_dataset(tmp_path / "data", classes=2, train_per_class=1, val_per_class=2)
    ds = PreparedDataset(data)
    ckpt = write_checkpoint(tmp_path / "ckpt.pt", ds.classes, ds.stats.mean_image)
    port = str(free_port())
    procs = []
    for rank, cmd in enumerate([cli("eval", ckpt, "--data", data, "--gpus", "0"), [sys.executable, "-c", DYING_PEER]]):
        env = cli_env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=port, OMP_NUM_THREADS="1", ALEXNET_DIST_TIMEOUT_MIN="0.5")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        _, err = procs[0].communicate(timeout=120)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    lines = err.strip().splitlines()
    assert procs[0].returncode == EXIT_FAILED and len(lines) == 1, err
    assert lines[0].startswith("error: rank 0: ") and "another process of the run died" in lines[0], err
    assert lines[0].endswith("rerun the same command"), err
