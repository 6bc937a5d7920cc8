"""The paper's ablation switches (issue 13, docs/claims.md): tanh (3.1), one tower (3.2), no LRN
(3.3), plain pooling (3.4), no crops and flips (4.1), and the colour measure of Figure 3 (6.1).

Shapes and parameter counts against hand arithmetic, each switch against an independent
functional network, both placements, the checkpoint and the CLI; a few training steps each."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet_cli.checkpoint import (
    checkpoint_model_config,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from alexnet_cli.config import ModelConfig, TrainConfig
from alexnet_cli.data import augment
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.loader import LocalBatch, StoredImages
from alexnet_cli.errors import InputError
from alexnet_cli.filters import Kernels, chroma_share, colour_summary
from alexnet_cli.info import summary
from alexnet_cli.model import AlexNet, LocalResponseNorm, build_model, layer_output
from alexnet_cli.progress import TrainProgress
from alexnet_cli.train import train
from tests.conftest import Losses, make_dataset, run_cli

QUIET = TrainProgress(enabled=False)
SWITCHED = [
    dict(activation="tanh"),
    dict(lrn=False),
    dict(pool="plain"),
    dict(towers="one-half"),
    dict(towers="one-full"),
    dict(towers="one-half", activation="tanh", lrn=False, pool="plain"),
]


def params(widths, towers, classes=1000):
    """Parameters of a net of `towers` towers with these per-tower widths, from Figure 2's layer
    shapes: conv2, conv4 and conv5 see their own tower, conv3 and the fc layers every tower."""
    c1, c2, c3, c4, c5, f6, f7 = widths
    per_tower = (
        (3 * 121 + 1) * c1
        + (c1 * 25 + 1) * c2
        + (towers * c2 * 9 + 1) * c3
        + (c3 * 9 + 1) * c4
        + (c4 * 9 + 1) * c5
        + (towers * c5 * 36 + 1) * f6
        + (towers * f6 + 1) * f7
    )
    return towers * per_tower + (towers * f7 + 1) * classes


def reference(sd: dict, x: torch.Tensor, towers: int, activation="relu", lrn=True, z=3) -> torch.Tensor:
    """The network in plain functional ops on the grouped layout (eval mode, paper dropout),
    independent of the Tower code: `towers` groups, torch's LRN (alpha / n, hence 5e-4)."""
    act = torch.relu if activation == "relu" else torch.tanh
    norm = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)

    def lrn_groups(t):
        if not lrn:
            return t
        b, c, h, w = t.shape
        return norm(t.reshape(b * towers, c // towers, h, w)).reshape(b, c, h, w)

    x = F.max_pool2d(
        lrn_groups(act(F.conv2d(x, sd["conv1.weight"], sd["conv1.bias"], stride=4, padding=2))), z, 2
    )
    x = F.max_pool2d(
        lrn_groups(act(F.conv2d(x, sd["conv2.weight"], sd["conv2.bias"], padding=2, groups=towers))), z, 2
    )
    x = act(F.conv2d(x, sd["conv3.weight"], sd["conv3.bias"], padding=1))
    x = act(F.conv2d(x, sd["conv4.weight"], sd["conv4.bias"], padding=1, groups=towers))
    x = F.max_pool2d(act(F.conv2d(x, sd["conv5.weight"], sd["conv5.bias"], padding=1, groups=towers)), z, 2)
    x = act(F.linear(x.flatten(1), sd["fc6.weight"], sd["fc6.bias"])) * 0.5
    x = act(F.linear(x, sd["fc7.weight"], sd["fc7.bias"])) * 0.5
    return F.linear(x, sd["fc8.weight"], sd["fc8.bias"])


# --------------------------------------------------------------------------------------------
# The network


def test_parameter_counts_follow_the_widths():
    assert params((48, 128, 192, 192, 128, 2048, 2048), 2) == 60_965_224  # the formula is Figure 2's
    expected = {
        "two": 60_965_224,
        "one-half": params((48, 128, 192, 192, 256, 4096, 4096), 1),  # footnote 2: conv5, fc whole
        "one-full": params((96, 256, 384, 384, 256, 4096, 4096), 1),
    }
    for towers, count in expected.items():
        assert sum(p.numel() for p in AlexNet(1000, towers=towers).parameters()) == count, towers
    assert expected["one-half"] == 59_798_312
    for switch in (dict(activation="tanh"), dict(lrn=False), dict(pool="plain")):  # no weights
        assert sum(p.numel() for p in AlexNet(1000, **switch).parameters()) == 60_965_224


@pytest.mark.parametrize("switch", SWITCHED)
def test_each_switch_computes_the_reference_network(switch):
    torch.manual_seed(0)
    model = build_model(ModelConfig(num_classes=5, bias_init=0.1, **switch)).eval()
    towers = 1 if switch.get("towers", "two") != "two" else 2
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        got = model(x)
        want = reference(
            model.state_dict(),
            x,
            towers,
            switch.get("activation", "relu"),
            switch.get("lrn", True),
            3 if switch.get("pool", "overlap") == "overlap" else 2,
        )
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    # section 3.4: both poolings give Figure 2's map sizes; the fc layers are unchanged
    with torch.no_grad():
        assert layer_output(model, x, "pool5").shape == (2, 9216)
        assert layer_output(model, x, "conv1").shape[1] == (48 if switch.get("towers") == "one-half" else 96)


def test_switches_change_the_modules_the_way_they_say():
    plain = AlexNet(10, lrn=False, pool="plain", activation="tanh", bias_init=0.0)
    assert not any(isinstance(m, LocalResponseNorm) for m in plain.modules())
    assert {m.kernel_size for m in plain.modules() if isinstance(m, torch.nn.MaxPool2d)} == {2}
    assert {m.kernel_size for m in AlexNet(10).modules() if isinstance(m, torch.nn.MaxPool2d)} == {3}
    with torch.no_grad():
        fc7 = layer_output(plain.eval(), torch.randn(2, 3, 224, 224) * 50, "fc7")
    assert (fc7.abs() <= 0.5).all() and (fc7 < 0).any()  # tanh, times the paper's 0.5 at test


def test_a_one_tower_net_runs_its_modules_alike_and_refuses_two_devices():
    torch.manual_seed(3)
    fast = AlexNet(num_classes=3, towers="one-half").eval()
    modules = AlexNet(num_classes=3, towers="one-half", devices=("cpu",)).eval()
    modules.load_state_dict(fast.state_dict())
    x = torch.randn(2, 3, 224, 224) * 50
    with torch.no_grad():
        torch.testing.assert_close(modules(x), fast(x), rtol=1e-5, atol=1e-5)
    assert list(fast.state_dict())[:2] == ["conv1.weight", "conv1.bias"]  # the same key layout
    with pytest.raises(ValueError, match="one entry"):
        AlexNet(num_classes=3, towers="one-full", devices=("cpu", "cpu"))
    with pytest.raises(ValueError, match="--towers three"):
        AlexNet(num_classes=3, towers="three")


def test_torchvision_has_no_switches():
    with pytest.raises(ValueError, match="--arch torchvision has no --lrn switch"):
        build_model(ModelConfig(arch="torchvision", lrn=False))


def test_a_checkpoint_without_the_switches_is_the_paper_net():
    old = asdict(ModelConfig(num_classes=3))
    for key in ("activation", "lrn", "pool", "towers", "dropout_form"):
        del old[key]
    config = checkpoint_model_config({"model_config": old})
    assert (config.activation, config.lrn, config.pool, config.towers) == ("relu", True, "overlap", "two")
    assert config.dropout_form == "inverted"  # the recipe of that time, unchanged
    with pytest.raises(InputError, match="cannot build .*--pool huge"):
        checkpoint_model_config({"model_config": {**old, "pool": "huge"}}, "x.pt")


# --------------------------------------------------------------------------------------------
# alexnet info


def test_info_counts_follow_the_switches():
    half = summary(ModelConfig(towers="one-half"))
    rows = {r["name"]: r for r in half["layers"]}
    assert half["total_params"] == 59_798_312 and half["towers"] == "one-half"
    assert (
        rows["conv2"]["macs"] == 27 * 27 * 128 * 48 * 25 and rows["conv3"]["macs"] == 13 * 13 * 192 * 128 * 9
    )
    assert rows["conv5"]["output_shape"] == [256, 13, 13] and rows["conv1"]["towers"] == []
    full = summary(ModelConfig(towers="one-full"))
    conv4 = next(r for r in full["layers"] if r["name"] == "conv4")
    assert conv4["macs"] == 13 * 13 * 384 * 384 * 9  # one tower: every kernel sees all 384 maps
    plain = summary(ModelConfig(lrn=False, pool="plain"))
    assert [r["name"] for r in plain["layers"] if r["kind"] == "LRN"] == []
    assert plain["total_macs"] == 724_406_816 and plain["pool"] == "plain"


def test_info_cli_takes_the_switches():
    r = run_cli("info", "--towers", "one-half", "--no-lrn", "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["total_params"] == 59_798_312 and s["lrn"] is False
    r = run_cli("info", "--towers", "one-half")
    assert b"towers one-half" in r.stdout and b"59,798,312" in r.stdout
    r = run_cli("info", "--arch", "torchvision", "--activation", "tanh")
    assert r.returncode == 2 and b"has no --activation switch" in r.stderr


# --------------------------------------------------------------------------------------------
# Augmentation off (section 4.1)


def test_without_crop_flip_every_patch_is_the_center_and_the_lighting_stays():
    indices = np.arange(40)
    on, off = augment.draws(3, 1, indices), augment.draws(3, 1, indices, crop_flip=False)
    assert (off.top == 16).all() and (off.left == 16).all() and not off.flip.any()
    assert np.array_equal(on.alpha, off.alpha) and on.flip.any()  # the same lighting per image
    one = augment.draw(3, 1, 7, crop_flip=False)
    assert (one.top, one.left, one.flip, one.alpha) == (16, 16, False, tuple(off.alpha[7]))


def test_the_loader_reads_center_patches_without_crop_flip(tmp_path):
    data = make_dataset(tmp_path, classes=2, train_per_class=3, codec="raw")
    reader = PreparedDataset(data).split("train")
    images = StoredImages(reader, train=True, seed=0, crop_flip=False)
    batch = images[LocalBatch(0, np.arange(6), 6)]
    for j in range(6):
        assert np.array_equal(batch["images"][j].numpy(), reader.image(j)[16:240, 16:240])
    assert not batch["flip"].any()


# --------------------------------------------------------------------------------------------
# Training with the switches


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dataset(
        tmp_path_factory.mktemp("ablation-data"), classes=2, train_per_class=4, val_per_class=2
    )


def test_a_switched_net_trains_and_its_checkpoint_says_how(data, tmp_path):
    """One tower of half the kernels, tanh, no LRN, plain pooling, no crops and flips: three steps
    on one batch of 4 lower the loss; the checkpoint rebuilds that net; a resume keeps it."""
    switches = dict(towers="one-half", activation="tanh", lrn=False, pool="plain")
    cfg = TrainConfig(
        data=str(data),
        run_dir=str(tmp_path),
        epochs=3,
        batch_size=4,
        limit=4,
        workers=0,
        dropout=0.0,
        bias_init=0.1,
        crop_flip=False,
        checkpoint_minutes=1e9,
        **switches,
    )
    losses = Losses()
    train(cfg, losses)
    assert len(losses.values) == 3 and losses.values[0] > losses.values[1] > losses.values[2]
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert {k: ckpt["model_config"][k] for k in switches} == switches
    assert ckpt["train_config"]["crop_flip"] is False
    assert ckpt["model"]["conv2.weight"].shape == (128, 48, 5, 5)
    model = model_from_checkpoint(ckpt).eval()
    assert model.activation == "tanh" and model(torch.zeros(1, 3, 224, 224)).shape == (1, 2)
    with pytest.raises(InputError, match="--crop-flip False \\(now True\\)"):
        train(TrainConfig(**{**asdict(cfg), "epochs": 4, "resume": "last", "crop_flip": True}), QUIET)
    with pytest.raises(InputError, match="--towers one-half \\(now two\\)"):
        train(TrainConfig(**{**asdict(cfg), "epochs": 4, "resume": "last", "towers": "two"}), QUIET)


def test_the_train_command_takes_the_switches(data, tmp_path):
    """The CLI's options reach the run: the checkpoint's model and train configs say them."""
    r = run_cli("train", "--data", data, "--run-dir", tmp_path, "--max-steps", "1", "--batch-size", "2",
                "--workers", "0", "--gpus", "0", "--activation", "tanh", "--no-lrn", "--pool", "plain",
                "--towers", "one-half", "--no-crop-flip", "--json")
    assert r.returncode == 0, r.stderr.decode()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    switches = {k: ckpt["model_config"][k] for k in ("activation", "lrn", "pool", "towers")}
    assert switches == dict(activation="tanh", lrn=False, pool="plain", towers="one-half")
    assert ckpt["train_config"]["crop_flip"] is False
    r = run_cli("train", "--data", data, "--run-dir", tmp_path / "b", "--gpus", "0", "--pool", "max")
    assert r.returncode != 0 and "Traceback" not in r.stderr.decode()
    assert "--pool" in r.stderr.decode()


def test_train_refuses_switches_that_make_no_sense(tmp_path):
    base = dict(synthetic=True, run_dir=str(tmp_path), gpus=0)
    with pytest.raises(InputError, match="one tower, for one device"):
        train(TrainConfig(**{**base, "devices": ("cpu", "cpu"), "towers": "one-half"}), QUIET)
    with pytest.raises(InputError, match="--arch torchvision has no --pool switch"):
        train(TrainConfig(**{**base, "arch": "torchvision", "pool": "plain"}), QUIET)
    with pytest.raises(InputError, match="--activation sigmoid: choose one of relu, tanh"):
        train(TrainConfig(**{**base, "activation": "sigmoid"}), QUIET)


def test_an_export_card_records_the_checkpoints_own_config(tmp_path):
    pytest.importorskip("safetensors", reason="the export extra is not installed: pip install -e '.[export]'")
    from alexnet_cli.data.transforms import preprocess_from_stats
    from alexnet_cli.export import ExportConfig, run_export

    config = ModelConfig(
        num_classes=2, towers="one-half", activation="tanh", lrn=False, dropout_form="inverted"
    )
    torch.manual_seed(0)
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(
        ckpt,
        {
            "model": build_model(config).state_dict(),
            "model_config": asdict(config),
            "classes": [["n0", "a"], ["n1", "b"]],
            "preprocess": preprocess_from_stats(np.full((256, 256, 3), 100, np.float32)),
        },
    )
    result = run_export(ckpt, ExportConfig(tmp_path / "net.safetensors"))  # its check rebuilds from the card
    card = json.loads(result.card.read_text())
    assert {k: card["model_config"][k] for k in ("towers", "activation", "lrn", "dropout_form")} == {
        "towers": "one-half",
        "activation": "tanh",
        "lrn": False,
        "dropout_form": "inverted",  # the card used to say "paper" whatever the checkpoint held
    }


# --------------------------------------------------------------------------------------------
# Figure 3's colour measure (section 6.1)


def test_chroma_share_of_constructed_kernels():
    rng = np.random.default_rng(0)
    pattern = rng.normal(size=(11, 11))
    gray = np.stack([pattern] * 3)[None]  # the same weights on R, G and B
    red_green = np.stack([pattern, -pattern, 0 * pattern])[None]  # opponent colours
    red = np.stack([pattern, 0 * pattern, 0 * pattern])[None]  # one channel alone
    shares = chroma_share(np.concatenate([gray, red_green, red, np.zeros((1, 3, 11, 11))]))
    np.testing.assert_allclose(shares, [0.0, 1.0, 2 / 3, 0.0], atol=1e-12)
    noise = chroma_share(rng.normal(size=(500, 3, 11, 11)))
    assert abs(noise.mean() - 2 / 3) < 0.01  # random weights: two of three colour dimensions
    tinted = chroma_share(gray + 0.1 * red_green)
    assert 0 < tinted[0] < 0.02


def test_colour_summary_per_tower_and_the_filters_command(tmp_path):
    rng = np.random.default_rng(1)
    p = rng.normal(size=(48, 1, 11, 11))
    weight = np.concatenate([np.concatenate([p, p, p], 1), np.concatenate([p, -p, 0 * p], 1)]) * 0.01
    s = colour_summary(Kernels(weight, 2, "made"))
    assert [t["colour_specific"] for t in s["towers"]] == [0, 48]
    means = [t["mean_chroma"] for t in s["towers"]]
    assert means == pytest.approx([0, 1])

    model = AlexNet(4)
    state = model.state_dict()
    state["conv1.weight"] = torch.from_numpy(weight).float()
    ckpt = tmp_path / "ckpt.pt"
    save_checkpoint(ckpt, {"model": state, "model_config": asdict(ModelConfig(num_classes=4))})
    r = run_cli("filters", ckpt, "-o", tmp_path / "conv1.png", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [t["colour_specific"] for t in out["towers"]] == [0, 48] and len(out["chroma"]) == 96
    assert (tmp_path / "conv1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = run_cli("filters", ckpt, "-o", tmp_path / "again.png")
    assert b"tower 1: chroma share mean 1.00" in r.stdout and b"48 of 48 kernels colour-specific" in r.stdout
