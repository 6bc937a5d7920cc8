"""`alexnet demo`: its generated images, its folder rule, and the whole pipeline (tiny in the
default run; the full-size demo, which must beat twice chance, is marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from alexnet_cli.config import DemoConfig
from alexnet_cli.demo import MARKER, prepare_workdir, run_demo
from alexnet_cli.demo_data import CLASSES, make_demo_images
from alexnet_cli.errors import InputError
from tests.conftest import run_cli


def test_demo_images_are_real_varied_files_in_imagenet_layout(tmp_path):
    counts = make_demo_images(tmp_path / "a", train_per_class=12, val_per_class=2, seed=3)
    assert counts == {"train": 120, "val": 20}
    files = sorted((tmp_path / "a").rglob("*.*"))
    assert sorted({f.parent.name for f in files}) == [c[0] for c in CLASSES]
    sizes, modes, formats = set(), set(), set()
    for f in files:
        with Image.open(f) as im:
            sizes.add(im.size)
            modes.add(im.mode)
            formats.add(im.format)
    assert len(sizes) > 50  # varied sizes and aspect ratios
    assert {"RGB", "L"} <= modes and {"JPEG", "PNG"} <= formats
    make_demo_images(tmp_path / "b", train_per_class=12, val_per_class=2, seed=3)
    for f in files:  # deterministic for a seed
        assert f.read_bytes() == (tmp_path / "b" / f.relative_to(tmp_path / "a")).read_bytes()


def test_workdir_of_the_user_is_never_replaced(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="not made by `alexnet demo`"):
        prepare_workdir(mine)
    assert (mine / "thesis.tex").read_text() == "precious"
    ours = tmp_path / "ours"
    prepare_workdir(ours)
    (ours / "old.txt").write_text("from an earlier demo")
    prepare_workdir(ours)  # an earlier demo's folder is replaced
    assert (ours / MARKER).exists() and not (ours / "old.txt").exists()


def test_tiny_demo_runs_every_step_and_reports(tmp_path):
    cfg = DemoConfig(workdir=tmp_path / "demo", train_per_class=2, val_per_class=1, epochs=1, batch_size=10, workers=1)
    shown = []
    summary = run_demo(cfg, shown.append, quiet=True)
    assert [s.name for s in shown] == ["images", "prep", "train", "eval", "predict"]
    assert shown[1].command.startswith("alexnet prep ") and "--ten-crop" in shown[3].command
    assert summary["classes"] == 10 and summary["val_images"] == 10
    assert 0 <= summary["top1"] <= summary["top5"] <= 100
    assert shown[4].result["images"] == 10
    for name in ("demo.h5", "run/best.pt", "run/last.pt", "run/metrics.csv", "run/curves.png"):
        assert (tmp_path / "demo" / name).is_file(), name
    assert json.dumps(summary)  # JSON-ready


def test_demo_data_and_recipe_learn_beyond_twice_chance_in_three_epochs(tmp_path):
    """The shipped demo's images and recipe (the paper's, on 600 images), cut to 3 of its 6
    epochs (about 2 minutes on 2 cores): CI's check that the demo really learns; the full demo
    is the slow test below."""
    cfg = DemoConfig(workdir=tmp_path / "demo", epochs=3)
    summary = run_demo(cfg, lambda step: None, quiet=True)
    assert summary["val_images"] == 100
    assert summary["top1"] >= 2 * 100 / summary["classes"], summary


def test_demo_json_on_a_foreign_folder_is_one_line_exit_2(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep.txt").write_text("mine")
    result = run_cli("demo", "--workdir", tmp_path / "x", "--json")
    assert result.returncode == 2
    assert b"Traceback" not in result.stderr and b"not made by `alexnet demo`" in result.stderr
    assert result.stdout == b""


@pytest.mark.slow
def test_full_demo_beats_twice_chance(tmp_path):
    """The README's first command, as shipped (about 3 minutes on 2 cores): `alexnet demo --json`."""
    result = run_cli("demo", "--json", cwd=tmp_path, timeout=1200)
    assert result.returncode == 0, result.stderr.decode()[-2000:]
    summary = json.loads(result.stdout)
    assert {"top1", "top5", "classes", "seconds"} <= set(summary)
    assert summary["top1"] >= 2 * 100 / summary["classes"]
    assert Path(tmp_path / "alexnet-demo" / "run" / "best.pt").is_file()
