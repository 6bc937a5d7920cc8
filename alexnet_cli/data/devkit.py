"""Validation labels for a flat ImageNet val folder or tar: the ILSVRC-2012 devkit, or Kaggle's CSV.

The devkit's ``ILSVRC2012_validation_ground_truth.txt`` holds one ILSVRC2012_ID per val image
(line k = ``ILSVRC2012_val_<k>``). Those IDs number the synsets in ``meta.mat`` order, which is
NOT sorted-wnid order, so they go through ``meta.mat``: the 1000 leaf synsets are the entries
with ``num_children == 0`` (read with scipy.io.loadmat, as torchvision does). The published
``ILSVRC2012_mapping.txt`` (``<ID> <wnid>`` per line) is accepted in place of meta.mat.
"""

from __future__ import annotations

import csv
import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

from alexnet_cli.errors import InputError

DEVKIT_ARCHIVE = "ILSVRC2012_devkit_t12.tar.gz"
DEVKIT_FOLDER = "ILSVRC2012_devkit_t12"
GROUND_TRUTH = "ILSVRC2012_validation_ground_truth.txt"
META = "meta.mat"
MAPPING = "ILSVRC2012_mapping.txt"
KAGGLE_SOLUTION = "LOC_val_solution.csv"


@dataclass(frozen=True)
class ValLabels:
    """wnid of each val image, by file stem (``ILSVRC2012_val_00000001``), and where it came from."""

    wnids: dict[str, str]
    origin: str

    def wnid(self, file_name: str) -> str | None:
        stem = file_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        return self.wnids.get(stem)


def leaf_synsets(meta: bytes | Path) -> dict[int, tuple[str, str]]:
    """ILSVRC2012_ID -> (wnid, words) of the leaf synsets (the 1000 classes) in a meta.mat."""
    try:
        import scipy.io
    except ImportError:
        raise InputError("reading the devkit's meta.mat needs scipy: pip install scipy") from None
    name = str(meta) if isinstance(meta, Path) else META
    try:
        synsets = scipy.io.loadmat(io.BytesIO(meta) if isinstance(meta, bytes) else meta, squeeze_me=True)[
            "synsets"
        ]
        rows = zip(
            synsets["ILSVRC2012_ID"], synsets["WNID"], synsets["words"], synsets["num_children"], strict=True
        )
        leaves = {int(i): (str(w), str(words)) for i, w, words, children in rows if int(children) == 0}
    except Exception as e:  # scipy's MatReadError and whatever a foreign file provokes
        raise InputError(
            f"{name}: not a devkit meta.mat with a 'synsets' table ({e}); check the devkit"
        ) from None
    if not leaves:
        raise InputError(f"{name}: no leaf synsets (num_children == 0) found; check the devkit")
    return leaves


def read_mapping(text: str, name: str = MAPPING) -> dict[int, tuple[str, str]]:
    """``<ILSVRC2012_ID> <wnid>`` lines -> the same table as `leaf_synsets` (words = wnid)."""
    table = {}
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[0].isdigit():
            raise InputError(f"{name}:{n}: expected '<ILSVRC2012_ID> <wnid>', got {line.strip()!r}")
        table[int(parts[0])] = (parts[1], parts[1])
    return table


def ground_truth_labels(text: str, synsets: dict[int, tuple[str, str]], origin: str) -> ValLabels:
    """Line k of the ground truth file is the ILSVRC2012_ID of ILSVRC2012_val_<k>."""
    wnids = {}
    for k, line in enumerate(text.split(), 1):
        if not line.isdigit() or int(line) not in synsets:
            raise InputError(
                f"{origin}: line {k} ({line!r}) is not an ILSVRC2012_ID of the devkit's meta.mat"
            )
        wnids[f"ILSVRC2012_val_{k:08d}"] = synsets[int(line)][0]
    return ValLabels(wnids, origin)


def load_devkit(path: Path) -> ValLabels:
    """Val labels from a devkit: the ``.tar.gz``, its extracted folder, or a folder holding the
    ground truth file beside ``meta.mat`` or ``ILSVRC2012_mapping.txt``."""
    if not path.exists():
        raise InputError(
            f"{path}: devkit not found; give --devkit {DEVKIT_ARCHIVE} (or its extracted folder)"
        )
    files = _devkit_tar_files(path) if path.is_file() else _devkit_folder_files(path)
    if GROUND_TRUTH not in files:
        raise InputError(f"{path}: no {GROUND_TRUTH} in the devkit; give the ILSVRC2012 devkit with --devkit")
    if META in files:
        synsets = leaf_synsets(files[META])
    elif MAPPING in files:
        synsets = read_mapping(_text(files[MAPPING]))
    else:
        raise InputError(f"{path}: the devkit has no {META} (or {MAPPING}) to map its class IDs to wnids")
    return ground_truth_labels(_text(files[GROUND_TRUTH]), synsets, str(path))


def _text(data: bytes | Path) -> str:
    return (data.read_bytes() if isinstance(data, Path) else data).decode("utf-8")


def _devkit_folder_files(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for where in (folder, folder / "data", folder / DEVKIT_FOLDER / "data"):
        for name in (GROUND_TRUTH, META, MAPPING):
            if name not in found and (where / name).is_file():
                found[name] = where / name
    return found


def _devkit_tar_files(archive: Path) -> dict[str, bytes]:
    try:
        with tarfile.open(archive) as tar:
            found = {}
            for member in tar:
                name = member.name.rsplit("/", 1)[-1]
                if member.isfile() and name in (GROUND_TRUTH, META, MAPPING) and name not in found:
                    found[name] = tar.extractfile(member).read()
            return found
    except (tarfile.TarError, OSError, EOFError) as e:
        raise InputError(
            f"{archive}: cannot read the devkit archive ({e}); give a {DEVKIT_ARCHIVE} or its folder"
        ) from None


def find_devkit(root: Path) -> Path | None:
    """The devkit inside a dataset folder, if any (archive first, then the extracted folder)."""
    for candidate in (root / DEVKIT_ARCHIVE, root / DEVKIT_FOLDER):
        if candidate.exists():
            return candidate
    return None


def kaggle_labels(path: Path) -> ValLabels:
    """``LOC_val_solution.csv``: ImageId, then a PredictionString whose first word is the wnid."""
    wnids = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                wnids[row["ImageId"]] = row["PredictionString"].split()[0]
    except (KeyError, IndexError, csv.Error, UnicodeDecodeError) as e:
        raise InputError(f"{path}: not a Kaggle {KAGGLE_SOLUTION} (ImageId,PredictionString): {e}") from None
    return ValLabels(wnids, str(path))
