"""`alexnet eval`: crops, top-k counting, the whole split, torchrun, torchvision weights, refusals."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms as T

from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.imaging import load_256
from alexnet_cli.accuracy import class_counts, topk_correct
from alexnet_cli.classifier import load_classifier
from alexnet_cli.config import EvalConfig
from alexnet_cli.data.transforms import network_input, normalize, preprocess_from_stats, torchvision_preprocess
from alexnet_cli.devices import placement
from alexnet_cli.evaluate import evaluate, run_eval
from tests.conftest import REPO_ROOT, CpuJpegs, cli_in_process, run_cli, write_dataset
from tests.reliability_helpers import CodePayload

CPU = [torch.device("cpu")]


# --------------------------------------------------------------------------------------------
# Crops


MEAN_IMAGE = np.arange(256 * 256 * 3).reshape(256, 256, 3) % 251  # no two crops see the same means


@pytest.mark.parametrize("preprocess", [preprocess_from_stats(MEAN_IMAGE), torchvision_preprocess()])
def test_ten_crops_equal_torchvision_TenCrop(shared_data, preprocess):
    fixtures = shared_data / "fixtures"
    files = [fixtures / "imagenet_named/n01440764_tench.JPEG", fixtures / "other_formats/camera.png"]
    images = torch.from_numpy(np.stack([load_256(f) for f in files]))
    crops = network_input(images, preprocess, ten_crop=True)
    assert crops.shape == (20, 3, 224, 224)
    for i in range(2):
        whole = normalize(images[i : i + 1].permute(0, 3, 1, 2), preprocess)[0]
        expected = torch.stack(T.TenCrop(224)(whole))
        assert torch.equal(crops[10 * i : 10 * i + 10], expected)
        assert torch.equal(network_input(images[i : i + 1], preprocess, ten_crop=False)[0], T.CenterCrop(224)(whole))


# --------------------------------------------------------------------------------------------
# Counting


def test_topk_correct_and_class_counts_by_hand():
    probs = torch.tensor(
        [
            [0.50, 0.20, 0.10, 0.10, 0.05, 0.05],  # label 0: first -> top-1 and top-5
            [0.30, 0.25, 0.20, 0.10, 0.10, 0.05],  # label 5: last of six -> neither
            [0.05, 0.40, 0.20, 0.15, 0.12, 0.08],  # label 3: third -> top-5 only
            [0.10, 0.10, 0.10, 0.10, 0.50, 0.20],  # label 4: first -> both
        ]
    )
    labels = torch.tensor([0, 5, 3, 4])
    hits = topk_correct(probs, labels)
    assert hits.tolist() == [[True, False, False, True], [True, False, True, True]]
    assert topk_correct(probs, labels, ks=(2,)).tolist() == [[True, False, False, True]]
    counts = class_counts(hits, labels, 6)
    assert counts.tolist() == [
        [1, 0, 0, 1, 1, 1],  # images per class
        [1, 0, 0, 0, 1, 0],  # top-1 hits
        [1, 0, 0, 1, 1, 0],  # top-5 hits
    ]


def test_top5_of_fewer_than_five_classes_counts_every_image():
    probs = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.2, 0.7]])
    assert topk_correct(probs, torch.tensor([2, 0])).tolist() == [[False, False], [True, True]]


# --------------------------------------------------------------------------------------------
# The whole split against an independent computation


def _reference(eval_set, ten_crop: bool) -> tuple[list[int], list[int], float]:
    """Per-image top-1/top-5 hits and mean loss, via torchvision's crops on each image alone."""
    ckpt = torch.load(eval_set.checkpoint, weights_only=True)
    from alexnet_cli.model import AlexNet

    model = AlexNet(num_classes=len(eval_set.classes)).eval()
    model.load_state_dict(ckpt["model"])
    mean = ckpt["preprocess"]["mean_image"]
    top1, top5, loss = [], [], 0.0
    with torch.no_grad():
        for pixels, label in zip(eval_set.pixels, eval_set.labels):
            x = torch.from_numpy(pixels).permute(2, 0, 1).float() - mean
            crops = torch.stack(T.TenCrop(224)(x)) if ten_crop else T.CenterCrop(224)(x)[None]
            p = F.softmax(model(crops), dim=1).mean(0)
            rank = int((p > p[label]).sum())
            top1.append(rank < 1)
            top5.append(rank < 5)
            loss -= float(torch.log(p[label]))
    return top1, top5, loss / len(eval_set.labels)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_eval_equals_a_per_image_torchvision_computation(eval_set, ten_crop):
    # batches of 3 images (3 batches) for the center crop; for 10 crops 1 batch, passes of 32 crops
    config = EvalConfig(eval_set.data, ten_crop=ten_crop, gpus=0, batch_size=32 if ten_crop else 3, workers=0)
    result = run_eval(config, eval_set.checkpoint)
    top1, top5, loss = _reference(eval_set, ten_crop)
    assert 0 < sum(top5) < len(top5)  # the fixture's net is neither useless nor perfect
    assert (result.images, result.crops) == (7, 10 if ten_crop else 1)
    assert (result.top1_correct, result.top5_correct) == (sum(top1), sum(top5))
    assert result.loss == pytest.approx(loss, rel=1e-5)
    per_class = result.per_class()
    assert [r["images"] for r in per_class] == [2, 1, 1, 1, 1, 1, 0, 0]
    assert per_class[0]["top5"] == 50.0 * (top5[0] + top5[6])
    assert per_class[7]["top1"] == ""


