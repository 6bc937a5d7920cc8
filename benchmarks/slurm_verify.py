"""One case of benchmarks/slurm_check.sh, judged from what a user has: the job logs, sacct and the
run folder. Prints one line (PASS/FAIL, then what was seen) and exits 0 or 1.

A stopped case passes when
- every stop is one line from rank 0 (`stopped by a signal after step N (epoch E)`), no `error:`
  line, and no traceback except torchrun's own report of the signal (SignalException);
- the script saw last.pt written after the signal (its `..., after the signal` line) for each stop;
- the next run resumed from that very checkpoint (`resuming ...: epoch E, step S`, with
  (E-1) * steps per epoch + S == N and S > 0): the one written at the signal, mid-epoch, since
  the runs write no periodic checkpoints;
- requeued cases stayed one job id with a REQUEUED record per stop in sacct, and ended COMPLETED;
- the final last.pt holds the same weights, bit for bit, as the uninterrupted run's, and
  metrics.csv has each epoch once.

    python benchmarks/slurm_verify.py --case NAME --run-dir RUN --reference REF.pt --jobs J [J2]
        --logs LOG [LOG2] [--requeued] [--min-stops 1] [--max-stops 1] [--epochs 4]
"""

from __future__ import annotations

import argparse
import csv
import itertools
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import torch

STOP = re.compile(r"^stopped by a signal after step (\d+) \(epoch (\d+)\)")
RESUME = re.compile(r"^resuming \S+: epoch (\d+), step (\d+) of it")
STEP = re.compile(r"^epoch \d+/\d+ step \d+/(\d+) ")
WRITTEN = re.compile(r"^alexnet\.sbatch: job \d+: training stopped \((.*)\); \S+ written at .*, after the signal")
WARNING = re.compile(r"^alexnet\.sbatch: job \d+: WARNING: training stopped")
RUN_END = re.compile(r"^alexnet\.sbatch: job \d+: (WARNING: )?training (finished|failed|stopped)")


def sacct(job: str) -> list[list[str]]:
    out = subprocess.run(["sacct", "-j", job, "-D", "-P", "-n", "-o", "JobID,State,ExitCode,Start,End"],
                         capture_output=True, text=True, check=False).stdout
    return [line.split("|") for line in out.splitlines() if line]


def sacct_story(rows: list[list[str]]) -> tuple[str, list[float]]:
    """'REQUEUED 0:0 (batch FAILED 75:0, step FAILED 1:0) -> COMPLETED 0:0 (...)', and the seconds
    each requeued run waited between its end and the next start."""
    runs: list[dict] = []
    for job_id, state, code, start, end in rows:
        if "." not in job_id:
            runs.append({"state": f"{state} {code}", "steps": [], "start": start, "end": end})
        elif runs:
            runs[-1]["steps"].append(f"{job_id.split('.', 1)[1]} {state} {code}")
    waits = []
    for before, after in itertools.pairwise(runs):
        try:
            waits.append((datetime.fromisoformat(after["start"]) - datetime.fromisoformat(before["end"])).total_seconds())
        except ValueError:
            pass
    return " -> ".join(f"{r['state']} ({', '.join(r['steps'])})" for r in runs), waits


