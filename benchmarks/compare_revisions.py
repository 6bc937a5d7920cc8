"""Did a change make anything slower? Each benchmark of this checkout against the same benchmark
of an earlier revision, run alternately (old, new, old, new, ...) so that a machine's drifting
load hits both alike.

The earlier revision's package and benchmarks are extracted with `git archive` into a temporary
folder; each benchmark script puts its own tree first on sys.path, so each measures its own
code. Printed per benchmark and revision: the median of the numbers named below over the runs,
and new/old.

    python benchmarks/compare_revisions.py 382e2af [--runs 2] [--only model,loader,prep,eval,train]
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# benchmark -> (arguments, {number's name: regex with one group}); higher is better for all.
BENCHMARKS = {
    "model": (["--rounds", "3"], {
        "paper img/s (best step)": r"(?m)^paper\s+best\s+\d+ ms\s+median\s+\d+ ms\s+=\s+([\d.]+) /",
        "paper/torchvision": r"paper/torchvision images/s = ([\d.]+)",
    }),
    "loader": (["--rounds", "2", "--codecs", "jpeg", "--passes", "4"], {
        "ours img/s": r"median: ours \(jpeg\) ([\d.]+) img/s",
        "ours/pytorch-examples": r"ratio ours/pytorch-examples \(images/s\): ([\d.]+)x",
    }),
    "prep": (["--rounds", "2"], {
        "ours 2 workers img/s": r"ours 2 workers\s+([\d.]+)",
        "per-core vs naive": r"ratio: per-core ([\d.]+)x",
    }),
    "eval": (["--gpus", "0", "--repeats", "2"], {
        "center img/s": r"median center pass [\d.]+ s \(([\d.]+) images/s\)",
        "10-crop img/s": r"median 10-crop pass [\d.]+ s \(([\d.]+) images/s\)",
    }),
    "train": (["--gpus", "0", "--steps", "2", "--rounds", "2"], {
        "paper img/s": r"median training images/s: paper ([\d.]+)",
        "paper/torchvision": r"ratio paper/torchvision: ([\d.]+)x",
    }),
}


def extract(rev: str, dest: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "alexnet_cli", "benchmarks"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest


def run(tree: Path, name: str, args: list[str]) -> str:
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / f"bench_{name}.py"), *args],
                          capture_output=True, text=True, cwd=tree)
    if done.returncode:
        sys.exit(f"bench_{name}.py in {tree} failed:\n{done.stderr[-2000:]}")
    return done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="the earlier revision (a commit, tag or branch)")
    p.add_argument("--runs", type=int, default=2, help="runs of each benchmark per revision, alternating")
    p.add_argument("--only", default=",".join(BENCHMARKS), help="comma-separated benchmarks")
    a = p.parse_args()
    # Beside this checkout, so that both trees find ../shared/data the same way.
    with tempfile.TemporaryDirectory(dir=ROOT.parent, prefix=".compare-") as tmp:
        trees = {a.rev: extract(a.rev, Path(tmp)), "this checkout": ROOT}
        for name in a.only.split(","):
            args, numbers = BENCHMARKS[name]
            got: dict[str, dict[str, list[float]]] = {t: {k: [] for k in numbers} for t in trees}
            for r in range(a.runs):
                for label, tree in trees.items():
                    out = run(tree, name, args)
                    for key, pattern in numbers.items():
                        m = re.findall(pattern, out)
                        if m:
                            got[label][key].append(float(m[-1]))
                    print(f"bench_{name} run {r + 1} {label}: " +
                          ", ".join(f"{k} {v[-1]:g}" for k, v in got[label].items() if v), flush=True)
            for key in numbers:
                old, new = (statistics.median(got[t][key]) if got[t][key] else float("nan") for t in trees)
                print(f"bench_{name} {key}: {a.rev} {old:g}, this checkout {new:g}, new/old {new / old:.2f}")


if __name__ == "__main__":
    main()
