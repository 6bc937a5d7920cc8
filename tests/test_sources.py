"""Source layouts and the devkit: what `alexnet prep` reads, with which labels, in which order."""

from __future__ import annotations

import gzip
import shutil
import tarfile

import pytest

from alexnet_cli.data import devkit as dk
from alexnet_cli.data.sources import find_source, read_image_bytes
from alexnet_cli.errors import InputError
from tests.prep_helpers import NETTE_CLASSES, devkit_archive, imagenet_tree, meta_mat_bytes, official_archives


def _labels_by_source(source, split):
    labels = source.labels(split)
    return {s.rsplit("/", 1)[-1]: source.classes[int(l)][0] for s, l in zip(source.splits[split].sources, labels)}


# ---------------------------------------------------------------------------- devkit


def test_meta_mat_leaves_match_the_published_mapping(shared_data):
    leaves = dk.leaf_synsets(meta_mat_bytes(shared_data))
    mapping = dk.read_mapping((shared_data / "devkit" / "ILSVRC2012_mapping.txt").read_text())
    assert len(leaves) == 1000  # the ancestors (num_children > 0) are dropped
    assert len(mapping) == 1860  # the published mapping lists the ancestors too
    assert {i: w for i, (w, _) in leaves.items()} == {i: w for i, (w, _) in mapping.items() if i <= 1000}
    assert leaves[1][1].startswith("kit fox")  # words ride along


def test_ground_truth_through_meta_mat_agrees_with_kaggle_on_all_50000(shared_data, tmp_path):
    devkit = devkit_archive(shared_data, tmp_path / dk.DEVKIT_ARCHIVE)
    labels = dk.load_devkit(devkit)
    kaggle = dk.kaggle_labels(shared_data / "devkit" / "LOC_val_solution_stripped_SPViT.csv")
    assert len(labels.wnids) == 50_000
    assert labels.wnids == kaggle.wnids
    # meta.mat order is not sorted-wnid order: ID 1 is n02119789 (kit fox), index 278 sorted
    assert labels.wnid("ILSVRC2012_val_00000001.JPEG") == "n01751748"


def test_devkit_folder_with_mapping_file_instead_of_meta_mat(shared_data, tmp_path):
    labels = dk.load_devkit(shared_data / "devkit")
    kaggle = dk.kaggle_labels(shared_data / "devkit" / "LOC_val_solution_stripped_SPViT.csv")
    assert labels.wnids == kaggle.wnids


def test_devkit_errors_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="devkit not found"):
        dk.load_devkit(tmp_path / "nope.tar.gz")
    (tmp_path / "kit").mkdir()
    with pytest.raises(InputError, match="ILSVRC2012_validation_ground_truth.txt"):
        dk.load_devkit(tmp_path / "kit")
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(InputError, match="cannot read the devkit archive"):
        dk.load_devkit(tmp_path / "bad.tar.gz")
    (tmp_path / "kit" / dk.GROUND_TRUTH).write_text("1\n")
    (tmp_path / "kit" / dk.META).write_bytes(b"garbage")
    with pytest.raises(InputError, match="meta.mat"):
        dk.load_devkit(tmp_path / "kit")


# ---------------------------------------------------------------------------- layouts


def test_imagenet_root_with_val_folders(shared_data, tmp_path):
    root = imagenet_tree(shared_data, tmp_path / "in")
    (root / "train" / NETTE_CLASSES[0] / "notes.txt").write_text("not an image")
    (root / "train" / NETTE_CLASSES[0] / "._x.JPEG").write_bytes(b"macOS resource fork")
    source = find_source(root)
    assert source.layout == "imagenet"
    assert [w for w, _ in source.classes] == NETTE_CLASSES  # sorted wnids
    assert source.classes[0][1] == "tench"
    assert len(source.splits["train"]) == 9 and len(source.splits["val"]) == 6
    assert source.splits["train"].ignored == 1  # notes.txt; the hidden file is not counted
    sources = source.splits["train"].sources
    assert sources == sorted(sources) and sources[0].startswith(f"train/{NETTE_CLASSES[0]}/")
    assert list(source.labels("train")) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_flat_val_is_labelled_through_the_devkit(shared_data, tmp_path):
    folders = find_source(imagenet_tree(shared_data, tmp_path / "folders"))
    root = imagenet_tree(shared_data, tmp_path / "flat", flat_val=True)
    with pytest.raises(InputError, match="--devkit"):
        find_source(root)
    devkit_archive(shared_data, root / dk.DEVKIT_ARCHIVE)  # found in SRC
    (root / "val" / "ILSVRC2012_test_00000001.JPEG").write_bytes((root / "val" / sorted(p.name for p in (root / "val").iterdir())[0]).read_bytes())
    flat = find_source(root)
    # every ILSVRC val file gets its folder's wnid (imagenette keeps ILSVRC file names);
    # files the devkit does not know are listed as unlabelled, not guessed
    expected = _labels_by_source(folders, "val")
    foreign = sorted(f"val/{n}" for n in expected if not n.startswith("ILSVRC2012_val_"))
    assert _labels_by_source(flat, "val") == {n: w for n, w in expected.items() if n.startswith("ILSVRC2012_val_")}
    assert flat.splits["val"].unlabelled == sorted(["val/ILSVRC2012_test_00000001.JPEG", *foreign])
    assert flat.splits["val"].labelled_by.endswith(dk.DEVKIT_ARCHIVE)


