"""Reliability matrix (docs/reliability.md), bad inputs and security: every case is a one-line
error naming the file and what to do (exit 2, or 1 where the work failed) or a reported skip,
never a traceback, and nothing half-written left behind. Cases already covered elsewhere are
listed in docs/reliability.md with their tests; these are the rest."""

from __future__ import annotations

import ast
import errno
import io
import json
import os
import resource
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import zlib
from dataclasses import asdict
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from alexnet_cli.checkpoint import load_checkpoint, save_checkpoint
from alexnet_cli.data import sources
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.config import PrepConfig
from alexnet_cli.data.prep import prepare
from alexnet_cli.errors import EXIT_FAILED, EXIT_USAGE, InputError
from alexnet_cli.fileio import atomic_write_text
from alexnet_cli.config import ModelConfig
from tests.conftest import REPO_ROOT, cli_in_process, make_dataset, run_cli, write_checkpoint
from tests.reliability_helpers import CodePayload, cli, cli_env, leftovers


def assert_one_line(code: int, err: str, expected: int, *texts: str) -> None:
    """The CLI's contract for expected failures: the exit code, one line on stderr, no traceback."""
    lines = [line for line in err.strip().splitlines() if not line.startswith(("prep:", "epoch "))]
    assert code == expected, err
    assert "Traceback" not in err and len(lines) == 1, err
    for text in texts:
        assert text in lines[0], (text, lines[0])


def png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG", **kw)
    return buf.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of width x height black pixels: a few kB that decode to width*height pixels."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    row = b"\0" * (1 + (width + 7) // 8)  # filter byte + packed bits
    z = zlib.compressobj(9)
    pixels = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


BOMB = (20000, 20000)  # 400M pixels: over twice Pillow's MAX_IMAGE_PIXELS (89.5M), its error limit


# --------------------------------------------------------------------------------------------
# prep: sources and images


