"""Files written by an earlier alexnet-cli still load and give the same results: a dataset, a
best.pt and a last.pt made by the code of commit OLD (before the redesign of issue 11), read by
this checkout. The old code comes from git history; without it (a shallow clone, a tarball)
the tests skip.

What the old code writes, and what it computed from its own files, is the reference:
- every stored image decodes to the same pixels, and the statistics read the same;
- eval (10 crops) and predict give the old numbers;
- resuming the old last.pt (with the recipe it was trained with, which must be asked for now that
  the defaults are the paper's) continues to the same weights as the old code running on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from tests.conftest import REPO_ROOT

OLD = "382e2af"  # main before the redesign (issue 11)


@pytest.fixture(scope="module")
def old(tmp_path_factory):
    """The old package, a dataset, checkpoints and results it wrote (all by the old code)."""
    if not (REPO_ROOT / ".git").exists():
        pytest.skip("no git history in this checkout: the old code cannot be extracted")
    if subprocess.run(["git", "-C", str(REPO_ROOT), "cat-file", "-e", f"{OLD}^{{commit}}"], capture_output=True).returncode:
        pytest.skip(f"commit {OLD} is not in this clone's history (shallow clone?)")
    root = tmp_path_factory.mktemp("compat")
    code = root / "code"
    code.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", OLD, "alexnet_cli"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(code)], input=archive.stdout, check=True)
    script = textwrap.dedent("""
        import hashlib, json, sys
        import numpy as np, torch
        from alexnet_cli.demo_data import make_demo_images
        from alexnet_cli.data.prep import PrepConfig, prepare
        from alexnet_cli.data.format import PreparedDataset
        from alexnet_cli.train import TrainConfig, train
        from alexnet_cli.progress import TrainProgress
        from alexnet_cli.evaluate import EvalConfig, run_eval, load_classifier, devices_for
        from alexnet_cli.predict import collect_inputs, predict
        root = sys.argv[1]
        make_demo_images(root + "/images", 2, 1, 0)
        prepare(root + "/images", root + "/ds.h5", PrepConfig(workers=1, shard_size=7))
        ds = PreparedDataset(root + "/ds.h5")
        pixels = {s: hashlib.sha256(b"".join(ds.split(s).image(i).tobytes() for i in range(ds.splits[s].images))).hexdigest()
                  for s in ds.splits}
        quiet = TrainProgress(enabled=False)
        base = dict(data=root + "/ds.h5", batch_size=10, workers=0, bias_init=0.1, lr=0.005, checkpoint_minutes=1e9)
        train(TrainConfig(run_dir=root + "/run", epochs=1, **base), quiet)
        train(TrainConfig(run_dir=root + "/straight", epochs=2, **base), quiet)
        ev = run_eval(EvalConfig(root + "/ds.h5", "val", ten_crop=True, gpus=0, batch_size=4, workers=0), root + "/run/best.pt")
        classifier = load_classifier(devices_for(0), root + "/run/best.pt")
        import glob
        files = sorted(glob.glob(root + "/images/val/*"))[:2]
        preds = [p.predictions for p in predict(classifier, collect_inputs(files), 3)]
        json.dump({"pixels": pixels, "eval": ev.summary(), "predict": preds,
                   "mean_rgb": ds.stats.mean_rgb.tolist()}, open(root + "/old.json", "w"))
    """)
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-c", script, str(root)], cwd=root, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, json.loads((root / "old.json").read_text())


def test_an_old_dataset_reads_the_same_pixels_and_statistics(old):
    import hashlib

    from alexnet_cli.data.format.index import PreparedDataset

    root, ref = old
    ds = PreparedDataset(root / "ds.h5")
    for split, digest in ref["pixels"].items():
        reader = ds.split(split)
        got = hashlib.sha256(b"".join(reader.image(i).tobytes() for i in range(len(reader)))).hexdigest()
        assert got == digest, split
    assert ds.stats.mean_rgb.tolist() == ref["mean_rgb"]


def test_an_old_checkpoint_evaluates_and_predicts_as_before(old):
    from alexnet_cli.classifier import load_classifier
    from alexnet_cli.config import EvalConfig
    from alexnet_cli.evaluate import run_eval
    from alexnet_cli.predict import collect_inputs, predict

    root, ref = old
    got = run_eval(EvalConfig(root / "ds.h5", "val", ten_crop=True, gpus=0, batch_size=4, workers=0), root / "run/best.pt")
    s = got.summary()
    assert (s["top1_correct"], s["top5_correct"], s["images"]) == (
        ref["eval"]["top1_correct"], ref["eval"]["top5_correct"], ref["eval"]["images"])
    assert s["loss"] == pytest.approx(ref["eval"]["loss"], rel=1e-6)
    classifier = load_classifier([torch.device("cpu")], root / "run/best.pt")
    files = sorted(str(p) for p in (root / "images/val").iterdir())[:2]
    preds = [p.predictions for p in predict(classifier, collect_inputs(files), 3)]
    for new_rows, old_rows in zip(preds, ref["predict"], strict=True):
        assert [r["wnid"] for r in new_rows] == [r["wnid"] for r in old_rows]
        assert np.allclose([r["prob"] for r in new_rows], [r["prob"] for r in old_rows], rtol=1e-5, atol=1e-7)


def test_an_old_last_pt_resumes_to_the_old_codes_weights(old, tmp_path):
    import shutil

    from alexnet_cli.config import TrainConfig
    from alexnet_cli.errors import InputError
    from alexnet_cli.progress import TrainProgress
    from alexnet_cli.train import train

    root, _ = old
    run = tmp_path / "run"
    shutil.copytree(root / "run", run)
    base = dict(data=str(root / "ds.h5"), batch_size=10, workers=0, bias_init=0.1, lr=0.005, checkpoint_minutes=1e9)
    # The recipe that code ran (the defaults have since become the paper's): asked for explicitly.
    old_recipe = dict(momentum_form="torch", bias_decay=True, dropout_form="inverted")
    quiet = TrainProgress(enabled=False)
    with pytest.raises(InputError, match="--momentum-form torch \\(now paper\\)"):
        train(TrainConfig(run_dir=str(run), epochs=2, resume="last", **base), quiet)
    summary = train(TrainConfig(run_dir=str(run), epochs=2, resume="last", **base, **old_recipe), quiet)
    assert summary["epochs_completed"] == 2
    resumed = torch.load(run / "last.pt", weights_only=True)
    straight = torch.load(root / "straight/last.pt", weights_only=True)
    different = [k for k in straight["model"] if not torch.equal(resumed["model"][k], straight["model"][k])]
    assert not different, f"weights differ in {different}"
    for key in ("train_loss", "train_top1", "val_loss", "val_top1"):
        assert resumed["metrics"][1][key] == straight["metrics"][1][key], key


def test_an_old_checkpoint_exports_the_network_it_was_trained_as(old, tmp_path):
    """An old best.pt was trained with inverted dropout (its model_config predates the choice):
    its ONNX export must score like the old code's predict, not scale fc6/fc7 by 0.5."""
    pytest.importorskip("onnxruntime")
    import onnxruntime

    from alexnet_cli.config import ExportConfig
    from alexnet_cli.data.imaging import load_256
    from alexnet_cli.export import run_export

    root, ref = old
    run_export(root / "run/best.pt", ExportConfig(tmp_path / "old.onnx"))
    session = onnxruntime.InferenceSession(str(tmp_path / "old.onnx"), providers=["CPUExecutionProvider"])
    files = sorted(p for p in (root / "images/val").iterdir())[:2]
    for folder, old_rows in zip(files, ref["predict"], strict=True):
        image = sorted(folder.iterdir())[0] if folder.is_dir() else folder
        (logits,) = session.run(None, {session.get_inputs()[0].name: load_256(image)[None]})
        probs = torch.softmax(torch.from_numpy(logits[0]).double(), 0)
        top = probs.topk(3)
        assert np.allclose(top.values.numpy(), [r["prob"] for r in old_rows], rtol=1e-4, atol=1e-6)
