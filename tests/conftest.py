"""Shared fixtures. Real images come from ../shared/data (see its README); tests that need them
skip with a reason when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from alexnet_cli.progress import TrainProgress

torch.set_num_threads(min(2, os.cpu_count() or 1))

SHARED_DATA = Path(os.environ.get("ALEXNET_SHARED_DATA", Path(__file__).resolve().parents[1].parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real ImageNet test images; skip when it is not beside the checkout."""
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"real test images not found at {SHARED_DATA} (set ALEXNET_SHARED_DATA)")
    return SHARED_DATA

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None, timeout: float = 600, input: bytes | None = None):
    """Run `python -m alexnet_cli ARGS` in a subprocess that imports *this* checkout's package."""
    import subprocess
    import sys

    full_env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "COLUMNS": "200", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "alexnet_cli", *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        timeout=timeout,
        input=input,
    )


def write_dataset(path, samples, classes, split="val", codec="raw", shard_size=None) -> Path:
    """A tiny prepared dataset at `path` (index + shards): `samples` are (256x256x3 uint8, label,
    source) triples, `classes` (wnid, name) pairs; shards of `shard_size` images."""
    from alexnet_cli.data.format import shard_name
    from alexnet_cli.data.format.index import SplitMeta, write_index
    from alexnet_cli.data.format.shards import ShardWriter
    from alexnet_cli.data.format.stats import PixelSums

    path = Path(path)
    size = shard_size or max(1, len(samples))
    names, counts, sums = [], [], PixelSums()
    for k, start in enumerate(range(0, len(samples), size)):
        name = shard_name(path, split, k)
        writer = ShardWriter(path.parent / name, split, k, codec)
        for pixels, label, source in samples[start : start + size]:
            writer.add(pixels, label, source)
        writer.close()
        names.append(name)
        counts.append(len(samples[start : start + size]))
        sums = sums.merge(writer.sums)
    write_index(path, classes, {split: SplitMeta(len(samples), names, counts)}, sums, {"codec": codec})
    return path


def write_checkpoint(path, classes, mean_image, calibrate=None, seed: int = 0) -> Path:
    """A paper-net checkpoint whose predictions depend on the image (unlike the paper's N(0, 0.01)
    init, whose outputs barely move): torch's default init, a sharper fc8 and, given uint8
    images [N, 256, 256, 3] as `calibrate`, fc8's bias set so their mean logit is 0 per class."""
    from dataclasses import asdict

    from alexnet_cli.checkpoint import save_checkpoint
    from alexnet_cli.data.transforms import center_crop, normalize, preprocess_from_stats
    from alexnet_cli.config import ModelConfig
    from alexnet_cli.model import AlexNet

    torch.manual_seed(seed)
    model = AlexNet(num_classes=len(classes)).eval()
    for m in model.modules():
        if m is not model and hasattr(m, "reset_parameters"):
            m.reset_parameters()
    preprocess = preprocess_from_stats(mean_image)
    with torch.no_grad():
        model.fc8.weight.mul_(30)
        if calibrate is not None:
            features = []
            hook = model.fc8.register_forward_hook(lambda m, inputs, out: features.append(inputs[0]))
            model(center_crop(normalize(torch.as_tensor(calibrate).permute(0, 3, 1, 2), preprocess)))
            hook.remove()
            model.fc8.bias.copy_(-model.fc8.weight @ features[0].mean(0))
    save_checkpoint(
        path,
        {
            "model": model.state_dict(),
            "model_config": asdict(ModelConfig(num_classes=len(classes))),
            "classes": [list(c) for c in classes],
            "preprocess": preprocess,
        },
    )
    return Path(path)


@pytest.fixture(scope="session")
def eval_set(shared_data, tmp_path_factory):
    """7 real ImageNet images as a raw-codec 'val' split over 3 shards, 8 classes (class 0 has two
    images, class 7 none), and a paper-net checkpoint for those classes (see write_checkpoint)."""
    from types import SimpleNamespace

    import numpy as np

    from alexnet_cli.classes import class_name
    from alexnet_cli.data.imaging import load_256

    root = tmp_path_factory.mktemp("eval_set")
    files = sorted((shared_data / "imagenet-sample").glob("*.JPEG"))[::111][:8]
    classes = [(f.name[:9], class_name(f.name[:9])) for f in files]
    pixels = np.stack([load_256(f) for f in files[:7]])
    labels = [0, 1, 2, 3, 4, 5, 0]
    data = write_dataset(
        root / "data.h5", [(p, y, str(f)) for p, y, f in zip(pixels, labels, files)], classes, shard_size=3
    )
    checkpoint = write_checkpoint(root / "ckpt.pt", classes, pixels.mean(0), calibrate=pixels)
    return SimpleNamespace(root=root, data=data, checkpoint=checkpoint, classes=classes, pixels=pixels, labels=labels)


