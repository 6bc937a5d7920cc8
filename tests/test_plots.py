"""`alexnet filters` (conv1 kernels, tower 0 left, tower 1 right) and `alexnet plot` (curves)."""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_cli.checkpoint import save_checkpoint
from alexnet_cli.config import ModelConfig
from alexnet_cli.model import AlexNet
from alexnet_cli.plots import kernel_grid, read_metrics
from tests.conftest import run_cli

METRICS = """epoch,lr,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,images_per_s,elapsed_s
1,0.01,2.3,10,50,2.2,12,55,20.5,100
2,0.01,2.0,20,60,1.9,25,70,21.0,200
"""


def test_kernel_grid_puts_tower_0_left_and_scales_each_kernel():
    w = np.zeros((96, 3, 11, 11), np.float32)
    w[:48, 0] = 1.0  # tower 0: red kernels
    w[:48, 1:] = -1.0
    w[48:, 2] = 1.0  # tower 1: blue
    w[48:, :2] = -1.0
    grid = kernel_grid(w, towers=2, scale=2)
    left, right = grid[:, : grid.shape[1] // 2], grid[:, grid.shape[1] // 2 :]
    red = (left[..., 0] == 255) & (left[..., 1] == 0)
    blue = (right[..., 2] == 255) & (right[..., 0] == 0)
    assert red.sum() == 48 * 22 * 22 and blue.sum() == 48 * 22 * 22
    assert not ((right[..., 0] == 255) & (right[..., 1] == 0)).any()


def test_filters_command_writes_the_png_and_never_overwrites(tmp_path):
    ckpt = tmp_path / "ckpt.pt"
    torch.manual_seed(0)
    save_checkpoint(ckpt, {"model": AlexNet(4).state_dict(), "model_config": asdict(ModelConfig(num_classes=4))})
    r = run_cli("filters", ckpt, "-o", tmp_path / "conv1.png")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "conv1.png") as im:
        assert im.mode == "RGB" and im.size[0] > im.size[1]
    r = run_cli("filters", ckpt, "-o", tmp_path / "conv1.png")
    assert r.returncode == 2 and b"already exists" in r.stderr


def test_filters_from_torchvision_weights(tmp_path):
    from torchvision.models import alexnet

    torch.save(alexnet().state_dict(), tmp_path / "tv.pth")
    r = run_cli("filters", "--weights", tmp_path / "tv.pth", "-o", tmp_path / "tv.png")
    assert r.returncode == 0, r.stderr
    assert b"64 kernels" in r.stdout


def test_plot_redraws_and_compares_runs(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text(METRICS)
    rows = read_metrics(tmp_path / "a")
    assert rows[1]["epoch"] == 2 and rows[1]["val_top1"] == 25.0
    r = run_cli("plot", tmp_path / "a")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "a" / "curves.png").stat().st_size > 1000
    r = run_cli("plot", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "ab.png")
    assert r.returncode == 0, r.stderr
    with Image.open(tmp_path / "ab.png") as im:
        assert im.format == "PNG"


@pytest.mark.parametrize("content", ["", "not,a,metrics\nfile"])
def test_plot_bad_input_is_one_line(tmp_path, content):
    (tmp_path / "metrics.csv").write_text(content)
    r = run_cli("plot", tmp_path)
    assert r.returncode == 2 and b"Traceback" not in r.stderr and b"metrics.csv" in r.stderr
