"""Where the images come from: the ImageNet layouts `alexnet prep` reads, found automatically.

Layouts (``--layout`` forces one):
- ``imagenet``: ``train/<wnid>/*`` and ``val/`` either in ``<wnid>/`` folders or flat
  (``ILSVRC2012_val_00000001.JPEG`` ...) with labels from the devkit.
- ``archives``: the official ``ILSVRC2012_img_train.tar`` (a tar of per-class tars) and
  ``ILSVRC2012_img_val.tar``, read in place: every image is located by its byte offset in the
  outer file, so workers read it with one seek and nothing is extracted to disk.
- ``kaggle``: ``ILSVRC/Data/CLS-LOC/{train,val}`` with ``LOC_val_solution.csv``.
- ``folders``: any folder of class subfolders (a custom dataset) = one split.

Within a split, images are ordered by their path relative to the split (code-point order), so
the order, and with it the output, never depends on the file system or on ``--workers``.
Classes are the sorted union of the class names found in every split of SRC (sorted wnids
for ImageNet: index 0 = n01440764), so separately prepped splits share one class table.
"""

from __future__ import annotations

import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from alexnet_cli.classes import class_name
from alexnet_cli.data import devkit as dk
from alexnet_cli.errors import InputError

LAYOUTS = ("auto", "imagenet", "archives", "kaggle", "folders")
SPLITS = ("train", "val")
TRAIN_TAR = "ILSVRC2012_img_train.tar"
VAL_TAR = "ILSVRC2012_img_val.tar"
KAGGLE_ROOT = Path("ILSVRC/Data/CLS-LOC")
IMAGE_EXTENSIONS = frozenset(
    ".jpeg .jpg .jpe .jfif .png .bmp .gif .tif .tiff .webp .ppm .pgm .pbm .pnm".split()
)


def is_image_name(name: str) -> bool:
    """An image file by its extension, whatever its case; hidden files (``._x.JPEG``) are not."""
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


@dataclass
class SplitInputs:
    """One split's images in their final order: provenance, class name, and where the bytes are.

    Files: ``root / sources[i]``. Archive members: ``offsets[i]``/``sizes[i]`` bytes into
    ``root / archive``.
    """

    name: str
    root: Path
    sources: list[str] = field(default_factory=list)  # relative to root, '/'-separated
    class_names: list[str] = field(default_factory=list)
    archive: str | None = None
    offsets: list[int] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)  # images with no label (flat val not in the devkit)
    ignored: int = 0  # files that are not images by name
    labelled_by: str = ""  # flat splits: the file their labels came from (devkit, Kaggle CSV)

    def __len__(self) -> int:
        return len(self.sources)

    def location(self, i: int) -> tuple[str, int, int]:
        """(file, offset, size) of image i; offset -1 means the whole file."""
        if self.archive is None:
            return str(self.root / self.sources[i]), -1, -1
        return str(self.root / self.archive), self.offsets[i], self.sizes[i]

    def sorted(self) -> SplitInputs:
        """The same split ordered by source path (all share the split's prefix, so this is the
        order inside the split: by class folder or class tar, then file name)."""
        order = sorted(range(len(self)), key=self.sources.__getitem__)
        pick = lambda xs: [xs[i] for i in order] if xs else xs  # noqa: E731
        return SplitInputs(
            self.name,
            self.root,
            pick(self.sources),
            pick(self.class_names),
            self.archive,
            pick(self.offsets),
            pick(self.sizes),
            sorted(self.unlabelled),
            self.ignored,
            self.labelled_by,
        )


@dataclass
class Source:
    """A dataset found in SRC: its layout, class table and the splits to prepare."""

    root: Path
    layout: str
    classes: list[tuple[str, str]]  # (wnid or folder name, human-readable name), index order
    splits: dict[str, SplitInputs]

    def labels(self, split: str) -> np.ndarray:
        index = {wnid: i for i, (wnid, _) in enumerate(self.classes)}
        return np.asarray([index[c] for c in self.splits[split].class_names], np.int32)


