"""Classify image files with a checkpoint: the same pixels as prep then eval.

Every file goes through `imaging.load_256` (shorter side 256, central 256x256 patch: what prep
stores) and then `Classifier.probabilities` (normalise, center crop or 10 crops, softmax: what
eval computes), so a file's prediction equals eval's for that file after prep with the raw codec.
Files are decoded on a thread pool (Pillow releases the GIL) and scored in batches.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from alexnet_cli.classifier import Classifier
from alexnet_cli.config import PredictConfig
from alexnet_cli.data.imaging import ImageDecodeError, load_256
from alexnet_cli.fileio import atomic_path

STDIN = "-"


@dataclass
class ImageInput:
    name: str  # as the user gave it (a path, or "-" for stdin)
    source: Path | bytes | None  # None: could not be found
    error: str = ""


@dataclass
class Prediction:
    file: str
    predictions: list[dict[str, Any]]  # {"index", "wnid", "name", "prob"}, most probable first


@dataclass
class Failure:
    file: str
    error: str  # one line naming the file


# Formats Pillow names but cannot decode by itself: stubs that need a user-registered handler
# (HDF5 among them: prep's .h5 files often sit beside images), video, PostScript (Ghostscript).
UNDECODABLE = frozenset({"BUFR", "GRIB", "HDF5", "WMF", "MPEG", "EPS"})


def image_extensions() -> frozenset[str]:
    """The file extensions (lower case, with the dot) of every format Pillow decodes."""
    from PIL import Image

    Image.init()
    return frozenset(
        ext
        for ext, fmt in Image.registered_extensions().items()
        if fmt in Image.OPEN and fmt not in UNDECODABLE
    )


def collect_inputs(args: Sequence[str], stdin: BinaryIO | None = None) -> list[ImageInput]:
    """IMAGE arguments -> inputs in order: files as given (whatever their name), folders
    recursively (files with an image extension in any case, sorted, hidden ones skipped),
    "-" the bytes on stdin."""
    extensions = image_extensions()
    inputs: list[ImageInput] = []
    for arg in args:
        path = Path(arg)
        if arg == STDIN:
            inputs.append(ImageInput(STDIN, stdin.read() if stdin is not None else b""))
        elif path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.suffix.lower() in extensions
                and p.is_file()
                and not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            inputs += [ImageInput(str(p), p) for p in found]
            if not found:
                inputs.append(ImageInput(arg, None, f"{arg}: no image files in this folder"))
        elif path.exists():
            inputs.append(ImageInput(arg, path))
        else:
            inputs.append(ImageInput(arg, None, f"{arg}: no such file or folder"))
    return inputs


def load_input(item: ImageInput) -> np.ndarray | str:
    """The 256x256 crop, or a one-line error naming the input."""
    if item.source is None:
        return item.error
    try:
        return load_256(item.source)
    except ImageDecodeError as e:
        said = "<bytes>" if isinstance(item.source, bytes) else str(item.source)
        return f"{item.name}: {str(e).removeprefix(f'{said}: ')}"
    except OSError as e:
        return f"{item.name}: {e.strerror or e}"


def top_predictions(
    probs: torch.Tensor, classes: Sequence[tuple[str, str]], k: int
) -> list[list[dict[str, Any]]]:
    """[N, classes] probabilities -> per image the k most probable classes, most probable first."""
    values, indices = probs.topk(min(k, probs.shape[1]), dim=1)
    return [
        [
            {"index": i, "wnid": classes[i][0], "name": classes[i][1], "prob": p}
            for i, p in zip(row_i, row_p, strict=True)
        ]
        for row_i, row_p in zip(indices.tolist(), values.tolist(), strict=True)
    ]


def predict(
    classifier: Classifier,
    inputs: Sequence[ImageInput],
    top_k: int = PredictConfig.top_k,
    ten_crop: bool = PredictConfig.ten_crop,
    batch_size: int = PredictConfig.batch_size,
    threads: int | None = None,
) -> Iterator[Prediction | Failure]:
    """Yield a Prediction or a Failure for every input, in input order."""
    with ThreadPoolExecutor(max_workers=threads or min(8, os.cpu_count() or 1)) as pool:
        for start in range(0, len(inputs), batch_size):
            chunk = inputs[start : start + batch_size]
            loaded = list(pool.map(load_input, chunk))
            arrays = [px for px in loaded if isinstance(px, np.ndarray)]
            ranked = iter([])
            if arrays:
                probs = classifier.probabilities(
                    torch.from_numpy(np.stack(arrays)), ten_crop, batch_size
                ).cpu()
                ranked = iter(top_predictions(probs, classifier.classes, top_k))
            for item, px in zip(chunk, loaded, strict=True):
                yield (
                    Prediction(item.name, next(ranked))
                    if isinstance(px, np.ndarray)
                    else Failure(item.name, px)
                )


def write_csv(path: str | os.PathLike, predictions: Sequence[Prediction]) -> None:
    """One row per (file, rank): file, rank, index, wnid, name, prob; written atomically."""
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file", "rank", "index", "wnid", "name", "prob"])
        for p in predictions:
            for rank, c in enumerate(p.predictions, 1):
                writer.writerow([p.file, rank, c["index"], c["wnid"], c["name"], c["prob"]])