def test_folders_without_class_folders_are_one_line_errors(tmp_path, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.JPEG").write_bytes(png_bytes(Image.new("RGB", (8, 8))))
    code, _, err = cli_in_process(capsys, "prep", flat, tmp_path / "o.h5", "--workers", "1")
    assert_one_line(code, err, EXIT_USAGE, str(flat), "no class subfolders with images")
    (tmp_path / "classes" / "cat").mkdir(parents=True)  # class folders, but no images in them
    (tmp_path / "classes" / "cat" / "notes.txt").write_text("no images here")
    code, _, err = cli_in_process(capsys, "prep", tmp_path / "classes", tmp_path / "o.h5", "--workers", "1")
    assert_one_line(code, err, EXIT_USAGE, "no images found")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["classes", "flat"]


def test_awkward_images_are_stored_or_skipped_with_reasons(tmp_path):
    """LA and transparent-palette PNGs, a 1x1 image, 1-pixel-wide strips, a decompression bomb,
    a dangling link, a non-image file and a link loop, in one prep run."""
    src = tmp_path / "src"
    a, b = src / "a", src / "b"
    a.mkdir(parents=True)
    b.mkdir()
    gradient = Image.linear_gradient("L").resize((300, 200))
    la = Image.merge("LA", (gradient, Image.new("L", (300, 200), 0)))  # fully transparent: white
    (a / "la.png").write_bytes(png_bytes(la))
    palette = Image.new("RGB", (120, 90), (200, 30, 40)).convert("P")
    (a / "palette_transparent.png").write_bytes(png_bytes(palette, transparency=0))
    (a / "one_pixel.png").write_bytes(png_bytes(Image.new("RGB", (1, 1), (10, 20, 30))))
    (b / "thin.png").write_bytes(png_bytes(Image.new("RGB", (1, 1000), (40, 50, 60))))
    wide = io.BytesIO()
    Image.new("RGB", (3000, 1), (70, 80, 90)).save(wide, format="JPEG", quality=100)
    (b / "wide.JPEG").write_bytes(wide.getvalue())
    (b / "bomb.png").write_bytes(bomb_png(*BOMB))
    (b / "gone.JPEG").symlink_to(tmp_path / "deleted.JPEG")
    (b / "notes.txt").write_text("not an image")
    (b / "loop").symlink_to(b)  # b/loop/loop/... must not list b's images again and again

    out = tmp_path / "out" / "d.h5"
    out.parent.mkdir()
    r = run_cli("prep", src, out, "--json", "--workers", "2", "--codec", "raw")
    assert r.returncode == 0, r.stderr.decode()
    assert "Traceback" not in r.stderr.decode()
    summary = json.loads(r.stdout)
    reasons = {row["path"]: row["reason"] for row in summary["skipped"]}
    assert list(reasons) == ["b/bomb.png", "b/gone.JPEG"]
    assert reasons["b/bomb.png"].startswith("too many pixels (Pillow's decompression-bomb limit)")
    assert reasons["b/gone.JPEG"] == "unreadable: No such file or directory"
    assert summary["splits"]["train"]["images"] == 5 and summary["ignored_files"] == 1
    reader = PreparedDataset(out).split("train")
    stored = dict(zip((s.rsplit("/", 1)[-1] for s in reader.sources()), range(len(reader))))
    assert sorted(stored) == ["la.png", "one_pixel.png", "palette_transparent.png", "thin.png", "wide.JPEG"]
    assert reader.image(stored["la.png"]).min() == 255  # transparent on white
    for name, rgb in (("one_pixel.png", (10, 20, 30)), ("thin.png", (40, 50, 60))):
        assert np.all(reader.image(stored[name]) == rgb), name
    assert np.abs(reader.image(stored["wide.JPEG"]).astype(int) - (70, 80, 90)).max() <= 2
    assert leftovers(out.parent) == []


def test_decompression_bomb_and_unreadable_file_in_predict(torchvision_weights, tmp_path, capsys, monkeypatch):
    good = tmp_path / "good.png"
    good.write_bytes(png_bytes(Image.new("RGB", (300, 240), (90, 120, 30))))
    bomb, locked = tmp_path / "bomb.png", tmp_path / "locked.png"
    bomb.write_bytes(bomb_png(*BOMB))
    locked.write_bytes(good.read_bytes())
    read_bytes = Path.read_bytes

    def unreadable(path: Path) -> bytes:  # what the OS says to a non-root user for a mode-000 file
        if path == locked:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return read_bytes(path)

    monkeypatch.setattr(Path, "read_bytes", unreadable)
    code, out, err = cli_in_process(capsys, "predict", bomb, good, locked, "--arch", "torchvision",
                                    "--weights", torchvision_weights, "--gpus", "0", "--json")
    lines = err.strip().splitlines()
    assert code == EXIT_FAILED and "Traceback" not in err and len(lines) == 2, err
    assert str(bomb) in lines[0] and "decompression-bomb limit" in lines[0]
    assert lines[1] == f"error: {locked}: Permission denied"
    assert [p["file"] for p in json.loads(out)] == [str(good)]


@pytest.mark.parametrize("how", ["chmod 000", "simulated"])
def test_unreadable_file_is_a_reported_skip(tmp_path, monkeypatch, how):
    """As root, mode 000 stops nothing (root reads every file), so that case skips itself and the
    simulated one makes open() raise what the OS raises for other users: EACCES."""
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    for name in ("a.png", "locked.png"):
        (src / name).write_bytes(png_bytes(Image.new("RGB", (64, 64), (1, 2, 3))))
    locked = src / "locked.png"
    if how == "chmod 000":
        locked.chmod(0)
        if os.access(locked, os.R_OK):
            pytest.skip("running as root: file modes do not stop reads (the simulated case covers it)")
    else:
        real_open = open

        def denied(path, *args, **kwargs):
            if str(path) == str(locked):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
            return real_open(path, *args, **kwargs)

        monkeypatch.setattr(sources, "open", denied, raising=False)  # read_image_bytes' open, inherited by the forked worker
    summary = prepare(tmp_path / "src", tmp_path / "d.h5", PrepConfig(workers=1))
    assert summary.skipped == [("train", "cls/locked.png", "unreadable: Permission denied")]
    assert summary.splits["train"].images == 1 and summary.splits["train"].skipped == 1


def test_unreadable_class_folder_is_an_error_not_a_silent_loss(tmp_path, capsys, monkeypatch):
    """os.walk skips folders it cannot list unless told otherwise: a folder of images that
    vanished from the dataset without a word. Simulated (root lists every folder)."""
    for name in ("cat", "dog"):
        (tmp_path / "src" / name / "inner").mkdir(parents=True)
        (tmp_path / "src" / name / "inner" / "x.png").write_bytes(png_bytes(Image.new("RGB", (8, 8))))
    blocked = tmp_path / "src" / "dog" / "inner"
    real_scandir = os.scandir

    def scandir(path="."):
        if str(path) == str(blocked):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    code, _, err = cli_in_process(capsys, "prep", tmp_path / "src", tmp_path / "d.h5", "--workers", "1")
    assert_one_line(code, err, EXIT_USAGE, f"{blocked}: cannot read (Permission denied)", "fix its permissions")
    assert not (tmp_path / "d.h5").exists() and leftovers(tmp_path) == []


# --------------------------------------------------------------------------------------------
# Prepared datasets that are not ours, newer, or damaged


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("tiny"), classes=2, train_per_class=4, val_per_class=2)


