"""`alexnet inspect`: the summary (--json), shard verification and PNG export."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.config import PrepConfig
from alexnet_cli.data.prep import prepare
from tests.conftest import run_cli
from tests.prep_helpers import imagenet_tree


@pytest.fixture(scope="module")
def prepared(shared_data, tmp_path_factory) -> Path:
    root = imagenet_tree(shared_data, tmp_path_factory.mktemp("src") / "imagenet", per_class=2, val_per_class=1)
    (root / "train" / "n01440764" / "broken.JPEG").write_bytes(b"")
    out = tmp_path_factory.mktemp("prepared") / "d.h5"
    prepare(root, out, PrepConfig(shard_size=4, workers=1))
    return out


def test_json_summary(prepared):
    result = run_cli("inspect", prepared, "--json")
    assert result.returncode == 0, result.stderr.decode()
    info = json.loads(result.stdout)
    assert info["splits"]["train"] == {"images": 6, "classes": 3, "shards": 2, "skipped": 1}
    assert info["splits"]["val"]["images"] == 3 and info["splits"]["val"]["classes"] == 3
    ds = PreparedDataset(prepared)
    assert np.allclose(info["mean_rgb"], ds.stats.mean_rgb)
    assert np.allclose(info["pca"]["eigenvalues"], ds.stats.eigenvalues)
    vectors = np.asarray(info["pca"]["eigenvectors"])
    assert vectors.shape == (3, 3) and np.allclose(vectors, ds.stats.eigenvectors)
    assert info["classes"][0] == {"index": 0, "wnid": "n01440764", "name": "tench"}
    assert info["skipped"] == [{"split": "train", "path": "train/n01440764/broken.JPEG",
                                "reason": "not an image (or an unsupported format)"}]
    assert info["settings"]["codec"] == "jpeg"


def test_table_output(prepared):
    result = run_cli("inspect", prepared)
    out = result.stdout.decode()
    assert result.returncode == 0
    for text in ("train", "PCA eigenvalues", "tench", "broken.JPEG", "resample"):
        assert text in out


def test_verify_passes_then_finds_a_flipped_byte(prepared, tmp_path):
    ok = run_cli("inspect", prepared, "--verify", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["verify"]["ok"]
    copy = tmp_path / "d.h5"
    for f in prepared.parent.glob("d*.h5"):
        shutil.copy(f, tmp_path / f.name)
    with h5py.File(tmp_path / "d-train-00001.h5", "r+") as f:
        f["data"][100] ^= 0xFF
    bad = run_cli("inspect", copy, "--verify", "--json")
    assert bad.returncode == 1
    rows = json.loads(bad.stdout)["verify"]["shards"]
    damaged = {r["shard"]: r["problems"] for r in rows if r["problems"]}
    assert list(damaged) == ["d-train-00001.h5"] and "sha256 mismatch" in damaged["d-train-00001.h5"][0]
    (tmp_path / "d-val-00000.h5").unlink()
    missing = run_cli("inspect", copy, "--verify")
    assert missing.returncode == 1 and "missing" in missing.stdout.decode()
    assert "Traceback" not in missing.stderr.decode()


def test_export_writes_pngs_and_labels_csv(prepared, tmp_path):
    folder = tmp_path / "look"
    result = run_cli("inspect", prepared, "--export", folder, "--split", "train", "--limit", "3", "--json")
    assert result.returncode == 0, result.stderr.decode()
    with open(folder / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "index", "label", "wnid", "source"]
    reader = PreparedDataset(prepared).split("train")
    sources = reader.sources()
    assert [int(r["index"]) for r in rows] == [0, 1, 2]
    for r in rows:
        i = int(r["index"])
        png = np.asarray(Image.open(folder / r["file"]))
        assert np.array_equal(png, reader.image(i))  # exactly what training reads
        assert int(r["label"]) == int(reader.labels[i]) and r["source"] == sources[i]
        assert r["wnid"] == PreparedDataset(prepared).classes[int(r["label"])][0]
    again = run_cli("inspect", prepared, "--export", folder)
    assert again.returncode == 2 and "not an empty folder" in again.stderr.decode()
    nosplit = run_cli("inspect", prepared, "--export", tmp_path / "x", "--split", "test")
    assert nosplit.returncode == 2 and "has no 'test' split" in nosplit.stderr.decode()


def test_not_a_dataset(tmp_path):
    (tmp_path / "x.h5").write_text("hello")
    result = run_cli("inspect", tmp_path / "x.h5")
    assert result.returncode == 2 and "not an HDF5 file" in result.stderr.decode()
