"""Fault trials at the issue's full counts (CI runs fewer: tests/test_reliability_faults.py).

- prep: an uninterrupted `alexnet prep` of ../shared/data/imagenet-sample (1000 real JPEGs as
  10 class folders of links, shards of 64, 2 workers), then kill -9 at N random points of it,
  each rerun to the end: `inspect --json --verify`, every shard's sha256 and the statistics must
  equal the uninterrupted run's, with no partial or lock file left.
- train: an uninterrupted CPU run (the paper net, a tiny generated dataset: 8 train images,
  2 epochs of 2 steps, a checkpoint after every step, dropout on, seed 0), then kill -9 at N
  random points, each resumed with --resume auto: last.pt and best.pt must be bit-identical to
  the uninterrupted run's, and metrics.csv's losses and accuracies equal.
- ranks: 2 gloo ranks started by hand; after the first checkpoint rank 0 is killed, rank 1 is
  killed, rank 1 is stopped (SIGSTOP: alive but silent); the survivor must exit by itself with
  exit 1 and one line (the stopped case after ALEXNET_DIST_TIMEOUT_MIN=0.25, 15 s), and both
  ranks rerun with --resume auto must complete the run.

Kill points are drawn from --seed (printed); the last line is the summary.

    python benchmarks/kill_trials.py [--prep-trials 5] [--train-trials 5] [--seed N] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.conftest import make_dataset  # noqa: E402
from tests.reliability_helpers import prep_kill_trials, rank_fault_trial, real_image_source, train_kill_trials  # noqa: E402

SAMPLE = ROOT.parent / "shared" / "data" / "imagenet-sample"
RANK_FAULTS = ((0, "kill"), (1, "kill"), (1, "stop"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--prep-trials", type=int, default=5)
    parser.add_argument("--train-trials", type=int, default=5)
    parser.add_argument("--seed", type=int, default=None, help="draws the kill points (default: a fresh one, printed)")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temporary one, deleted)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    rng = random.Random(seed)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="kill-trials-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"kill_trials: seed {seed}, scratch {work}", flush=True)
    t0 = time.monotonic()
    passed = {}
    try:
        src = real_image_source(SAMPLE, work / "src", images=1000, classes=10, start=0)
        work_s, trials = prep_kill_trials(src, work / "prep", ["--shard-size", "64", "--workers", "2"],
                                          args.prep_trials, rng)
        print(f"prep: 1000 images, uninterrupted run worked {work_s:.2f}s")
        for k, t in enumerate(trials):
            print(f"  prep {t.line(k)}", flush=True)
        passed["prep"] = (sum(t.ok for t in trials), len(trials))
        shutil.rmtree(work / "prep")

        tiny = make_dataset(work / "tiny", classes=2, train_per_class=4, val_per_class=2)
        train_args = ["--data", tiny, "--epochs", "2", "--batch-size", "4", "--workers", "0", "--gpus", "0",
                      "--checkpoint-every", "1"]
        work_s, trials = train_kill_trials(train_args, work / "train", args.train_trials, rng)
        print(f"train: 2 epochs x 2 steps, uninterrupted run worked {work_s:.2f}s")
        for k, t in enumerate(trials):
            print(f"  train {t.line(k)}", flush=True)
        passed["train"] = (sum(t.ok for t in trials), len(trials))
        shutil.rmtree(work / "train")

        rank_args = [*train_args, "--log-every", "1"]
        ok = 0
        for victim, how in RANK_FAULTS:
            run_dir = work / f"ranks-{how}-{victim}"
            fault = rank_fault_trial(rank_args, run_dir, victim, how, delay_s=rng.uniform(0, 2), timeout_min="0.25")
            good = (fault.survivor_code == 1 and len(fault.survivor_err) == 1 and fault.resume_codes == [0, 0]
                    and fault.summary is not None and fault.summary["stopped"] == "completed" and fault.summary["steps"] == 4)
            ok += good
            print(f"  ranks {'ok' if good else 'FAILED'}: {fault.line()}", flush=True)
            shutil.rmtree(run_dir)
        passed["ranks"] = (ok, len(RANK_FAULTS))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    parts = ", ".join(f"{name} {good}/{n}" for name, (good, n) in passed.items())
    print(f"kill_trials: {parts} passed (seed {seed}, {time.monotonic() - t0:.0f}s)")
    sys.exit(0 if all(good == n for good, n in passed.values()) else 1)


if __name__ == "__main__":
    main()