@pytest.fixture(scope="module")
def checkpoint(tiny, tmp_path_factory) -> Path:
    """A paper-net checkpoint for tiny's 2 classes."""
    ds = PreparedDataset(tiny)
    return write_checkpoint(tmp_path_factory.mktemp("ckpt") / "ckpt.pt", ds.classes, ds.stats.mean_image)


def damaged_copy(tiny: Path, folder: Path, change) -> Path:
    shutil.copytree(tiny.parent, folder)
    change(folder)
    return folder / tiny.name


def _replace(f: h5py.File, name: str, data) -> None:
    del f[name]
    f[name] = data


INDEX_DAMAGE = {
    "not ours (another program's HDF5)": (lambda d: _foreign(d / "tiny.h5"), "not an alexnet-cli dataset"),
    "newer format version": (lambda d: _edit(d / "tiny.h5", lambda f: f.attrs.__setitem__("format_version", 2)),
                             "format version 2 is newer than this alexnet-cli reads (1); upgrade"),
    "class table missing": (lambda d: _edit(d / "tiny.h5", lambda f: f.__delitem__("classes")), "the index is damaged"),
    "count attribute not a number": (lambda d: _edit(d / "tiny.h5", lambda f: f["splits/train"].attrs.__setitem__("images", "many")),
                                     "the index is damaged"),
    "class ids not strings": (lambda d: _edit(d / "tiny.h5", lambda f: _replace(f, "classes/wnid", np.arange(2))),
                              "'/classes/wnid' is not a list of strings"),
    "shard name is a path": (lambda d: _edit(d / "tiny.h5", lambda f: _replace(f, "splits/val/shards", np.array([b"../../etc/x.h5"], dtype=h5py.string_dtype()))),
                             "shard '../../etc/x.h5' is not a plain file name"),
    "mean image of the wrong shape": (lambda d: _edit(d / "tiny.h5", lambda f: _replace(f, "stats/mean_image", np.zeros((224, 224, 3), np.float32))),
                                      "'/stats/mean_image' has shape (224, 224, 3)"),
    "PCA of the wrong type": (lambda d: _edit(d / "tiny.h5", lambda f: _replace(f, "stats/pca_eigenvalues", np.array([b"a", b"b", b"c"]))),
                              "'/stats/pca_eigenvalues' has shape (3,) of |S1, expected (3,) of float64"),
}


def _edit(path: Path, change) -> None:
    with h5py.File(path, "r+") as f:
        change(f)


def _foreign(path: Path) -> None:
    path.unlink()
    with h5py.File(path, "w") as f:
        f["images"] = np.zeros((2, 8, 8, 3), np.uint8)


@pytest.mark.parametrize("case", list(INDEX_DAMAGE))
def test_index_that_is_not_ours_newer_or_damaged_is_refused_by_every_command(tiny, checkpoint, tmp_path, capsys, case):
    change, message = INDEX_DAMAGE[case]
    index = damaged_copy(tiny, tmp_path / "d", change)
    for args in (["inspect", index], ["eval", checkpoint, "--data", index, "--gpus", "0", "--workers", "0"],
                 ["train", "--data", index, "--run-dir", tmp_path / "run", "--gpus", "0", "--workers", "0"]):
        code, out, err = cli_in_process(capsys, *args)
        assert_one_line(code, err, EXIT_USAGE, str(index), message)
        assert out == ""
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


