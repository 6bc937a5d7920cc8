"""`alexnet features`: rows equal to the network's layer outputs for a prepared split and for real
image files, their sources, resume after an interruption, refusals."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch

from alexnet_cli import features as features_module
from alexnet_cli.errors import InputError
from alexnet_cli.classifier import load_classifier
from alexnet_cli.data.transforms import network_input
from alexnet_cli.features import FeaturesConfig, FeaturesFile, run_features
from alexnet_cli.model import layer_output
from alexnet_cli.predict import collect_inputs
from tests.conftest import cli_in_process

CPU = [torch.device("cpu")]


def direct(checkpoint, pixels: np.ndarray, layer: str) -> np.ndarray:
    """The layer's output computed here, in one batch."""
    c = load_classifier(CPU, checkpoint)
    with torch.inference_mode():
        x = network_input(torch.from_numpy(pixels), c.preprocess, ten_crop=False)
        return layer_output(c.model, x, layer).flatten(1).numpy()


def test_a_prepared_split_gives_one_row_per_image_with_its_source_and_label(eval_set, tmp_path):
    out = tmp_path / "val.h5"
    result = run_features(str(eval_set.checkpoint), [str(eval_set.data)],
                          FeaturesConfig(out, layer="fc7", split="val", batch_size=3, workers=0))
    assert (result.rows, result.dim, result.failed) == (7, 4096, [])
    with h5py.File(out, "r") as f:
        assert f.attrs["format"] == "alexnet-cli features" and f.attrs["layer"] == "fc7"
        assert f.attrs["data"] == str(eval_set.data) and f.attrs["split"] == "val"
        np.testing.assert_allclose(f["features"][()], direct(eval_set.checkpoint, eval_set.pixels, "fc7"),
                                   rtol=1e-4, atol=1e-5)
        assert f["index"][()].tolist() == list(range(7)) and f["labels"][()].tolist() == eval_set.labels
        from alexnet_cli.data.format.index import PreparedDataset

        assert list(f["sources"].asstr()[()]) == PreparedDataset(eval_set.data).split("val").sources()
    assert not out.with_name("val.h5.partial").exists()


def test_files_and_folders_cli_json_and_a_bad_image(eval_set, shared_data, tmp_path, capsys):
    folder = shared_data / "fixtures/imagenet_named"
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "files.h5"
    code, stdout, err = cli_in_process(capsys, "features", eval_set.checkpoint, folder, bad, "--out", out,
                                       "--layer", "pool5", "--batch-size", "4", "--json", "--gpus", "0")
    assert code == 1 and err.count(f"skipped {bad}:") == 1, err
    summary = json.loads(stdout)
    good = [i.name for i in collect_inputs([str(folder)])]
    assert (summary["rows"], summary["dim"], summary["inputs"]) == (len(good), 9216, len(good) + 1)
    assert summary["failed"][0].startswith(f"{bad}: ")
    gallery = FeaturesFile(out)
    try:
        assert list(gallery.rows(range(len(good)), "sources")) == good
        assert gallery.rows([0, 0], "index").tolist() == [-1, -1]
    finally:
        gallery.close()


def test_fc8_rows_are_the_logits_predict_scores(eval_set, shared_data, tmp_path):
    files = sorted((shared_data / "fixtures/imagenet_named").iterdir())[:5]
    out = tmp_path / "fc8.h5"
    run_features(str(eval_set.checkpoint), [str(f) for f in files], FeaturesConfig(out, layer="fc8", gpus=0))
    c = load_classifier(CPU, eval_set.checkpoint)
    from alexnet_cli.data.imaging import load_256

    probs = c.probabilities(torch.from_numpy(np.stack([load_256(f) for f in files])))
    with h5py.File(out, "r") as f:
        torch.testing.assert_close(torch.from_numpy(f["features"][()]).softmax(1), probs, rtol=1e-4, atol=1e-6)