@pytest.fixture(scope="session")
def torchvision_weights(tmp_path_factory) -> Path:
    """An untrained torchvision AlexNet's state_dict, saved as torchvision's downloads are."""
    from torchvision.models import alexnet

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("torchvision") / "alexnet-owt-untrained.pth"
    torch.save(alexnet().state_dict(), path)
    return path


@pytest.fixture
def torch_home(torchvision_weights, tmp_path, monkeypatch) -> Path:
    """A TORCH_HOME whose hub cache already holds torchvision's AlexNet file (the untrained
    weights above, linked under the real file name), so `torchvision` resolves offline."""
    from torchvision.models import AlexNet_Weights

    home = tmp_path / "torch-home"
    cached = home / "hub" / "checkpoints" / AlexNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[-1]
    cached.parent.mkdir(parents=True)
    cached.symlink_to(torchvision_weights)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def cli_in_process(capsys, *args) -> tuple[int, str, str]:
    """Run `alexnet ARGS` in this process (no interpreter start-up): (exit code, stdout, stderr)."""
    from alexnet_cli.cli import main

    with pytest.raises(SystemExit) as e:
        main([*map(str, args)])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return e.value.code or 0, out, err


def make_dataset(root: Path, classes: int = 2, train_per_class: int = 4, val_per_class: int = 2,
                 codec: str = "jpeg", train_shards: int = 2, seed: int = 0) -> Path:
    """A tiny prepared dataset (index + shards) written with the format module: each class a
    distinct colour with noise and a bright square in a class-dependent place, so that a few
    steps of training can tell the classes apart. Returns the index path."""
    import numpy as np

    from alexnet_cli.data.format import shard_name
    from alexnet_cli.data.format.index import SplitMeta, write_index
    from alexnet_cli.data.format.shards import ShardWriter
    from alexnet_cli.data.format.stats import PixelSums

    root.mkdir(parents=True, exist_ok=True)
    index = root / "tiny.h5"
    rng = np.random.default_rng(seed)
    palette = rng.integers(30, 226, size=(classes, 3))

    def image(label: int) -> np.ndarray:
        pixels = palette[label] + rng.normal(0, 25, size=(256, 256, 3))
        y, x = 32 + 48 * (label % 4), 32 + 48 * (label // 4 % 4)
        pixels[y : y + 64, x : x + 64] = 250
        return pixels.clip(0, 255).astype(np.uint8)

    splits, train_sums = {}, PixelSums()
    for split, per_class, shards in (("train", train_per_class, train_shards), ("val", val_per_class, 1)):
        labels = [c for c in range(classes) for _ in range(per_class)]  # class by class, as prep writes
        bounds = np.linspace(0, len(labels), shards + 1).astype(int)
        names, counts = [], []
        for k in range(shards):
            name = shard_name(index, split, k)
            writer = ShardWriter(root / name, split, k, codec)
            for j in range(bounds[k], bounds[k + 1]):
                writer.add(image(labels[j]), labels[j], f"{split}/c{labels[j]}/{j}.JPEG")
            writer.close()
            if split == "train":
                train_sums = train_sums.merge(writer.sums)
            names.append(name)
            counts.append(int(bounds[k + 1] - bounds[k]))
        splits[split] = SplitMeta(len(labels), names, counts)
    class_table = [(f"n{c:08d}", f"class {c}") for c in range(classes)]
    write_index(index, class_table, splits, train_sums, {"codec": codec})
    return index


class Losses(TrainProgress):
    """Training progress that records each step's loss and shows nothing."""

    def __init__(self):
        super().__init__(enabled=False)
        self.values = []

    def step(self, step, loss, lr, images):
        self.values.append(loss)


class CpuJpegs:
    """The GPU decode path's stand-in for nvJPEG: the CPU decoder, [3, H, W] like nvJPEG's
    output; records how many JPEGs each call got."""

    def __init__(self):
        self.calls = []

    def __call__(self, jpegs):
        from alexnet_cli.data.format.codec import decode_image

        self.calls.append(len(jpegs))
        return [torch.from_numpy(decode_image(j.numpy(), "jpeg")).permute(2, 0, 1) for j in jpegs]