def test_eval_with_gpu_decoding_scores_as_cpu_decoding(eval_set, tmp_path, monkeypatch):
    """`alexnet eval --decode gpu` with the CPU decoder standing in for nvJPEG: the workers
    ship the stored JPEGs, the batches are decoded by the device path, and every count and the
    loss equal CPU decoding's, center and 10 crops."""
    from alexnet_cli.data import gpu_decode

    jpeg = write_dataset(
        tmp_path / "jpeg.h5", [(p, y, "x") for p, y in zip(eval_set.pixels, eval_set.labels)], eval_set.classes,
        shard_size=3, codec="jpeg",
    )
    cpu_jpegs = CpuJpegs()
    monkeypatch.setattr(gpu_decode, "nvjpeg", lambda device: cpu_jpegs)
    for ten_crop in (False, True):
        results = {
            decode: run_eval(EvalConfig(jpeg, ten_crop=ten_crop, gpus=0, batch_size=4, workers=2, decode=decode),
                             eval_set.checkpoint)
            for decode in ("cpu", "gpu")
        }
        cpu, gpu = results["cpu"], results["gpu"]
        assert (gpu.images, gpu.top1_correct, gpu.top5_correct) == (cpu.images, cpu.top1_correct, cpu.top5_correct)
        assert torch.equal(gpu.counts, cpu.counts) and gpu.loss == cpu.loss
    assert cpu_jpegs.calls == [4, 3, 4, 3]  # two batches a run, decoded by the device path


def test_eval_cli_json_schema_per_class_csv_and_no_overwrite(eval_set, tmp_path, capsys):
    out = tmp_path / "per_class.csv"
    args = ["eval", eval_set.checkpoint, "--json", "--per-class", out, "--batch-size", "4", "--gpus", "0"]
    r = run_cli(*args, env={"ALEXNET_DATA": str(eval_set.data)})  # default worker processes
    assert r.returncode == 0, r.stderr.decode()
    s = json.loads(r.stdout)
    expected_types = {"top1": float, "top5": float, "top1_error": float, "top5_error": float, "loss": float,
                      "images": int, "crops": int, "images_per_s": float, "top1_correct": int, "top5_correct": int}
    assert {k: type(s[k]) for k in expected_types} == expected_types
    assert (s["images"], s["crops"], s["split"]) == (7, 1, "val")
    assert s["top1"] == pytest.approx(100 * s["top1_correct"] / 7) and s["top1"] + s["top1_error"] == 100
    assert s["top5"] + s["top5_error"] == 100 and s["top5"] >= s["top1"] and s["images_per_s"] > 0
    rows = list(csv.DictReader(out.open()))
    assert [r["wnid"] for r in rows] == [w for w, _ in eval_set.classes]
    assert list(rows[0]) == ["index", "wnid", "name", "images", "top1", "top5"]
    hits = sum(int(r["images"]) * float(r["top1"]) / 100 for r in rows if r["top1"])
    assert round(hits) == s["top1_correct"]

    before = out.read_bytes()
    code, _, err = cli_in_process(capsys, *args, "--data", eval_set.data)
    assert code == 2 and "already exists" in err and "--force" in err
    assert out.read_bytes() == before
    out.write_text("mine")
    assert cli_in_process(capsys, *args, "--data", eval_set.data, "--force")[0] == 0
    assert out.read_text().startswith("index,wnid,name,images,top1,top5")