SHARD_DAMAGE = {
    "truncated file": (lambda d: os.truncate(d / "tiny-val-00000.h5", 3000), "not a readable shard"),
    "offsets that do not tile the data": (lambda d: _edit(d / "tiny-val-00000.h5", lambda f: f["offsets"].__setitem__(1, 10**12)),
                                          "offsets do not tile the image data"),
    "labels out of range": (lambda d: _edit(d / "tiny-val-00000.h5", lambda f: f["labels"].__setitem__(0, 7)), "labels outside 0..1"),
    "another split's shard": (lambda d: shutil.copy(d / "tiny-train-00000.h5", d / "tiny-val-00000.h5"),
                              "the index expects"),
    "deleted between prep and use": (lambda d: os.unlink(d / "tiny-val-00000.h5"), "shard missing"),
}


@pytest.mark.parametrize("case", list(SHARD_DAMAGE))
def test_damaged_or_missing_shard_is_one_line_naming_it(tiny, checkpoint, tmp_path, capsys, case):
    change, message = SHARD_DAMAGE[case]
    index = damaged_copy(tiny, tmp_path / "d", change)
    shard = index.parent / "tiny-val-00000.h5"
    for args in (["eval", checkpoint, "--data", index, "--gpus", "0", "--workers", "0"],
                 ["train", "--data", index, "--run-dir", tmp_path / "run", "--gpus", "0", "--workers", "0", "--max-steps", "1"]):
        code, _, err = cli_in_process(capsys, *args)
        assert_one_line(code, err, EXIT_USAGE, str(shard), message, "`alexnet prep`")
    code, out, err = cli_in_process(capsys, "inspect", index, "--verify", "--json")
    assert code == EXIT_FAILED and "Traceback" not in err
    rows = {r["shard"]: r["problems"] for r in json.loads(out)["verify"]["shards"] if r["problems"]}
    assert list(rows) == [shard.name]


def _zero_first_image(folder: Path) -> None:
    with h5py.File(folder / "tiny-val-00000.h5", "r+") as f:
        f["data"][: f["offsets"][1]] = 0  # image 0's JPEG bytes gone; the structure is intact


def test_damaged_image_bytes_found_by_loader_workers_end_the_process(tiny, checkpoint, tmp_path):
    """The error is raised in a DataLoader worker: it must reach the user as one line (not the
    worker's traceback), and the process must exit (training's workers ignore SIGTERM, the
    signal multiprocessing's exit handler sends, so one left running blocked the exit forever)."""
    index = damaged_copy(tiny, tmp_path / "d", _zero_first_image)
    shard = index.parent / "tiny-val-00000.h5"
    for args in (["eval", checkpoint, "--data", index, "--gpus", "0", "--workers", "1"],
                 ["train", "--data", index, "--run-dir", tmp_path / "run", "--gpus", "0", "--workers", "2",
                  "--epochs", "1", "--batch-size", "4", "--limit", "4"]):
        r = run_cli(*args, timeout=240)
        assert_one_line(r.returncode, r.stderr.decode(), EXIT_USAGE, str(shard), "image 0 of the split could not be read",
                        "rerun `alexnet prep`")


# --------------------------------------------------------------------------------------------
# Checkpoints


def _tiny_tensor(shape) -> torch.Tensor:
    """A tensor of `shape` saved as one element (an expanded view): weights whose shapes are
    right without writing 200 MB."""
    return torch.zeros(1).expand(*shape)


def _checkpoint_like(checkpoint: Path, **changes) -> dict:
    ckpt = load_checkpoint(checkpoint)
    ckpt["model"] = {k: _tiny_tensor(v.shape) for k, v in ckpt["model"].items()}
    return {**{k: v for k, v in ckpt.items() if k not in ("format", "format_version")}, **changes}


