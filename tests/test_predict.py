"""`alexnet predict`: real files of every kind, folders, stdin, bad images, the same numbers as eval."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms as T

from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.imaging import load_256
from alexnet_cli.classifier import load_classifier
from alexnet_cli.data import loader
from alexnet_cli.evaluate import score_split
from alexnet_cli.predict import Failure, Prediction, collect_inputs, predict, top_predictions
from tests.conftest import cli_in_process, run_cli, write_dataset

CPU = [torch.device("cpu")]


@pytest.fixture(scope="module")
def classifier(eval_set):
    return load_classifier(CPU, eval_set.checkpoint)


def _fixture_images(shared_data) -> list:
    return sorted((shared_data / "fixtures/imagenet_named").iterdir()) + sorted(
        p for p in (shared_data / "fixtures/other_formats").iterdir() if p.suffix != ".txt"
    )


def test_fixture_folders_every_real_format_json_schema_and_env_checkpoint(eval_set, shared_data):
    """Both fixture folders (JPEG: grayscale, progressive, CMYK-free Adobe, ICC/EXIF, tiny, extreme
    aspect; PNG RGB/grayscale): every image predicted; the README .txt is not an image extension."""
    folders = [shared_data / "fixtures/imagenet_named", shared_data / "fixtures/other_formats"]
    r = run_cli("predict", *folders, "--json", "--top-k", "3", env={"ALEXNET_CHECKPOINT": str(eval_set.checkpoint)})
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert [o["file"] for o in out] == [str(p) for p in _fixture_images(shared_data)]
    wnids = {w: n for w, n in eval_set.classes}
    for o in out:
        assert list(o) == ["file", "predictions"] and len(o["predictions"]) == 3
        probs = [c["prob"] for c in o["predictions"]]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
        for c in o["predictions"]:
            assert list(c) == ["index", "wnid", "name", "prob"]
            assert (c["wnid"], c["name"]) == (eval_set.classes[c["index"]][0], wnids[c["wnid"]])


def test_derived_cmyk_grayscale_rgba_palette_16bit_and_misnamed_files(classifier, shared_data, tmp_path):
    """Pillow-made variants of a real photo: each is predicted from exactly load_256's pixels."""
    with Image.open(shared_data / "fixtures/other_formats/chelsea.png") as im:
        rgb = im.convert("RGB")
    rgba = rgb.convert("RGBA")
    rgba.putalpha(Image.linear_gradient("L").resize(rgb.size))
    variants = {
        "cmyk.jpg": (rgb.convert("CMYK"), "JPEG"),
        "gray.jpg": (rgb.convert("L"), "JPEG"),
        "rgba.png": (rgba, "PNG"),
        "palette.gif": (rgb.convert("P"), "GIF"),
        "gray16.png": (Image.fromarray((np.asarray(rgb.convert("L"), np.uint16) * 257)), "PNG"),
        "jpeg-named.png": (rgb, "JPEG"),
        "noext": (rgb, "WEBP"),
    }
    for name, (image, fmt) in variants.items():
        image.save(tmp_path / name, format=fmt)
    inputs = collect_inputs([str(tmp_path / n) for n in variants])
    results = list(predict(classifier, inputs, top_k=8, batch_size=4))
    assert all(isinstance(r, Prediction) for r in results), results
    for name, r in zip(variants, results):
        probs = classifier.probabilities(torch.tensor(load_256(tmp_path / name))[None]).cpu()
        expected = top_predictions(probs, classifier.classes, 8)[0]  # a batch of 1, not 4: float noise
        assert r.file == str(tmp_path / name)
        assert [c["index"] for c in r.predictions] == [c["index"] for c in expected]
        assert [c["prob"] for c in r.predictions] == pytest.approx([c["prob"] for c in expected], rel=1e-4)


@pytest.mark.parametrize("ten_crop", [False, True])
def test_predict_equals_eval_after_prep_with_the_raw_codec(classifier, shared_data, tmp_path, ten_crop):
    """A file's probabilities from predict are eval's for that file written into a raw shard."""
    files = [
        shared_data / "fixtures/imagenet_named/n03804744_42.JPEG",
        shared_data / "fixtures/other_formats/camera.png",
        shared_data / "fixtures/imagenet_named/n04238763_slide_rule.JPEG",
    ]
    samples = [(load_256(f), 0, str(f)) for f in files]
    data = write_dataset(tmp_path / "prepped.h5", samples, classifier.classes, codec="raw", shard_size=2)
    reader = PreparedDataset(data).split("val")
    batch = 16  # 3 images a batch; with 10 crops, passes of 16 + 14 crops
    scored = torch.cat([p for p, _ in score_split(classifier, reader, loader.val_batches(3, batch), ten_crop, batch)])
    expected = top_predictions(scored.cpu(), classifier.classes, len(classifier.classes))
    got = list(predict(classifier, collect_inputs([str(f) for f in files]), len(classifier.classes), ten_crop, batch))
    assert [g.predictions for g in got] == expected  # bit for bit