def test_distributed_eval_with_two_gloo_processes_equals_single_process(eval_set, tmp_path, capsys):
    """7 images over 2 ranks (4 + 3, across shard boundaries), 10 crops: same counts, same CSV."""
    common = ["--data", str(eval_set.data), "--ten-crop", "--json", "--gpus", "0", "--batch-size", "16", "--workers", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "alexnet_cli",
           "eval", str(eval_set.checkpoint), *common, "--per-class", str(tmp_path / "two.csv")]
    two = subprocess.run(cmd, env=env, capture_output=True, timeout=300)
    assert two.returncode == 0, two.stderr.decode()[-3000:]
    code, out, err = cli_in_process(capsys, "eval", eval_set.checkpoint, *common, "--per-class", tmp_path / "one.csv")
    assert code == 0, err
    a, b = json.loads(two.stdout), json.loads(out)  # one object: only rank 0 prints
    assert (a["world_size"], b["world_size"]) == (2, 1)
    for key in ("images", "crops", "top1_correct", "top5_correct", "top1", "top5"):
        assert a[key] == b[key], key
    assert a["loss"] == pytest.approx(b["loss"], rel=1e-6)
    assert (tmp_path / "two.csv").read_text() == (tmp_path / "one.csv").read_text()


# --------------------------------------------------------------------------------------------
# torchvision's weights


