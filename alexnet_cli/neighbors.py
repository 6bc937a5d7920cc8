"""`alexnet neighbors`: the paper's Figure 4. Each query image beside the k gallery images whose
fc7 vectors (the last, 4096-dimensional hidden layer) are nearest to its own in Euclidean distance.

The gallery is a prepared dataset's split, whose features are computed once and kept in a cache
file named by the weights, the data and the layer (so a changed checkpoint or dataset never
gets stale features), or a features file written by `alexnet features`. The search reads the
gallery in chunks of about `chunk_mb` MiB, so its memory does not grow with the gallery: squared
distances |q|^2 - 2 q.g + |g|^2 in float32 on the device, keeping each query's k smallest; the
winners' distances are then computed again exactly (float64, from their stored rows).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from alexnet_cli.classifier import Classifier, load_classifier
from alexnet_cli.config import FeaturesConfig, NeighborsConfig
from alexnet_cli.data.format.index import PreparedDataset
from alexnet_cli.errors import InputError
from alexnet_cli.evaluate import loader_workers
from alexnet_cli.features import (
    FORMAT_NAME as FEATURES_FORMAT,
)
from alexnet_cli.features import (
    FeaturesFile,
    Inputs,
    check_layer,
    embed,
    extract,
    one_device,
    weights_fingerprint,
)
from alexnet_cli.fileio import check_new_file
from alexnet_cli.predict import ImageInput, collect_inputs, load_input


def default_cache() -> Path:
    """$ALEXNET_CACHE, else alexnet-cli/ under $XDG_CACHE_HOME (~/.cache)."""
    if os.environ.get("ALEXNET_CACHE"):
        return Path(os.environ["ALEXNET_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "alexnet-cli"


def nearest(
    queries: np.ndarray,
    gallery: h5py.Dataset | np.ndarray,
    k: int,
    chunk_rows: int,
    device: torch.device | str = "cpu",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Each query's k nearest gallery rows: (rows int64 [q, k], distances float64 [q, k]), nearest
    first, ties to the lower row. Reads `chunk_rows` gallery rows at a time."""
    n = gallery.shape[0]
    k = min(k, n)
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(device)
    q_sq = (q * q).sum(1, keepdim=True)
    best_d = torch.empty(len(q), 0, device=device)
    best_i = torch.empty(len(q), 0, dtype=torch.int64, device=device)
    for start in range(0, n, chunk_rows):
        g = torch.from_numpy(np.asarray(gallery[start : start + chunk_rows], np.float32)).to(device)
        # |g|^2 by a norm: no chunk-sized temporary, so the chunk is the step's only large buffer
        d2 = (q_sq - 2 * (q @ g.T) + torch.linalg.vector_norm(g, dim=1).square()).clamp_min_(0)
        rows = torch.arange(start, start + len(g), device=device).expand(len(q), -1)
        candidates = torch.cat([best_d, d2], 1)
        top = candidates.topk(min(k, candidates.shape[1]), dim=1, largest=False)
        best_d, best_i = top.values, torch.cat([best_i, rows], 1).gather(1, top.indices)
        done = start + len(g)
        del g  # before the next read: one chunk in memory at a time, not two
        if progress is not None:
            progress(done, n)
    return _exact(queries, gallery, best_i.cpu().numpy())