def test_an_interrupted_run_resumes_to_the_same_file(eval_set, tmp_path, monkeypatch):
    config = FeaturesConfig(tmp_path / "resumed.h5", layer="fc6", split="val", batch_size=3, workers=0)
    reference = FeaturesConfig(tmp_path / "straight.h5", layer="fc6", split="val", batch_size=3, workers=0)
    run_features(str(eval_set.checkpoint), [str(eval_set.data)], reference)
    real_embed, calls = features_module.embed, []

    def embed_then_stop(*args):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_embed(*args)

    monkeypatch.setattr(features_module, "embed", embed_then_stop)
    notes = []
    with pytest.raises(KeyboardInterrupt):
        run_features(str(eval_set.checkpoint), [str(eval_set.data)], config, say=notes.append)
    partial = tmp_path / "resumed.h5.partial"
    assert not config.out.exists() and partial.exists() and "rerun the same command" in notes[-1]
    with h5py.File(partial, "r") as f:
        assert f.attrs["inputs_done"] == 3 and f["features"].shape == (3, 4096)
    monkeypatch.setattr(features_module, "embed", real_embed)
    same_weights = tmp_path / "same-weights.pt"  # another path to the same weights still resumes
    same_weights.symlink_to(eval_set.checkpoint)
    result = run_features(str(same_weights), [str(eval_set.data)], config, say=notes.append)
    assert result.resumed_at == 3 and "resuming" in notes[-1] and not partial.exists()
    with h5py.File(config.out, "r") as a, h5py.File(reference.out, "r") as b:
        assert np.array_equal(a["features"][()], b["features"][()])
        assert a["sources"].asstr()[()].tolist() == b["sources"].asstr()[()].tolist()


def test_a_partial_of_another_layer_is_started_over(eval_set, tmp_path):
    out = tmp_path / "f.h5"
    with h5py.File(tmp_path / "f.h5.partial", "w") as f:
        f.attrs.update(layer="fc6", inputs_done=3)
    notes = []
    result = run_features(str(eval_set.checkpoint), [str(eval_set.data)],
                          FeaturesConfig(out, layer="pool5", split="val", workers=0), say=notes.append)
    assert result.resumed_at == 0 and result.rows == 7 and "starting over" in notes[0]


def test_refusals_are_one_line(eval_set, shared_data, tmp_path, capsys):
    image = shared_data / "fixtures/imagenet_named/n02123045_tabby.JPEG"
    existing = tmp_path / "existing.h5"
    existing.write_bytes(b"")
    cases = [
        ([eval_set.checkpoint, image, "--out", existing], "already exists; choose another name or add --force"),
        ([eval_set.checkpoint, image, "--out", tmp_path / "f.npy"], "end the file name in .h5"),
        ([eval_set.checkpoint, image, "--out", tmp_path / "f.h5", "--layer", "fc9"], "--layer fc9: choose one of"),
        ([eval_set.checkpoint, eval_set.data, image, "--out", tmp_path / "f.h5"], "give a prepared dataset alone"),
        ([eval_set.checkpoint, eval_set.data, "--out", tmp_path / "f.h5", "--split", "test"], "has no 'test' split"),
        ([eval_set.checkpoint, image, "--out", tmp_path / "f.h5", "--gpus", "2"], "features are computed on one device"),
        ([tmp_path / "nope.pt", image, "--out", tmp_path / "f.h5"], "no such checkpoint"),
        ([eval_set.checkpoint, image, "--out", tmp_path / "no" / "f.h5"], "does not exist; create it"),
    ]
    for args, message in cases:
        code, _, err = cli_in_process(capsys, "features", *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in eval_set.data.parent.glob(f"{eval_set.data.stem}*.h5"):
        (copy / f.name).write_bytes(f.read_bytes())
    next(copy.glob("*-val-00001.h5")).unlink()
    code, _, err = cli_in_process(capsys, "features", eval_set.checkpoint, copy / eval_set.data.name, "--split", "val",
                                  "--out", tmp_path / "f.h5")
    assert code == 2 and "-val-00001.h5: shard missing or unreadable" in err and err.count("\n") == 1, err
    with pytest.raises(InputError, match="none of the 1 inputs could be read"):
        run_features(str(eval_set.checkpoint), [str(tmp_path / "missing.jpg")], FeaturesConfig(tmp_path / "g.h5"))
    assert not (tmp_path / "g.h5").exists() and not (tmp_path / "g.h5.partial").exists()