def test_torchvision_weights_on_an_imagenet_subset(eval_set, torchvision_weights, capsys):
    """A 1000-class torchvision state_dict scores a dataset of 8 ImageNet classes (labels mapped
    by wnid), with torchvision's mean/std: equal to torchvision's own pipeline, image by image."""
    code, out, err = cli_in_process(capsys, "eval", "--arch", "torchvision", "--weights", torchvision_weights,
                          "--data", eval_set.data, "--json", "--gpus", "0", "--workers", "0")
    assert code == 0, err
    s = json.loads(out)

    from torchvision.models import alexnet

    from alexnet_cli.classes import wnid_to_info

    model = alexnet().eval()
    model.load_state_dict(torch.load(torchvision_weights, weights_only=True))
    tv = T.Compose([T.ToTensor(), T.CenterCrop(224), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        probs = F.softmax(model(torch.stack([tv(p) for p in eval_set.pixels])), dim=1)
    labels = torch.tensor([wnid_to_info()[eval_set.classes[y][0]].index for y in eval_set.labels])
    hits = topk_correct(probs, labels)
    assert (s["top1_correct"], s["top5_correct"]) == (int(hits[0].sum()), int(hits[1].sum()))
    assert s["loss"] == pytest.approx(float(-probs.gather(1, labels[:, None]).log().mean()), rel=1e-4)


# --------------------------------------------------------------------------------------------
# Refusals: one line, exit 2, no traceback


def test_a_pickle_carrying_code_is_refused_and_never_run(eval_set, tmp_path, capsys):
    marker = tmp_path / "ran"
    evil = tmp_path / "alexnet-owt-evil.pth"
    torch.save({"features.0.weight": torch.zeros(1), "x": CodePayload(marker)}, evil)
    r = run_cli("eval", "--arch", "torchvision", "--weights", evil, "--data", eval_set.data, "--gpus", "0")
    err = r.stderr.decode()
    assert r.returncode == 2 and "refused to load" in err and str(evil) in err
    assert "Traceback" not in err and err.strip().count("\n") == 0
    code, _, err = cli_in_process(capsys, "eval", evil, "--data", eval_set.data, "--gpus", "0")
    assert code == 2 and "refused to load" in err
    assert not marker.exists()


def test_refusals(eval_set, torchvision_weights, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALEXNET_DATA", raising=False)
    monkeypatch.delenv("ALEXNET_CHECKPOINT", raising=False)
    from torchvision.models import alexnet

    ten = tmp_path / "ten-classes.pth"
    torch.save(alexnet(num_classes=10).state_dict(), ten)
    other = tmp_path / "linear.pth"
    torch.save(torch.nn.Linear(4, 2).state_dict(), other)
    data = ["--data", eval_set.data, "--gpus", "0"]
    cases = [
        (["--arch", "torchvision", "--weights", ten, *data], "shape of classifier.6.weight is (10, 4096)"),
        (["--arch", "torchvision", "--weights", other, *data], "weights do not fit this architecture"),
        (["--arch", "torchvision", "--weights", eval_set.checkpoint, *data], "is an alexnet-cli checkpoint"),
        ([torchvision_weights, *data], "not an alexnet-cli checkpoint (for torchvision weights use --arch"),
        (["--weights", torchvision_weights, *data], "add --arch torchvision"),
        (["--arch", "torchvision", *data], "needs --weights"),
        ([eval_set.checkpoint, "--arch", "torchvision", "--weights", torchvision_weights, *data], "not both"),
        ([eval_set.checkpoint, "--arch", "torchvision", *data], "holds a 'paper' network, not --arch torchvision"),
        ([eval_set.checkpoint, "--split", "train", *data], "has no 'train' split"),
        ([eval_set.checkpoint, "--gpus", "3", "--data", eval_set.data], "choose 0 (CPU), 1"),
        ([eval_set.checkpoint], "set ALEXNET_DATA"),
        ([eval_set.checkpoint, "--data", tmp_path / "missing.h5"], "run `alexnet prep"),
        (["--data", eval_set.data], "set ALEXNET_CHECKPOINT"),
    ]
    cases.append(([eval_set.checkpoint, *data, "--decode", "tpu"], "--decode tpu: choose one of cpu, gpu"))
    if not torch.cuda.is_available():
        cases.append(([eval_set.checkpoint, "--gpus", "1", "--data", eval_set.data], "needs 1 GPU(s) on this machine"))
        cases.append(([eval_set.checkpoint, *data, "--decode", "gpu"], "--decode gpu needs a CUDA device"))
    for args, message in cases:
        code, out, err = cli_in_process(capsys, "eval", *args)
        assert (code, out) == (2, ""), (args, err)
        assert message in err and err.strip().count("\n") == 0, (args, err)


def test_dataset_classes_the_network_lacks_are_refused(eval_set, tmp_path, capsys):
    data = write_dataset(tmp_path / "other.h5", [(eval_set.pixels[0], 0, "x")], [("n99999999", "unknown thing")])
    code, _, err = cli_in_process(capsys, "eval", eval_set.checkpoint, "--data", data, "--gpus", "0")
    assert code == 2 and "n99999999" in err and "not among the network's 8 classes" in err


def test_two_tower_split_on_cpu_devices_gives_the_same_counts(eval_set):
    """--gpus 2 places tower 1 on a second device; ("cpu", "cpu") runs that code path here."""
    config = EvalConfig(eval_set.data, gpus=0, batch_size=4, workers=0)
    dataset = PreparedDataset(eval_set.data)
    whole = evaluate(load_classifier(CPU, eval_set.checkpoint), dataset, config)
    split = evaluate(load_classifier(CPU * 2, eval_set.checkpoint), dataset, config)
    assert (split.top1_correct, split.top5_correct) == (whole.top1_correct, whole.top5_correct)
    assert torch.equal(split.counts, whole.counts)
    assert placement(0).devices == CPU


def test_checkpoint_whose_class_list_does_not_fit_is_refused(eval_set, tmp_path, capsys):
    from dataclasses import asdict

    from alexnet_cli.checkpoint import save_checkpoint
    from alexnet_cli.config import ModelConfig

    bad = tmp_path / "five.pt"  # 8 class names for a 5-way fc8 (the weights are never reached)
    save_checkpoint(bad, {"model": {}, "model_config": asdict(ModelConfig(num_classes=5)),
                          "classes": [list(c) for c in eval_set.classes], "preprocess": torchvision_preprocess()})
    code, _, err = cli_in_process(capsys, "eval", bad, "--data", eval_set.data, "--gpus", "0")
    assert code == 2 and "class list" in err