def test_stdin_csv_output_and_no_overwrite(eval_set, shared_data, tmp_path, capsys):
    image = shared_data / "fixtures/imagenet_named/n02123045_tabby.JPEG"
    out = tmp_path / "predictions.csv"
    args = ["predict", "-", image, "--checkpoint", eval_set.checkpoint, "--json", "--csv", out, "--top-k", "2"]
    r = run_cli(*args, input=image.read_bytes())
    assert r.returncode == 0, r.stderr.decode()
    from_stdin, from_file = json.loads(r.stdout)
    assert (from_stdin["file"], from_file["file"]) == ("-", str(image))
    assert from_stdin["predictions"] == from_file["predictions"]
    rows = list(csv.DictReader(out.open()))
    assert [(r["file"], r["rank"]) for r in rows] == [("-", "1"), ("-", "2"), (str(image), "1"), (str(image), "2")]
    assert [float(r["prob"]) for r in rows[2:]] == [c["prob"] for c in from_file["predictions"]]

    code, _, err = cli_in_process(capsys, *args)
    assert code == 2 and "already exists" in err
    assert len(list(csv.DictReader(out.open()))) == 4


def test_folders_are_searched_recursively_for_image_extensions_in_any_case(tmp_path):
    names = ["a/b/c.JPG", "a/x.Png", "a/UPPER.JPEG", "a/deep/er/w.jpeg", "a/t.TIFF", "a/.hidden/y.jpg", "a/._z.jpg",
             "a/notes.txt", "a/data.h5", "a/clip.mpg", "a/noext"]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "empty").mkdir()
    inputs = collect_inputs([str(tmp_path / "a"), str(tmp_path / "a/noext"), str(tmp_path / "empty")])
    expected = sorted(tmp_path / n for n in ["a/b/c.JPG", "a/x.Png", "a/UPPER.JPEG", "a/deep/er/w.jpeg", "a/t.TIFF"])
    assert [i.source for i in inputs[:5]] == expected
    assert inputs[5].source == tmp_path / "a/noext"  # a file named explicitly is read whatever its name
    assert inputs[6].source is None and inputs[6].error.endswith("no image files in this folder")
    assert len(inputs) == 7


def test_bad_images_are_one_line_each_and_the_others_still_predicted(eval_set, shared_data, tmp_path):
    good = shared_data / "fixtures/imagenet_named/n01871265_tusker.JPEG"
    data = good.read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (tmp_path / "empty.jpg").write_bytes(b"")
    readme = shared_data / "fixtures/other_formats/README.sklearn_images.txt"
    bad = [tmp_path / "truncated.jpg", tmp_path / "empty.jpg", readme, tmp_path / "missing.png"]
    r = run_cli("predict", bad[0], good, *bad[1:], "--checkpoint", eval_set.checkpoint, "--json")
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1 and "Traceback" not in r.stderr.decode()
    assert len(err) == 4 and all(str(path) in line for path, line in zip(bad, err)), err
    assert "no such file" in err[3]
    assert [o["file"] for o in json.loads(r.stdout)] == [str(good)]


def test_missing_checkpoint_says_how_to_set_it(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALEXNET_CHECKPOINT", raising=False)
    code, _, err = cli_in_process(capsys, "predict", tmp_path)
    assert code == 2 and "--checkpoint" in err and "ALEXNET_CHECKPOINT" in err


def test_torchvision_weights_give_imagenet_names_and_torchvisions_numbers(torchvision_weights, shared_data, capsys):
    from torchvision.models import alexnet

    from alexnet_cli.classes import imagenet_classes

    image = shared_data / "fixtures/other_formats/coffee.png"
    code, stdout, err = cli_in_process(
        capsys, "predict", image, "--arch", "torchvision", "--weights", torchvision_weights, "--json", "--gpus", "0"
    )
    assert code == 0, err
    (out,) = json.loads(stdout)
    model = alexnet().eval()
    model.load_state_dict(torch.load(torchvision_weights, weights_only=True))
    tv = T.Compose([T.ToTensor(), T.CenterCrop(224), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        probs = F.softmax(model(tv(np.array(load_256(image)))[None]), dim=1)[0]
    top = probs.topk(5)
    assert [c["index"] for c in out["predictions"]] == top.indices.tolist()
    assert [c["prob"] for c in out["predictions"]] == pytest.approx(top.values.tolist(), rel=1e-4)
    table = imagenet_classes()
    assert [(c["wnid"], c["name"]) for c in out["predictions"]] == [(table[i].wnid, table[i].name) for i in top.indices]


def test_failures_keep_their_place_in_input_order(classifier, shared_data):
    good = str(shared_data / "fixtures/imagenet_named/n04356056_sunglasses.JPEG")
    inputs = collect_inputs([good, "/nonexistent.jpg", good])
    results = list(predict(classifier, inputs, top_k=1, batch_size=2))
    assert [type(r) for r in results] == [Prediction, Failure, Prediction]
    assert results[0].predictions == results[2].predictions
    assert results[1].error == "/nonexistent.jpg: no such file or folder"


def test_stdin_bytes_are_decoded_like_the_file(shared_data):
    image = shared_data / "fixtures/other_formats/rocket.jpg"
    (item,) = collect_inputs(["-"], io.BytesIO(image.read_bytes()))
    assert item.name == "-" and np.array_equal(load_256(item.source), load_256(image))