def find_source(
    src: str | os.PathLike,
    layout: str = "auto",
    splits: tuple[str, ...] | None = None,
    devkit: str | os.PathLike | None = None,
) -> Source:
    """Detect (or check) the layout of SRC and list its images. `splits`: the splits to keep
    (None: all found). A ``folders`` dataset is one split: "train", or the one split asked for."""
    root = Path(src)
    if not root.exists():
        raise InputError(
            f"{root}: no such folder; give the dataset folder (ImageNet root, archives or class folders)"
        )
    if not root.is_dir():
        raise InputError(
            f"{root}: not a folder; give the folder that holds the dataset (or the ImageNet tars)"
        )
    if layout not in LAYOUTS:
        raise InputError(f"unknown --layout {layout!r}; choose one of: {', '.join(LAYOUTS)}")
    if layout == "auto":
        layout = detect_layout(root)
    if devkit and not Path(devkit).exists():
        raise InputError(
            f"{devkit}: devkit not found; give --devkit {dk.DEVKIT_ARCHIVE} (or its extracted folder)"
        )
    devkit_path = Path(devkit) if devkit else dk.find_devkit(root)
    if layout == "folders" and splits and len(splits) > 1:
        raise InputError(
            f"{root}: a folder of class folders is one split; choose --split train or --split val"
        )
    split_name = splits[0] if layout == "folders" and splits else "train"
    scan = {
        "imagenet": _imagenet,
        "archives": _archives,
        "kaggle": _kaggle,
        "folders": lambda r, d: {split_name: _class_folders(r, split_name, r)},
    }[layout]
    try:
        found = scan(root, devkit_path)
    except OSError as e:  # an unreadable folder or file: never skip its images silently
        raise InputError(
            f"{e.filename or root}: cannot read ({e.strerror or e}); "
            f"fix its permissions or move it out of {root}"
        ) from None
    found = {k: v for k, v in found.items() if len(v) or v.unlabelled}
    if not found:
        raise InputError(
            f"{root}: no images found in the {layout} layout (no class subfolders with images); "
            "check the path (or --layout)"
        )
    wanted = tuple(found) if splits is None else splits
    missing = [s for s in wanted if s not in found]
    if missing:
        raise InputError(
            f"{root}: no '{missing[0]}' split here (found: {', '.join(found)}); choose --split from those"
        )
    empty = [s for s in wanted if not len(found[s])]
    if empty:
        raise InputError(f"{root}: the '{empty[0]}' split has no labelled images; check its files and labels")
    wnids = sorted({c for s in found.values() for c in s.class_names})
    return Source(
        root, layout, [(w, class_name(w)) for w in wnids], {name: found[name].sorted() for name in wanted}
    )


def detect_layout(root: Path) -> str:
    if (root / KAGGLE_ROOT).is_dir():
        return "kaggle"
    if (root / TRAIN_TAR).is_file() or (root / VAL_TAR).is_file():
        return "archives"
    if (root / "train").is_dir() or (root / "val").is_dir():
        return "imagenet"
    return "folders"


# --------------------------------------------------------------------------------------------
# Folders


