"""The design card's command lines, verbatim, through a shell, on a small generated dataset,
relying on the documented environment defaults (ALEXNET_DATA, ALEXNET_CHECKPOINT)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from alexnet_cli.demo_data import make_demo_images
from tests.conftest import REPO_ROOT


def sh(script: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_design_card_workflow(tmp_path):
    make_demo_images(tmp_path / "DATA", train_per_class=2, val_per_class=1, seed=1)
    # `alexnet` on PATH runs this checkout (CI installs it; a dev tree may not have it installed)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "alexnet").write_text(f'#!/bin/sh\nexec "{sys.executable}" -m alexnet_cli "$@"\n')
    (bin_dir / "alexnet").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("ALEXNET_DATA", None)
    env.pop("ALEXNET_CHECKPOINT", None)

    r = sh("alexnet prep DATA out.h5", tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "out.h5").is_file()

    env["ALEXNET_DATA"] = str(tmp_path / "out.h5")
    r = sh("alexnet train --gpus 0 --epochs 1 --batch-size 10 --workers 0 --run-dir run", tmp_path, env)
    assert r.returncode == 0, r.stderr
    r = sh("alexnet train --devices cpu,cpu --epochs 1 --batch-size 10 --max-steps 1 --workers 0 --run-dir run-split", tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "run-split" / "last.pt").is_file()

    shutil.copy(tmp_path / "run" / "best.pt", tmp_path / "ckpt.pt")
    r = sh("alexnet eval ckpt.pt --ten-crop", tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "top-1" in r.stdout and "10 crops" in r.stdout
    r = sh("alexnet eval ckpt.pt --ten-crop --json", tmp_path, env)
    result = json.loads(r.stdout)
    assert result["images"] == 10 and result["crops"] == 10

    cat = next((tmp_path / "DATA" / "val" / "c07_star").iterdir())
    shutil.copy(cat, tmp_path / ("cat" + cat.suffix.lower().replace(".jpeg", ".jpg")))
    env["ALEXNET_CHECKPOINT"] = str(tmp_path / "ckpt.pt")
    r = sh(f"alexnet predict cat{cat.suffix.lower().replace('.jpeg', '.jpg')}", tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert "c0" in r.stdout  # a class name of the demo set (class folders c00_disc ... c09_dots)


def test_missing_environment_defaults_say_how_to_set_them(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("ALEXNET_DATA", "ALEXNET_CHECKPOINT")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    for args, variable in ((["train", "--gpus", "0"], "ALEXNET_DATA"), (["predict", "x.jpg"], "ALEXNET_CHECKPOINT")):
        r = subprocess.run([sys.executable, "-m", "alexnet_cli", *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 2, r.stderr
        assert variable in r.stderr and "Traceback" not in r.stderr
