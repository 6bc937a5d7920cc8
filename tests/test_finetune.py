"""`alexnet train --init-from CKPT [--freeze ...]`: weights copied, fc8 re-initialised for other
classes, the source's preprocessing, frozen layers that stay fixed (also across a resume),
torchvision's pretrained net, refusals. Tiny datasets, batches of 2, one or two steps."""

from __future__ import annotations

import pytest
import torch

from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.errors import InputError
from alexnet_cli.finetune import prepare
from alexnet_cli.config import ModelConfig
from alexnet_cli.model import build_model, layer_of
from alexnet_cli.progress import TrainProgress
from alexnet_cli.config import TrainConfig
from alexnet_cli.train import train
from tests.conftest import make_dataset

QUIET = TrainProgress(enabled=False)
STEP = {"epochs": 1, "batch_size": 2, "workers": 0, "checkpoint_minutes": 1e9, "max_steps": 1}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A 2-class run's last.pt (one step), and a 3-class dataset of other images to fine-tune on."""
    root = tmp_path_factory.mktemp("finetune")
    first = make_dataset(root / "first", classes=2, train_per_class=2, val_per_class=1)
    train(TrainConfig(data=str(first), run_dir=str(root / "run"), **STEP), QUIET)
    other = make_dataset(root / "other", classes=3, train_per_class=2, val_per_class=1, seed=1)
    return root / "run" / "last.pt", first, other


def test_init_from_copies_conv1_to_fc7_and_reinitialises_fc8_for_other_classes(source):
    ckpt_path, _, other = source
    from alexnet_cli.data.format.index import PreparedDataset

    classes = PreparedDataset(other).classes
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=3))
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    notes = []
    preprocess = prepare(model, classes, {"kind": "dataset's own"}, str(ckpt_path), None, None, notes.append)
    ckpt = load_checkpoint(ckpt_path)
    for name, value in model.state_dict().items():
        expected = fresh[name] if layer_of(name) == "fc8" else ckpt["model"][name]
        assert torch.equal(value, expected), name
    assert torch.equal(preprocess["mean_image"], ckpt["preprocess"]["mean_image"])
    assert "fc8 re-initialised (it has 2 classes, the dataset 3)" in notes[0]


def test_the_same_classes_keep_fc8(source):
    ckpt_path, first, _ = source
    from alexnet_cli.data.format.index import PreparedDataset

    model = build_model(ModelConfig(num_classes=2))
    notes = []
    prepare(model, PreparedDataset(first).classes, {}, str(ckpt_path), None, None, notes.append)
    assert torch.equal(model.state_dict()["fc8.weight"], load_checkpoint(ckpt_path)["model"]["fc8.weight"])
    assert "initialised every layer" in notes[0]


def test_frozen_features_stay_fixed_through_training_and_resume(source, tmp_path):
    ckpt_path, _, other = source
    run = tmp_path / "ft"
    cfg = dict(data=str(other), run_dir=str(run), init_from=str(ckpt_path), freeze="features", **STEP)
    train(TrainConfig(**cfg), QUIET)
    train(TrainConfig(**{**cfg, "max_steps": 2, "resume": "last"}), QUIET)
    before, after = load_checkpoint(ckpt_path), load_checkpoint(run / "last.pt")
    assert after["step"] == 2 and after["train_config"]["init_from"] == str(ckpt_path)
    for name, value in after["model"].items():
        if layer_of(name).startswith("conv"):
            assert torch.equal(value, before["model"][name]), name
        elif layer_of(name) in ("fc6", "fc7"):
            assert not torch.equal(value, before["model"][name]), name
    assert after["model"]["fc8.weight"].shape == (3, 4096)
    assert torch.equal(after["preprocess"]["mean_image"], before["preprocess"]["mean_image"])
    with pytest.raises(InputError, match="--init-from"):  # a resume keeps the recipe
        train(TrainConfig(**{**cfg, "max_steps": 3, "resume": "last", "init_from": None}), QUIET)


def test_torchvisions_pretrained_net_fine_tunes_with_its_mean_std(torch_home, source, tmp_path):
    _, _, other = source
    run = tmp_path / "tv"
    train(TrainConfig(data=str(other), run_dir=str(run), arch="torchvision", init_from="torchvision",
                      freeze="fc7", **STEP), QUIET)
    ckpt = load_checkpoint(run / "last.pt")
    assert ckpt["preprocess"] == {"kind": "mean_std", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    pretrained = torch.load(torch_home / "hub/checkpoints/alexnet-owt-7be5be79.pth", weights_only=True)
    assert torch.equal(ckpt["model"]["classifier.4.weight"], pretrained["classifier.4.weight"])  # fc7: frozen
    assert ckpt["model"]["classifier.6.weight"].shape == (3, 4096)


def test_refusals(source, torch_home, tmp_path):
    ckpt_path, _, other = source
    base = dict(data=str(other), **STEP)
    with pytest.raises(InputError, match="holds a 'torchvision' network; train with --arch torchvision"):
        train(TrainConfig(run_dir=str(tmp_path / "a"), init_from="torchvision", **base), QUIET)
    with pytest.raises(InputError, match="--freeze conv9: choose one of features, fc6, fc7"):
        train(TrainConfig(run_dir=str(tmp_path / "b"), init_from=str(ckpt_path), freeze="conv9", **base), QUIET)
    with pytest.raises(InputError, match="no such checkpoint"):
        train(TrainConfig(run_dir=str(tmp_path / "c"), init_from=str(tmp_path / "none.pt"), **base), QUIET)
