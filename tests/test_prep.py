"""`alexnet prep` end to end on small real-image trees: contents, statistics, determinism,
archives, skips, errors, locking and resume after kill -9."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from alexnet_cli.data import devkit as dk
from alexnet_cli.data.format.codec import decode_image
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.data.imaging import load_256
from alexnet_cli.config import PrepConfig
from alexnet_cli.data.prep import output_lock, prepare
from tests.conftest import REPO_ROOT, run_cli
from tests.prep_helpers import (
    devkit_archive,
    imagenet_tree,
    index_stats,
    official_archives,
    sample_files,
    shard_contents,
)


@pytest.fixture(scope="module")
def tree(shared_data, tmp_path_factory) -> Path:
    """ImageNet root: 3 classes x 3 train images (224x224) plus 2 large real JPEGs, val folders."""
    root = imagenet_tree(shared_data, tmp_path_factory.mktemp("tree") / "imagenet", per_class=3, val_per_class=2)
    wnid = sorted((root / "train").iterdir())[1]
    for f in sample_files(shared_data, 2, start=500):
        (wnid / f.name).write_bytes(f.read_bytes())
    return root


@pytest.fixture(scope="module")
def raw_prep(tree, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raw") / "raw.h5"
    prepare(tree, out, PrepConfig(codec="raw", shard_size=4, workers=2))
    return out


def test_prep_stores_the_crops_labels_and_sources(tree, raw_prep):
    ds = PreparedDataset(raw_prep)
    assert [w for w, _ in ds.classes] == sorted(p.name for p in (tree / "train").iterdir())
    assert ds.classes[0] == ("n01440764", "tench")
    assert {k: v.images for k, v in ds.splits.items()} == {"train": 11, "val": 6}
    assert ds.splits["train"].shard_images == [4, 4, 3]
    train = ds.split("train")
    sources = train.sources()
    assert sources == sorted(sources)
    for i, src in enumerate(sources):
        assert ds.classes[int(train.labels[i])][0] == src.split("/")[1]
        assert np.array_equal(train.image(i), load_256(tree / src))  # raw: exactly load_256's pixels
    assert ds.settings["codec"] == "raw" and "antialiased bilinear" in ds.settings["resample"]
    assert ds.settings["stats_on"].startswith("decoded 256x256 crops")


def test_mean_and_pca_match_numpy_on_the_stored_pixels(raw_prep):
    ds = PreparedDataset(raw_prep)
    train = ds.split("train")
    images = np.stack([train.image(i) for i in range(len(train))]).astype(np.float64)
    pixels = images.reshape(-1, 3)
    np.testing.assert_allclose(ds.stats.mean_rgb, pixels.mean(0), rtol=1e-12)
    np.testing.assert_allclose(ds.stats.mean_image, images.mean(0), rtol=1e-6)
    cov = np.cov(pixels.T / 255.0, bias=True)
    values, vectors = np.linalg.eigh(cov)
    np.testing.assert_allclose(ds.stats.eigenvalues, values[::-1], rtol=1e-9)
    assert np.all(np.diff(ds.stats.eigenvalues) < 0)
    for k in range(3):  # columns are the components (sign is a convention)
        v = ds.stats.eigenvectors[:, k]
        np.testing.assert_allclose(cov @ v, ds.stats.eigenvalues[k] * v, atol=1e-12)
        assert abs(abs(v @ vectors[:, 2 - k]) - 1) < 1e-9


def test_jpeg_output_has_the_same_statistics_and_close_pixels(tree, raw_prep, tmp_path):
    out = tmp_path / "jpeg.h5"
    prepare(tree, out, PrepConfig(shard_size=4, workers=1))
    raw, jpeg = PreparedDataset(raw_prep), PreparedDataset(out)
    assert {k: index_stats(out)[k].tolist() for k in index_stats(out)} == {
        k: index_stats(raw_prep)[k].tolist() for k in index_stats(raw_prep)
    }  # computed before the codec
    a, b = raw.split("val"), jpeg.split("val")
    for i in range(len(a)):
        err = np.mean((a.image(i).astype(float) - b.image(i)) ** 2)
        assert 10 * np.log10(255**2 / err) > 32
    assert jpeg.settings["quality"] == 90 and jpeg.settings["jpeg_subsampling"] == "444"


def test_output_does_not_depend_on_workers(tree, tmp_path):
    outs = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}" / "data.h5"
        out.parent.mkdir()
        prepare(tree, out, PrepConfig(shard_size=3, workers=workers, chunk_images=2))
        outs.append(out)
    assert shard_contents(outs[0]) == shard_contents(outs[1])
    one, two = index_stats(outs[0]), index_stats(outs[1])
    assert all(np.array_equal(one[k], two[k]) for k in one)
    for name in sorted(p.name for p in outs[0].parent.glob("data-*.h5")):
        with h5py.File(outs[0].parent / name) as f, h5py.File(outs[1].parent / name) as g:
            assert f.attrs["sha256"] == g.attrs["sha256"]


def test_official_archives_give_the_same_dataset_as_folders(shared_data, tmp_path):
    tree = imagenet_tree(shared_data, tmp_path / "tree", per_class=2, val_per_class=2, flat_val=True)
    devkit = devkit_archive(shared_data, tmp_path / dk.DEVKIT_ARCHIVE)
    arch = official_archives(tree, tmp_path / "arch")
    prepare(tree, tmp_path / "folders.h5", PrepConfig(devkit=str(devkit), workers=1))
    prepare(arch, tmp_path / "arch.h5", PrepConfig(devkit=str(devkit), workers=2))
    a, b = shard_contents(tmp_path / "folders.h5"), shard_contents(tmp_path / "arch.h5")
    for split in ("train", "val"):
        assert a[split][:2] == b[split][:2]
        assert [s.rsplit("/", 1)[-1] for s in a[split][2]] == [s.rsplit("/", 1)[-1] for s in b[split][2]]
    ds = PreparedDataset(tmp_path / "arch.h5")
    assert ds.settings["layout"] == "archives"
    assert dk.DEVKIT_ARCHIVE in ds.settings["labels_from"]
    # imagenette's one non-ILSVRC val file name has no devkit label: skipped, listed, counted
    assert [(s, r) for s, _, r in ds.skipped] == [("val", f"no label for this file in {devkit}")]
    assert ds.splits["val"].skipped == 1


@pytest.fixture(scope="module")
def awkward(shared_data, tmp_path_factory) -> Path:
    """Real images plus files derived from them: CMYK, PNG named .JPEG, 16-bit PNG, RGBA,
    and three undecodable ones (truncated, zero bytes, HTML named .JPEG)."""
    root = tmp_path_factory.mktemp("awkward") / "src"
    good, bad = root / "good", root / "bad"
    good.mkdir(parents=True)
    bad.mkdir()
    for f in sorted((shared_data / "fixtures" / "imagenet_named").iterdir())[:4]:
        (good / f.name).write_bytes(f.read_bytes())
    for f in sorted((shared_data / "fixtures" / "other_formats").glob("*.png")):
        (good / f.name).write_bytes(f.read_bytes())
    with Image.open(sample_files(shared_data, 1, start=42)[0]) as im:
        photo = im.convert("RGB")
    buf = io.BytesIO()
    photo.convert("CMYK").save(buf, format="JPEG")
    (good / "cmyk.JPEG").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    photo.save(buf, format="PNG")
    (good / "png_named.JPEG").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.fromarray(np.asarray(photo.convert("L")).astype(np.uint16) * 257).save(buf, format="PNG")
    (good / "sixteen_bit.png").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    photo.save(buf, format="JPEG")
    (bad / "truncated.JPEG").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    (bad / "zero.JPEG").write_bytes(b"")
    (bad / "html.jpg").write_bytes(b"<html>moved</html>")
    return root


def test_awkward_files_are_stored_or_skipped_with_reasons(awkward, tmp_path):
    out = tmp_path / "awk.h5"
    result = run_cli("prep", awkward, out, "--json", "--workers", "2", "--shard-size", "5")
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    reasons = {row["path"]: row["reason"] for row in summary["skipped"]}
    assert reasons == {
        "bad/html.jpg": "not an image (or an unsupported format)",
        "bad/truncated.JPEG": "truncated image",
        "bad/zero.JPEG": "not an image (or an unsupported format)",
    }
    good = sorted(p.name for p in (awkward / "good").iterdir())
    assert summary["splits"]["train"] == {"images": len(good), "skipped": 3, "shards": 3, "resumed_shards": 0}
    assert summary["processed"] == len(good) + 3 and summary["output_bytes"] > 0
    ds = PreparedDataset(out)
    assert sorted(p for _, p, _ in ds.skipped) == sorted(reasons)
    train = ds.split("train")
    by_name = dict(zip((s.split("/")[-1] for s in train.sources()), range(len(train))))
    png = load_256(awkward / "good" / "png_named.JPEG")
    assert np.abs(train.image(by_name["cmyk.JPEG"]).astype(int) - png).mean() < 4
    strict = run_cli("prep", awkward, tmp_path / "strict.h5", "--strict", "--workers", "1")
    assert strict.returncode == 1
    assert "could not be used" in strict.stderr.decode() and "Traceback" not in strict.stderr.decode()
    assert not (tmp_path / "strict.h5").exists()


def _one_line_error(result, code: int, text: str) -> None:
    err = result.stderr.decode()
    assert result.returncode == code, err
    assert "Traceback" not in err and err.strip().count("\n") == 0 and text in err, err


def test_bad_input_gives_one_line_errors(tree, tmp_path):
    _one_line_error(run_cli("prep", tmp_path / "missing", tmp_path / "o.h5"), 2, "no such folder")
    (tmp_path / "empty").mkdir()
    _one_line_error(run_cli("prep", tmp_path / "empty", tmp_path / "o.h5"), 2, "no images found")
    _one_line_error(run_cli("prep", tree, tmp_path / "nodir" / "o.h5"), 2, "does not exist")
    _one_line_error(run_cli("prep", tree, tmp_path / "o.h5", "--codec", "png"), 2, "unknown --codec")
    _one_line_error(run_cli("prep", tree, tmp_path / "o.h5", "--split", "test"), 2, "unknown --split")
    (tmp_path / "notes.h5").write_text("mine")
    _one_line_error(run_cli("prep", tree, tmp_path / "notes.h5"), 2, "not an alexnet-cli dataset")
    assert (tmp_path / "notes.h5").read_text() == "mine"


def test_complete_output_is_kept_unless_forced(tree, tmp_path):
    """The same command again (a requeued job) is a no-op that touches nothing; other inputs or
    settings would replace the dataset, which takes --force."""
    out = tmp_path / "d.h5"
    assert run_cli("prep", tree, out, "--split", "val", "--workers", "1").returncode == 0
    files = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
    again = run_cli("prep", tree, out, "--split", "val", "--workers", "1", "--json")
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout)
    assert summary["processed"] == 0 and summary["splits"]["val"]["resumed_shards"] == summary["splits"]["val"]["shards"]
    assert "already complete" in summary["notes"][0]
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == files
    _one_line_error(run_cli("prep", tree, out, "--split", "val", "--quality", "70"), 2, "pass --force")
    _one_line_error(run_cli("prep", tree, out, "--split", "val", "--shard-size", "3"), 2, "pass --force")
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == files
    forced = run_cli("prep", tree, out, "--split", "val", "--force", "--json", "--workers", "1")
    assert forced.returncode == 0
    summary = json.loads(forced.stdout)
    assert summary["splits"]["val"]["resumed_shards"] == 0 and "replaced" in summary["notes"][0]
    assert list(PreparedDataset(out).splits) == ["val"] and PreparedDataset(out).stats is None


def test_a_second_prep_on_the_same_output_is_refused(tree, tmp_path):
    out = tmp_path / "locked.h5"
    with output_lock(out):
        result = run_cli("prep", tree, out, "--workers", "1")
    _one_line_error(result, 1, "another `alexnet prep`")
    assert not out.exists() and not (tmp_path / "locked.h5.lock").exists()


def test_interrupted_run_with_other_settings_is_redone_not_reused(tree, tmp_path):
    out = tmp_path / "r.h5"
    prepare(tree, out, PrepConfig(shard_size=4, workers=1, splits=("val",)))
    out.unlink()  # as if killed just before the index was written
    again = prepare(tree, out, PrepConfig(shard_size=4, workers=1, splits=("val",)))
    assert again.splits["val"].resumed_shards == 2 and again.processed == 0
    out.unlink()
    other = prepare(tree, out, PrepConfig(shard_size=4, workers=1, splits=("val",), quality=70))
    assert other.splits["val"].resumed_shards == 0 and other.processed == 6


def test_resume_after_kill_9_gives_the_uninterrupted_result(shared_data, tmp_path):
    src = tmp_path / "src"
    for k, f in enumerate(sample_files(shared_data, 36, start=100)):
        (src / f"class{k % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"class{k % 3}" / f.name).symlink_to(f)
    reference = tmp_path / "ref" / "d.h5"
    reference.parent.mkdir()
    prepare(src, reference, PrepConfig(shard_size=3, workers=1))

    out = tmp_path / "out" / "d.h5"
    out.parent.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    args = [sys.executable, "-m", "alexnet_cli", "prep", str(src), str(out), "--shard-size", "3", "--workers", "1"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out.parent / "d-train-00000.h5"
    deadline = time.monotonic() + 120
    while not first.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not out.exists(), "prep finished before it could be killed"
    result = run_cli("prep", src, out, "--shard-size", "3", "--workers", "2", "--json")
    assert result.returncode == 0, result.stderr.decode()
    summary = json.loads(result.stdout)
    assert summary["splits"]["train"]["resumed_shards"] >= 1
    assert shard_contents(out) == shard_contents(reference)
    a, b = index_stats(out), index_stats(reference)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not list(out.parent.glob("*.partial")) and not (out.parent / "d.h5.lock").exists()
    verify = run_cli("inspect", out, "--verify", "--json")
    assert verify.returncode == 0 and json.loads(verify.stdout)["verify"]["ok"]


def test_progress_lines_when_not_a_terminal(tree, tmp_path):
    result = run_cli("prep", tree, tmp_path / "p.h5", "--split", "val", "--workers", "1")
    assert result.returncode == 0
    err = result.stderr.decode()
    assert "prep: 6/6 images (100.0%)" in err
    assert "6 images processed" in result.stdout.decode()


def test_decode_image_reads_what_encode_wrote(raw_prep):
    reader = PreparedDataset(raw_prep).split("val")
    data, codec = reader.read_encoded(0)
    assert codec == "raw" and decode_image(data, codec).shape == (256, 256, 3)


def test_file_names_that_are_not_utf8(shared_data, tmp_path):
    src = tmp_path / "src"
    (src / "cls").mkdir(parents=True)
    photo = sample_files(shared_data, 1, start=9)[0].read_bytes()
    with open(os.path.join(os.fsencode(src / "cls"), b"caf\xe9.jpg"), "wb") as f:
        f.write(photo)
    summary = prepare(src, tmp_path / "d.h5", PrepConfig(workers=1))
    assert summary.splits["train"].images == 1
    assert PreparedDataset(tmp_path / "d.h5").split("train").sources() == ["cls/caf\\xe9.jpg"]