def model_weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True, map_location="cpu")["model"]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", required=True)
    ap.add_argument("--run-dir", type=Path, required=True)
    ap.add_argument("--reference", type=Path, help="the uninterrupted run's last.pt (none: this is that run)")
    ap.add_argument("--jobs", nargs="+", required=True)
    ap.add_argument("--logs", nargs="+", type=Path, required=True)
    ap.add_argument("--requeued", action="store_true", help="the stops must requeue the job under its id")
    ap.add_argument("--min-stops", type=int, default=0)
    ap.add_argument("--max-stops", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()

    lines = [line.rstrip("\n") for log in args.logs for line in log.read_text(errors="replace").splitlines()]
    problems: list[str] = []
    seen: list[str] = []

    per_epoch = {int(m.group(1)) for line in lines if (m := STEP.match(line))}
    if len(per_epoch) != 1:
        problems.append(f"steps per epoch unclear from the log: {sorted(per_epoch)}")
    spe = per_epoch.pop() if len(per_epoch) == 1 else 0

    # The runs in order: each stop must be resumed from exactly its checkpoint, and a run that
    # ended without one (the script's WARNING) must not have trained a step since the last.
    stops, written, resumes, early = [], [], 0, 0
    awaiting = checkpoint = None
    steps_this_run = 0
    for line in lines:
        if m := STOP.match(line):
            step, epoch = int(m.group(1)), int(m.group(2))
            if awaiting is not None:
                problems.append(f"the stop after step {awaiting} was never resumed")
            stops.append(step)
            awaiting = checkpoint = step
            seen.append(f"stopped after step {step} (epoch {epoch}, step {step - (epoch - 1) * spe})")
        elif m := WRITTEN.match(line):
            written.append(m.group(1))
        elif WARNING.match(line):
            if steps_this_run:
                problems.append(f"a run trained {steps_this_run} step(s) and stopped without writing last.pt")
            else:
                early += 1
        elif m := RESUME.match(line):
            resumes += 1
            epoch, step = int(m.group(1)), int(m.group(2))
            at = (epoch - 1) * spe + step
            if checkpoint is None or at != checkpoint or step == 0:
                problems.append(f"resumed at epoch {epoch}, step {step} (step {at}); the last stop was after step {checkpoint}")
            awaiting = None
        elif STEP.match(line):
            steps_this_run += 1
        if RUN_END.match(line):
            steps_this_run = 0
    if awaiting is not None:
        problems.append(f"the stop after step {awaiting} was never resumed")
    if not args.min_stops <= len(stops) <= args.max_stops:
        problems.append(f"{len(stops)} stop line(s), expected {args.min_stops}..{args.max_stops}")
    if len(written) != len(stops):
        problems.append(f"the script saw last.pt written after the signal {len(written)} time(s) for {len(stops)} stop(s)")
    if stops and not problems:
        seen.append(f"each resumed exactly there ({resumes} resume(s))")
    if written:
        seen.append(f"last.pt written after the signal ({'; '.join(sorted(set(written)))})")
    if early:
        seen.append(f"{early} signal(s) came before the first step (nothing to save)")

    tracebacks = sum("Traceback (most recent call last)" in line for line in lines)
    torchrun_reports = sum(bool(re.search(r"SignalException: Process \d+ got signal: 15", line)) for line in lines)
    if tracebacks != torchrun_reports:
        problems.append(f"{tracebacks} traceback(s), {torchrun_reports} of them torchrun's report of SIGTERM")
    elif tracebacks:
        seen.append(f"{tracebacks} torchrun SignalException traceback(s), none from alexnet")
    errors = [line for line in lines if line.startswith(("error:", "internal error:"))]
    if errors:
        problems.append(f"error lines: {errors[:2]}")

    stories = []
    for job in args.jobs:
        rows = sacct(job)
        story, waits = sacct_story(rows)
        stories.append(f"job {job}: {story or 'no sacct record'}")
        requeues = sum(1 for row in rows if "." not in row[0] and row[1] == "REQUEUED")
        if args.requeued and requeues != len(stops) + early:
            problems.append(f"job {job}: {requeues} REQUEUED record(s) for {len(stops) + early} stop(s)")
        if waits:
            seen.append("requeued under the same id, restarted after " + ", ".join(f"{w:.0f} s" for w in waits))
    runs = [row for row in sacct(args.jobs[-1]) if "." not in row[0]]
    if not runs or runs[-1][1] != "COMPLETED":
        problems.append(f"job {args.jobs[-1]} did not end COMPLETED")

    metrics = args.run_dir / "metrics.csv"
    epochs = [int(row["epoch"]) for row in csv.DictReader(metrics.read_text().splitlines())] if metrics.is_file() else []
    if epochs != list(range(1, args.epochs + 1)):
        problems.append(f"metrics.csv epochs {epochs}")
    else:
        seen.append(f"metrics.csv epochs {','.join(map(str, epochs))} once each")
    last = args.run_dir / "last.pt"
    if not last.is_file():
        problems.append("no last.pt")
    elif args.reference is not None:
        a, b = model_weights(last), model_weights(args.reference)
        differ = [k for k in b if k not in a or not torch.equal(a[k], b[k])]
        if differ:
            problems.append(f"weights differ from the uninterrupted run: {differ[:3]}")
        else:
            seen.append("final weights bit-identical to the uninterrupted run")

    verdict = "FAIL" if problems else "PASS"
    print(f"{verdict} {args.case}: " + "; ".join(problems + seen + stories), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