def test_checkpoints_of_another_architecture_or_class_count_are_refused(checkpoint, tmp_path, capsys):
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(Image.new("RGB", (300, 300), (5, 6, 7))))
    classes3 = [["n00000000", "a"], ["n00000001", "b"], ["n00000002", "c"]]
    cases = {
        "three_classes.pt": (dict(model_config=asdict(ModelConfig(num_classes=3)), classes=classes3),
                             "shape of fc8.weight is (2, 4096), the model needs (3, 4096)"),
        "torchvision_config.pt": (dict(model_config=asdict(ModelConfig(arch="torchvision", num_classes=2))),
                                  "weights do not fit this architecture (missing ['features.0.weight'"),
        "resnet.pt": (dict(model_config={"arch": "resnet50", "num_classes": 2}), "unknown architecture 'resnet50'"),
    }
    for name, (changes, message) in cases.items():
        save_checkpoint(tmp_path / name, _checkpoint_like(checkpoint, **changes))
    torch.save({**_checkpoint_like(checkpoint), "format": "alexnet-cli checkpoint", "format_version": 9}, tmp_path / "newer.pt")
    cases["newer.pt"] = ({}, "checkpoint format 9 is newer than this alexnet-cli; upgrade it")
    (tmp_path / "truncated.pt").write_bytes(checkpoint.read_bytes()[:100_000])
    cases["truncated.pt"] = ({}, "not a readable checkpoint")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    cases["notes.pt"] = ({}, "refused to load")
    for name, (_, message) in cases.items():
        code, out, err = cli_in_process(capsys, "predict", image, "--checkpoint", tmp_path / name, "--gpus", "0")
        assert_one_line(code, err, EXIT_USAGE, str(tmp_path / name), message)


def test_resume_from_a_checkpoint_of_other_classes_is_refused(tiny, checkpoint, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    from dataclasses import asdict

    from alexnet_cli.config import TrainConfig

    config = asdict(TrainConfig(data=str(tiny)))  # the recipe this command line asks for
    config["devices"] = None
    ckpt = _checkpoint_like(checkpoint, classes=[["n09999999", "x"], ["n09999998", "y"]], optimizer={}, scheduler={},
                            epoch=1, epoch_step=0, step=1, train_config=config)
    save_checkpoint(run / "last.pt", ckpt)
    code, _, err = cli_in_process(capsys, "train", "--data", tiny, "--run-dir", run, "--resume", "auto", "--gpus", "0")
    assert_one_line(code, err, EXIT_USAGE, str(run / "last.pt"), "trained on other classes", "resume with the same dataset")


def test_a_pickle_carrying_code_is_refused_by_predict_and_train_and_never_runs(tiny, tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    run = tmp_path / "run"
    run.mkdir()
    torch.save({"format": "alexnet-cli checkpoint", "model": CodePayload(marker)}, run / "last.pt")
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(Image.new("RGB", (64, 64))))
    for args in (["predict", image, "--checkpoint", run / "last.pt", "--gpus", "0"],
                 ["train", "--data", tiny, "--run-dir", run, "--resume", "auto", "--gpus", "0"]):
        code, _, err = cli_in_process(capsys, *args)
        assert_one_line(code, err, EXIT_USAGE, str(run / "last.pt"), "refused to load",
                        "unsupported GLOBAL posix.system")
    assert not marker.exists()


def test_every_torch_load_in_the_package_is_weights_only():
    """Never unpickle code from data: every torch.load says weights_only=True, and nothing calls
    pickle or numpy's loaders (which unpickle) at all. (json's loaders build plain data only.)"""
    loads = []
    for path in sorted((REPO_ROOT / "alexnet_cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("load", "loads")
                    and ast.unparse(node.func.value) != "json"):
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                loads.append((path.relative_to(REPO_ROOT).as_posix(), ast.unparse(node.func), keywords.get("weights_only")))
    assert loads == [("alexnet_cli/checkpoint.py", "torch.load", "True")]


# --------------------------------------------------------------------------------------------
# Archives: read in place, never extracted


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes | None = None, **attrs) -> None:
    info = tarfile.TarInfo(name)
    for key, value in attrs.items():
        setattr(info, key, value)
    if data is not None:
        info.size = len(data)
    tar.addfile(info, io.BytesIO(data) if data is not None else None)


def test_tar_members_with_parent_or_absolute_names_never_write_outside(tmp_path):
    """Member names with ../ or a leading /, links and folders inside the ImageNet train tar:
    prep reads members' bytes in place (it never extracts), so a name is only a label."""
    src, outside = tmp_path / "src", tmp_path / "outside"
    src.mkdir()
    outside.mkdir()
    colours = iter([(200, 0, 0), (0, 200, 0), (0, 0, 200), (90, 90, 0), (0, 90, 90), (90, 0, 90)])
    with tarfile.open(src / "ILSVRC2012_img_train.tar", "w", format=tarfile.GNU_FORMAT) as outer:
        for wnid in ("n01440764", "n01443537"):
            buf = io.BytesIO()
            with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as inner:
                for name in (f"../../outside/{wnid}_a.JPEG", f"{outside}/{wnid}_b.JPEG", f"{wnid}_c.JPEG"):
                    _tar_add(inner, name, png_bytes(Image.new("RGB", (300, 260), next(colours))))
                _tar_add(inner, f"{wnid}_link.JPEG", type=tarfile.SYMTYPE, linkname="/etc/passwd")
                _tar_add(inner, f"{wnid}_hard.JPEG", type=tarfile.LNKTYPE, linkname=f"{wnid}_c.JPEG")
                _tar_add(inner, "../../outside/made_by_tar", type=tarfile.DIRTYPE)
            _tar_add(outer, f"../{wnid}.tar", buf.getvalue())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    out = tmp_path / "out" / "d.h5"
    out.parent.mkdir()
    r = run_cli("prep", src, out, "--json", "--workers", "1", "--codec", "raw")
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)
    assert summary["layout"] == "archives" and summary["splits"]["train"]["images"] == 6
    assert summary["ignored_files"] == 4  # the symbolic and hard links: never followed, counted
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if not p.is_relative_to(out.parent))
    assert after == before and not any(outside.iterdir())
    reader = PreparedDataset(out).split("train")
    assert reader.sources()[:2] == [
        "ILSVRC2012_img_train.tar/../n01440764.tar/../../outside/n01440764_a.JPEG",  # provenance, as written
        f"ILSVRC2012_img_train.tar/../n01440764.tar/{outside}/n01440764_b.JPEG",
    ]
    assert reader.image(0)[0, 0].tolist() == [200, 0, 0]
    export = run_cli("inspect", out, "--export", tmp_path / "look", "--limit", "6")
    assert export.returncode == 0 and len(list((tmp_path / "look").iterdir())) == 7  # 6 PNGs + labels.csv
    assert not any(outside.iterdir())