def test_official_archives_are_read_in_place(shared_data, tmp_path):
    tree = imagenet_tree(shared_data, tmp_path / "tree", flat_val=True)
    arch = official_archives(tree, tmp_path / "arch")
    devkit = devkit_archive(shared_data, tmp_path / dk.DEVKIT_ARCHIVE)
    source = find_source(arch, devkit=devkit)
    assert source.layout == "archives"
    folder = find_source(tree, devkit=devkit)
    assert source.classes == folder.classes
    for split in ("train", "val"):
        got, want = source.splits[split], folder.splits[split]
        assert [s.rsplit("/", 1)[-1] for s in got.sources] == [s.rsplit("/", 1)[-1] for s in want.sources]
        assert list(source.labels(split)) == list(folder.labels(split))
        # the recorded byte ranges are the very files
        for i in range(len(got)):
            assert read_image_bytes(*got.location(i)) == read_image_bytes(*want.location(i))
    assert got.sources[0].startswith("ILSVRC2012_img_val.tar/")
    assert source.splits["train"].sources[0].startswith(f"ILSVRC2012_img_train.tar/{NETTE_CLASSES[0]}.tar/")


def test_compressed_tar_is_refused_with_a_clear_error(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    with gzip.open(root / "ILSVRC2012_img_val.tar", "wb") as f:
        f.write(b"x" * 1000)
    with pytest.raises(InputError, match="not an uncompressed tar"):
        find_source(root)


def test_kaggle_layout(shared_data, tmp_path):
    tree = imagenet_tree(shared_data, tmp_path / "tree", flat_val=True)
    root = tmp_path / "kaggle"
    base = root / "ILSVRC" / "Data" / "CLS-LOC"
    base.mkdir(parents=True)
    shutil.copytree(tree / "train", base / "train")
    shutil.copytree(tree / "val", base / "val")
    shutil.copy(shared_data / "devkit" / "LOC_val_solution_stripped_SPViT.csv", root / dk.KAGGLE_SOLUTION)
    source = find_source(root)
    assert source.layout == "kaggle"
    folders = find_source(imagenet_tree(shared_data, tmp_path / "ref"))
    expected = _labels_by_source(folders, "val")
    assert _labels_by_source(source, "val") == {n: w for n, w in expected.items() if n.startswith("ILSVRC2012_val_")}
    assert source.splits["train"].sources[0].startswith("ILSVRC/Data/CLS-LOC/train/")


def test_any_folder_of_class_folders_and_extension_case(shared_data, tmp_path):
    root = tmp_path / "pets"
    for cls, files in {"dog": ["a.JPG", "b.jpeg"], "cat": ["c.Png", "d.jpg", "e.txt"]}.items():
        (root / cls / "nested").mkdir(parents=True)
        for name in files:
            (root / cls / "nested" / name).write_bytes(b"x")
    source = find_source(root)
    assert source.layout == "folders"
    assert source.classes == [("cat", "cat"), ("dog", "dog")]
    assert list(source.splits) == ["train"]
    assert source.splits["train"].sources == ["cat/nested/c.Png", "cat/nested/d.jpg", "dog/nested/a.JPG", "dog/nested/b.jpeg"]
    assert list(find_source(root, splits=("val",)).splits) == ["val"]
    with pytest.raises(InputError, match="one split"):
        find_source(root, splits=("train", "val"))


def test_bad_sources_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="no such folder"):
        find_source(tmp_path / "missing")
    (tmp_path / "file.tar").write_bytes(b"")
    with pytest.raises(InputError, match="not a folder"):
        find_source(tmp_path / "file.tar")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        find_source(tmp_path / "empty")
    (tmp_path / "in" / "train" / "cls").mkdir(parents=True)
    (tmp_path / "in" / "train" / "cls" / "x.JPEG").write_bytes(b"")
    with pytest.raises(InputError, match="no 'val' split"):
        find_source(tmp_path / "in", splits=("val",))
    with pytest.raises(InputError, match="unknown --layout"):
        find_source(tmp_path / "empty", layout="coco")


def test_train_tar_member_that_is_not_a_tar(tmp_path):
    root = tmp_path / "arch"
    root.mkdir()
    (tmp_path / "n01440764.tar").write_bytes(b"definitely not a tar archive" * 40)
    with tarfile.open(root / "ILSVRC2012_img_train.tar", "w") as tar:
        tar.add(tmp_path / "n01440764.tar", arcname="n01440764.tar")
    with pytest.raises(InputError, match="is not a tar"):
        find_source(root)