def _exact(
    queries: np.ndarray, gallery: h5py.Dataset | np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Distances of the chosen rows in float64, and the rows re-sorted by them (then by row)."""
    unique, inverse = np.unique(rows, return_inverse=True)
    vectors = np.asarray(gallery[unique], np.float64)[inverse.reshape(rows.shape)]  # [q, k, dim]
    distances = np.sqrt(((vectors - np.asarray(queries, np.float64)[:, None, :]) ** 2).sum(-1))
    order = np.lexsort((rows, distances), axis=1)
    return np.take_along_axis(rows, order, 1), np.take_along_axis(distances, order, 1)


class Gallery:
    """The gallery's features file and where its rows' images and class names come from."""

    def __init__(self, features: FeaturesFile, cache: str, dataset: PreparedDataset | None):
        self.features = features
        self.cache = cache  # "given" (a features file), "reused" or "computed" (the cache file)
        self.dataset = dataset  # the prepared dataset its rows come from, if there is one
        self.reader = dataset.split(str(features.attrs["split"])) if dataset is not None else None

    def describe(self, label: int) -> tuple[str, str]:
        """(wnid, name) of a row's label, or empty strings for image files."""
        return self.dataset.classes[label] if self.dataset is not None and label >= 0 else ("", "")

    def image(self, index: int, source: str) -> np.ndarray | None:
        """A row's 256x256 image: from the dataset, else its file; None if it cannot be read now."""
        if self.reader is not None and index >= 0:
            return self.reader.image(index)
        pixels = load_input(ImageInput(source, Path(source)))
        return pixels if isinstance(pixels, np.ndarray) else None

    def close(self) -> None:
        self.features.close()
        if self.reader is not None:
            self.reader.close()


def open_gallery(
    config: NeighborsConfig,
    classifier: Classifier,
    fingerprint: str,
    checkpoint: str,
    progress: Callable[[int, int], None] | None,
    say: Callable[[str], None],
) -> Gallery:
    """The gallery's features: the given file (checked against the weights and layer), or the
    cache file for (weights, dataset split, layer), computed first if it is not there."""
    path = Path(config.gallery)
    try:
        with h5py.File(path, "r") as f:
            kind = f.attrs.get("format")
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(
            f"{path}: no such gallery; give a prepared dataset or a file of `alexnet features`"
        ) from None
    except OSError:
        raise InputError(
            f"{path}: not an HDF5 file; give a prepared dataset or a file of `alexnet features`"
        ) from None
    if kind == FEATURES_FORMAT:
        features = FeaturesFile(path)
        layer = features.attrs["layer"]
        if layer != config.layer or features.attrs["weights_sha256"] != fingerprint:
            features.close()
            raise InputError(
                f"{path}: holds {layer} features, not {config.layer}; pass --layer {layer} or another file"
                if layer != config.layer
                else f"{path}: holds the features of other weights than {checkpoint}'s; "
                "give the prepared dataset, "
                "or rerun `alexnet features` with this checkpoint"
            )
        data = str(features.attrs["data"])
        return Gallery(features, "given", PreparedDataset(data) if data and Path(data).is_file() else None)
    inputs = Inputs(dataset=PreparedDataset(path), split=config.split)
    key = hashlib.sha256(f"{fingerprint}\0{inputs.fingerprint()}\0{config.layer}".encode()).hexdigest()[:16]
    cache = (
        (config.cache or default_cache()) / "features" / f"{path.stem}-{config.split}-{config.layer}-{key}.h5"
    )
    if cache.is_file():
        return Gallery(FeaturesFile(cache), "reused", inputs.dataset)
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(
            f"{cache.parent}: cannot create the feature cache ({e.strerror}); choose --cache DIR"
        ) from None
    say(f"computing the gallery's {config.layer} features once: {len(inputs):,} images -> {cache}")
    extract(
        classifier,
        inputs,
        FeaturesConfig(cache, config.layer, config.split, config.batch_size, config.gpus, config.workers),
        checkpoint,
        progress,
        say,
        fingerprint,
    )
    return Gallery(FeaturesFile(cache), "computed", inputs.dataset)


@dataclass
class QueryResult:
    file: str
    neighbors: list[dict[str, Any]]  # rank, row, distance, source, label, wnid, name


@dataclass
class NeighborsResult:
    gallery: Path
    features: Path
    cache: str
    layer: str
    rows: int
    dim: int
    queries: list[QueryResult]
    failed: list[str]
    search_seconds: float
    figure: Path | None = None
    query_pixels: list[np.ndarray] = field(default_factory=list, repr=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "gallery": str(self.gallery),
            "features": str(self.features),
            "cache": self.cache,
            "layer": self.layer,
            "rows": self.rows,
            "dim": self.dim,
            "search_seconds": self.search_seconds,
            "rows_per_s": self.rows / self.search_seconds if self.search_seconds > 0 else 0.0,
            "figure": str(self.figure) if self.figure else None,
            "failed": self.failed,
            "queries": [{"file": q.file, "neighbors": q.neighbors} for q in self.queries],
        }


def run_neighbors(
    checkpoint: str,
    queries: Sequence[str],
    config: NeighborsConfig,
    say: Callable[[str], None] = lambda line: None,
    gallery_progress: Callable[[int, int], None] | None = None,
    search_progress: Callable[[int, int], None] | None = None,
) -> NeighborsResult:
    """`alexnet neighbors`: embed the queries, scan the gallery (its features computed first if
    they are not cached), draw the figure if asked. Progress: (done, total) images."""
    check_layer(config.layer)
    if config.k < 1 or config.chunk_mb < 1:
        raise InputError("-k and --chunk-mb must be at least 1")
    if config.figure is not None:
        if config.figure.suffix.lower() != ".png":
            raise InputError(f"{config.figure}: the figure is a PNG; end the file name in .png")
        check_new_file(config.figure, config.force)
    classifier = load_classifier(one_device(config.gpus), checkpoint)
    names, pixels, vectors, failed = _embed_queries(classifier, queries, config)
    gallery = open_gallery(
        config, classifier, weights_fingerprint(classifier), str(checkpoint), gallery_progress, say
    )
    try:
        feats = gallery.features.features
        start = time.perf_counter()
        chunk_rows = max(1, (config.chunk_mb << 20) // (4 * feats.shape[1]))
        rows, distances = nearest(vectors, feats, config.k, chunk_rows, classifier.device, search_progress)
        seconds = time.perf_counter() - start
        sources, index, labels = (
            gallery.features.rows(rows.ravel(), name).reshape(rows.shape)
            for name in ("sources", "index", "labels")
        )
        results = []
        for q, name in enumerate(names):
            neighbors = []
            for rank in range(rows.shape[1]):
                wnid, cls = gallery.describe(int(labels[q, rank]))
                neighbors.append(
                    {
                        "rank": rank + 1,
                        "row": int(rows[q, rank]),
                        "distance": float(distances[q, rank]),
                        "source": sources[q, rank],
                        "index": int(index[q, rank]),
                        "label": int(labels[q, rank]),
                        "wnid": wnid,
                        "name": cls,
                    }
                )
            results.append(QueryResult(name, neighbors))
        result = NeighborsResult(
            Path(config.gallery),
            gallery.features.path,
            gallery.cache,
            config.layer,
            *feats.shape,
            results,
            failed,
            seconds,
            config.figure,
            pixels,
        )
        if config.figure is not None:
            draw_figure(result, gallery, config.figure)
        return result
    finally:
        gallery.close()


def _embed_queries(
    classifier: Classifier, queries: Sequence[str], config: NeighborsConfig
) -> tuple[list[str], list[np.ndarray], np.ndarray, list[str]]:
    """The readable queries' names, 256x256 pixels (for the figure) and vectors; failure lines."""
    items = collect_inputs(queries)
    names, pixels, vectors, failed = [], [], [], []
    threads = loader_workers() if config.workers is None else max(1, config.workers)
    for batch in Inputs(files=items).batches(0, config.batch_size, threads):
        failed += batch.failures
        if batch.pixels is not None:
            names += batch.sources
            pixels += list(batch.pixels.numpy())
            vectors.append(embed(classifier, batch.pixels, config.layer))
    if not vectors:
        raise InputError(f"none of the {len(items)} query images could be read: {failed[0]}")
    return names, pixels, np.concatenate(vectors), failed


def draw_figure(result: NeighborsResult, gallery: Gallery, path: Path) -> None:
    """Figure 4's layout: a row per query, the query first, then its neighbours nearest first."""
    from alexnet_cli.plots import draw_neighbors

    rows = []
    for query, pixels in zip(result.queries, result.query_pixels, strict=True):
        cells = [
            (
                gallery.image(n["index"], n["source"]),
                f"{n['name'] or Path(n['source']).name}\nd = {n['distance']:.3g}",
            )
            for n in query.neighbors
        ]
        rows.append(((pixels, f"query\n{Path(query.file).name}"), cells))
    draw_neighbors(rows, path, title=f"{result.layer} nearest neighbours in {result.gallery.name}")