# --------------------------------------------------------------------------------------------
# No network at run time


def test_no_network_access_with_torchvision_weights_from_a_local_file(torchvision_weights, tmp_path, capsys, monkeypatch):
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args[1:] if len(args) > 1 else args)
        raise OSError(errno.ENETUNREACH, "network access is not allowed in this test")

    for name in ("connect", "connect_ex"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # an empty cache: nothing to find there
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(Image.new("RGB", (300, 240), (120, 80, 40))))
    code, out, err = cli_in_process(capsys, "predict", image, "--arch", "torchvision", "--weights", torchvision_weights,
                                    "--gpus", "0", "--json", "--ten-crop")
    assert code == 0, err
    assert len(json.loads(out)[0]["predictions"]) == 5
    code, _, err = cli_in_process(capsys, "info", "--arch", "torchvision", "--json")
    assert code == 0, err
    assert attempts == [] and not (tmp_path / "torch-home").exists()


# --------------------------------------------------------------------------------------------
# Full and read-only file systems


def _fsize_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_prep_and_train_on_a_full_disk_simulated_by_a_file_size_limit(tiny, tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse writes past a size (EFBIG), root or not: the C-level
    writes of HDF5 and of torch.save fail as they would on a full disk."""
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    for k in range(6):
        (src / f"{k}.png").write_bytes(png_bytes(Image.new("RGB", (300, 300), (k * 40, 0, 0))))
    out = tmp_path / "out" / "d.h5"
    out.parent.mkdir()
    args = cli("prep", tmp_path / "src", out, "--workers", "1", "--codec", "raw", "--shard-size", "2")
    r = subprocess.run(args, env=cli_env(), capture_output=True, preexec_fn=_fsize_limit(1 << 20))
    assert_one_line(r.returncode, r.stderr.decode(), EXIT_USAGE, str(out.parent / "d-train-00000.h5"),
                    "could not write (File too large)", "rerun the same command to resume")
    assert sorted(p.name for p in out.parent.iterdir()) == []
    r = subprocess.run(args, env=cli_env(), capture_output=True)  # space again: the same command completes
    assert r.returncode == 0, r.stderr.decode()
    assert leftovers(out.parent) == []

    run = tmp_path / "run"
    train = cli("train", "--data", tiny, "--run-dir", run, "--gpus", "0", "--workers", "0", "--batch-size", "4", "--max-steps", "1")
    r = subprocess.run(train, env=cli_env(), capture_output=True, preexec_fn=_fsize_limit(50 << 20))
    assert_one_line(r.returncode, r.stderr.decode(), EXIT_USAGE, str(run / "last.pt"), "could not write (torch.save failed")
    assert sorted(p.name for p in run.iterdir()) == []  # no half checkpoint, nothing else either


def test_atomic_writes_on_full_and_read_only_file_systems_leave_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "metrics.csv"
    target.write_text("old")
    real_replace = os.replace

    def full(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(InputError, match=r"metrics.csv: could not write \(No space left on device\)"):
        atomic_write_text(target, "new")
    monkeypatch.setattr(os, "replace", real_replace)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(InputError, match=r"cannot write in .* \(Read-only file system\); choose another path"):
        atomic_write_text(target, "new")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.csv"]


def test_checkpoint_write_failure_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"step": 1})

    def failing_save(obj, f):  # torch's zip writer on a full disk: a partial file, then RuntimeError
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 3584 vs 3478")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(InputError, match="last.pt: could not write .*torch.save failed"):
        save_checkpoint(path, {"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1 and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


def _unshare_available() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount -t tmpfs tmpfs /mnt && umount /mnt"], capture_output=True) \
        if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


@pytest.mark.skipif(sys.platform != "linux" or not _unshare_available(),
                    reason="needs `unshare -m` and mount (root with CAP_SYS_ADMIN) for a private tmpfs")
def test_real_full_and_read_only_file_systems(tiny, checkpoint, tmp_path):
    """A 3 MiB tmpfs (really full: ENOSPC) and a read-only bind mount (EROFS: root cannot write
    there either), in a private mount namespace that disappears with the shell."""
    src = tmp_path / "src" / "cls"
    src.mkdir(parents=True)
    for k in range(8):
        (src / f"{k}.png").write_bytes(png_bytes(Image.new("RGB", (300, 300), (0, k * 30, 0))))
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    py = f"{sys.executable} -m alexnet_cli"
    script = f"""
export PYTHONPATH={REPO_ROOT}
mount -t tmpfs -o size=3m tmpfs {mnt} && mkdir {mnt}/ro && mount --bind -o ro {mnt}/ro {mnt}/ro || exit 99
run() {{ "$@" >/dev/null 2>{mnt}/err; echo "$? $(grep -v '^prep:' {mnt}/err | tr '\\n' ' ')"; }}
run {py} prep {tmp_path / 'src'} {mnt}/full.h5 --workers 1 --codec raw --shard-size 3
run {py} prep {tmp_path / 'src'} {mnt}/ro/d.h5 --workers 1
run {py} predict {src}/0.png --checkpoint {checkpoint} --csv {mnt}/ro/p.csv --gpus 0
run {py} inspect {tiny} --export {mnt}/ro/look
run {py} train --data {tiny} --run-dir {mnt}/ro/run --gpus 0
rm {mnt}/err
ls -A {mnt}
"""
    r = subprocess.run(["unshare", "-m", "bash", "-c", script], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    expected = [
        f"2 error: {mnt}/full-train-00001.h5: could not write (No space left on device)",  # shard 0 fits, 1 does not
        f"2 error: {mnt}/ro/d.h5: folder {mnt}/ro is not writable",
        f"2 error: {mnt}/ro/p.csv: cannot write in {mnt}/ro (Read-only file system)",
        f"2 error: {mnt}/ro/look: cannot create it (Read-only file system)",
        f"2 error: {mnt}/ro/run: cannot use as the run folder (Read-only file system)",
    ]
    for line, start in zip(lines, expected):
        assert line.startswith(start), (line, start)
    assert lines[len(expected):] == ["full-train-00000.h5", "ro"]  # a complete shard (kept for the rerun), no partials