def _walk_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under a folder (recursively, following links), and the count of other files."""
    images, ignored = [], 0

    def unreadable(error: OSError) -> None:  # os.walk would skip the folder silently
        raise error

    walked = set()
    for dirpath, dirnames, filenames in os.walk(folder, onerror=unreadable, followlinks=True):
        st = os.stat(dirpath)
        if (st.st_dev, st.st_ino) in walked:  # a link back to a folder already walked (a loop)
            dirnames[:] = []
            continue
        walked.add((st.st_dev, st.st_ino))
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if is_image_name(name):
                images.append(Path(dirpath) / name)
            elif not name.startswith("."):
                ignored += 1
    return images, ignored


def _class_folders(folder: Path, split: str, root: Path) -> SplitInputs:
    """A split whose images sit in one subfolder per class."""
    out = SplitInputs(split, root)
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        if entry.name.startswith("."):
            continue
        if not entry.is_dir():
            out.ignored += 1
            continue
        images, ignored = _walk_images(Path(entry.path))
        out.ignored += ignored
        for path in images:
            out.sources.append(path.relative_to(root).as_posix())
            out.class_names.append(entry.name)
    return out


def _flat_or_folders(folder: Path, split: str, root: Path, labels_for) -> SplitInputs:
    """A val folder: class subfolders if it has any, else flat files labelled by `labels_for()`."""
    entries = list(os.scandir(folder))
    if any(e.is_dir() and not e.name.startswith(".") for e in entries):
        return _class_folders(folder, split, root)
    out = SplitInputs(split, root)
    names = [e.name for e in entries if e.is_file() and is_image_name(e.name)]
    out.ignored = sum(
        1 for e in entries if e.is_file() and not is_image_name(e.name) and not e.name.startswith(".")
    )
    if names:
        labels = labels_for()
        out.labelled_by = labels.origin
        for name in names:
            wnid = labels.wnid(name)
            rel = (folder / name).relative_to(root).as_posix()
            if wnid is None:
                out.unlabelled.append(rel)
            else:
                out.sources.append(rel)
                out.class_names.append(wnid)
    return out


def _devkit_labels(devkit: Path | None, root: Path, what: str):
    def load() -> dk.ValLabels:
        if devkit is None:
            raise InputError(
                f"{root}: {what} holds flat files whose labels come from the devkit; put "
                f"{dk.DEVKIT_ARCHIVE} in SRC or give --devkit PATH (or prep only --split train)"
            )
        return dk.load_devkit(devkit)

    return load


def _imagenet(root: Path, devkit: Path | None) -> dict[str, SplitInputs]:
    found = {}
    if (root / "train").is_dir():
        found["train"] = _class_folders(root / "train", "train", root)
    if (root / "val").is_dir():
        found["val"] = _flat_or_folders(root / "val", "val", root, _devkit_labels(devkit, root, "val/"))
    return found


def _kaggle(root: Path, devkit: Path | None) -> dict[str, SplitInputs]:
    base = root / KAGGLE_ROOT
    found = {}
    if (base / "train").is_dir():
        found["train"] = _class_folders(base / "train", "train", root)
    if (base / "val").is_dir():
        solution = root / dk.KAGGLE_SOLUTION

        def labels() -> dk.ValLabels:
            if solution.is_file():
                return dk.kaggle_labels(solution)
            return _devkit_labels(devkit, root, f"{KAGGLE_ROOT}/val")()

        found["val"] = _flat_or_folders(base / "val", "val", root, labels)
    return found


# --------------------------------------------------------------------------------------------
# Archives, read in place


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, mode="r:")
    except tarfile.ReadError:
        raise InputError(
            f"{path}: not an uncompressed tar (images are read in place, which needs a plain .tar); "
            "decompress it or extract it"
        ) from None


def _archives(root: Path, devkit: Path | None) -> dict[str, SplitInputs]:
    found = {}
    if (root / TRAIN_TAR).is_file():
        found["train"] = _train_tar(root, TRAIN_TAR)
    if (root / VAL_TAR).is_file():
        found["val"] = _val_tar(root, VAL_TAR, _devkit_labels(devkit, root, VAL_TAR))
    return found


def _train_tar(root: Path, name: str) -> SplitInputs:
    """The tar of per-class tars: ``<wnid>.tar`` members, each a tar of that class's images."""
    out = SplitInputs("train", root, archive=name)
    with _open_tar(root / name) as outer:
        for member in outer:
            if not (member.isfile() and member.name.lower().endswith(".tar")):
                out.ignored += not member.isdir()  # other files, links (never followed), devices
                continue
            wnid = member.name.rsplit("/", 1)[-1][: -len(".tar")]
            try:
                inner = tarfile.open(fileobj=outer.extractfile(member), mode="r:")
            except tarfile.ReadError:
                raise InputError(
                    f"{root / name}: member {member.name} is not a tar; is this the ImageNet train tar?"
                ) from None
            for image in inner:
                if image.isfile() and is_image_name(image.name.rsplit("/", 1)[-1]):
                    out.sources.append(f"{name}/{member.name}/{image.name}")
                    out.class_names.append(wnid)
                    out.offsets.append(member.offset_data + image.offset_data)
                    out.sizes.append(image.size)
                elif not image.isdir():
                    out.ignored += 1
    return out


def _val_tar(root: Path, name: str, labels_for) -> SplitInputs:
    """A flat tar of val images, labelled by the devkit."""
    out = SplitInputs("val", root, archive=name)
    members = []
    with _open_tar(root / name) as tar:
        for member in tar:
            if member.isfile() and is_image_name(member.name.rsplit("/", 1)[-1]):
                members.append(member)
            elif not member.isdir():
                out.ignored += 1
    if members:
        labels = labels_for()
        out.labelled_by = labels.origin
        for member in members:
            wnid = labels.wnid(member.name)
            if wnid is None:
                out.unlabelled.append(f"{name}/{member.name}")
                continue
            out.sources.append(f"{name}/{member.name}")
            out.class_names.append(wnid)
            out.offsets.append(member.offset_data)
            out.sizes.append(member.size)
    return out


def read_image_bytes(path: str, offset: int, size: int) -> bytes:
    """The bytes of one image: a whole file, or `size` bytes at `offset` inside an archive."""
    with open(path, "rb") as f:
        if offset < 0:
            return f.read()
        f.seek(offset)
        data = f.read(size)
    if len(data) != size:
        raise OSError(f"archive ended {size - len(data)} bytes early")
    return data
