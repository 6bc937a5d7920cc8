"""`alexnet neighbors` (Figure 4): the chunked search against brute force, bounded reads, a gallery
image finding itself first, the feature cache reused and invalidated, the figure, refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from alexnet_cli.errors import InputError
from alexnet_cli.neighbors import NeighborsConfig, nearest, run_neighbors
from tests.conftest import cli_in_process, write_checkpoint, write_dataset


def brute_force(queries: np.ndarray, gallery: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d = np.sqrt(((queries[:, None, :].astype(np.float64) - gallery[None].astype(np.float64)) ** 2).sum(-1))
    order = np.argsort(d, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(d, order, 1)


class CountingRows:
    """A gallery array that records how many rows each read asked for."""

    def __init__(self, array: np.ndarray):
        self.array, self.shape, self.reads = array, array.shape, []

    def __getitem__(self, rows):
        out = self.array[rows]
        self.reads.append(len(out))
        return out


@pytest.mark.parametrize("k", [1, 6, 2000])
def test_the_chunked_search_equals_brute_force(k):
    rng = np.random.default_rng(k)
    gallery = np.maximum(rng.normal(size=(1000, 64)), 0).astype(np.float32) * 5  # ReLU'd, like fc7
    queries = np.concatenate([gallery[[17, 503]], rng.normal(size=(3, 64)).astype(np.float32)])
    rows, distances = nearest(queries, gallery, k, chunk_rows=37)
    want_rows, want_distances = brute_force(queries, gallery, min(k, 1000))
    assert np.array_equal(rows, want_rows)
    np.testing.assert_allclose(distances, want_distances, rtol=1e-12)
    assert rows[0, 0] == 17 and rows[1, 0] == 503 and distances[0, 0] == distances[1, 0] == 0.0


def test_the_gallery_is_read_in_bounded_chunks():
    gallery = CountingRows(np.random.default_rng(0).random((5000, 32), dtype=np.float32))
    seen = []
    nearest(gallery.array[:4] + 0.01, gallery, 6, chunk_rows=512, progress=lambda done, total: seen.append(done))
    scan, exact = gallery.reads[:-1], gallery.reads[-1]
    assert sum(scan) == 5000 and max(scan) == 512 and exact <= 4 * 6
    assert seen[-1] == 5000 and len(seen) == len(scan)


def test_a_gallery_image_used_as_query_finds_itself_first(eval_set, tmp_path, capsys):
    """eval_set's split is the raw pixels of real files: the file as a query is that gallery row."""
    from alexnet_cli.data.format.index import PreparedDataset

    sources = PreparedDataset(eval_set.data).split("val").sources()
    figure = tmp_path / "figure4.png"
    code, out, err = cli_in_process(capsys, "neighbors", eval_set.checkpoint, sources[2], sources[5],
                                    "--gallery", eval_set.data, "--split", "val", "-k", "4", "--out", figure,
                                    "--cache", tmp_path / "cache", "--json", "--gpus", "0")
    assert code == 0, err
    result = json.loads(out)
    for query, row in zip(result["queries"], (2, 5)):
        first, second = query["neighbors"][:2]
        assert (first["row"], first["source"], first["label"]) == (row, sources[row], eval_set.labels[row])
        # 0 up to float32 rounding: the query's batch differs from the gallery's (a few 1e-6)
        assert first["distance"] < 1e-4 < second["distance"]
        assert [n["rank"] for n in query["neighbors"]] == [1, 2, 3, 4]
        assert [n["distance"] for n in query["neighbors"]] == sorted(n["distance"] for n in query["neighbors"])
        assert first["wnid"] == eval_set.classes[eval_set.labels[row]][0]
    assert result["cache"] == "computed" and result["rows"] == 7 and result["dim"] == 4096
    with Image.open(figure) as im:
        assert im.format == "PNG" and im.width > im.height > 0  # 2 rows of 1 query + 4 neighbours


def test_the_cache_is_reused_and_invalidated_by_new_weights_or_data(eval_set, tmp_path):
    query = [str(tmp_path / "query.png")]
    Image.fromarray(eval_set.pixels[1]).save(query[0])
    config = NeighborsConfig(eval_set.data, split="val", k=2, cache=tmp_path / "cache")
    runs = [run_neighbors(str(eval_set.checkpoint), query, config) for _ in range(2)]
    assert [r.cache for r in runs] == ["computed", "reused"] and runs[0].features == runs[1].features
    other_weights = write_checkpoint(tmp_path / "other.pt", eval_set.classes, eval_set.pixels.mean(0), seed=1)
    assert run_neighbors(str(other_weights), query, config).cache == "computed"
    # the same images, one of them changed: another dataset fingerprint
    pixels = eval_set.pixels.copy()
    pixels[6] = 255 - pixels[6]
    data = write_dataset(tmp_path / "changed.h5", [(p, y, f"img{i}") for i, (p, y) in enumerate(zip(pixels, eval_set.labels))],
                         eval_set.classes)
    changed = run_neighbors(str(eval_set.checkpoint), query, NeighborsConfig(data, split="val", k=2, cache=tmp_path / "cache"))
    assert changed.cache == "computed" and changed.features != runs[0].features
    assert len(list((tmp_path / "cache" / "features").glob("*.h5"))) == 3


def test_a_features_file_is_a_gallery_for_its_own_weights_and_layer(eval_set, shared_data, tmp_path, capsys):
    folder = shared_data / "fixtures/imagenet_named"
    gallery = tmp_path / "gallery.h5"
    code, _, err = cli_in_process(capsys, "features", eval_set.checkpoint, folder, "--out", gallery, "--gpus", "0")
    assert code == 0, err
    query = sorted(folder.iterdir())[3]
    result = run_neighbors(str(eval_set.checkpoint), [str(query)], NeighborsConfig(gallery, k=3))
    assert result.cache == "given" and result.queries[0].neighbors[0]["source"] == str(query)
    with pytest.raises(InputError, match="holds the features of other weights than"):
        other = write_checkpoint(tmp_path / "other.pt", eval_set.classes, eval_set.pixels.mean(0), seed=2)
        run_neighbors(str(other), [str(query)], NeighborsConfig(gallery, k=3))
    with pytest.raises(InputError, match="holds fc7 features, not fc6; pass --layer fc7"):
        run_neighbors(str(eval_set.checkpoint), [str(query)], NeighborsConfig(gallery, k=3, layer="fc6"))


def test_refusals_are_one_line(eval_set, shared_data, tmp_path, capsys):
    image = shared_data / "fixtures/imagenet_named/n02123045_tabby.JPEG"
    existing = tmp_path / "existing.png"
    existing.write_bytes(b"")
    common = ["--split", "val", "--cache", tmp_path / "cache"]
    cases = [
        ([image, "--gallery", eval_set.data, "--out", existing, *common], "already exists; choose another name or add --force"),
        ([image, "--gallery", eval_set.data, "--out", tmp_path / "f.jpg", *common], "the figure is a PNG"),
        ([image, "--gallery", tmp_path / "none.h5", *common], "no such gallery"),
        ([image, "--gallery", image, *common], "not an HDF5 file"),
        ([image, "--gallery", eval_set.data, "--layer", "conv9", *common], "--layer conv9: choose one of"),
        ([tmp_path / "missing.jpg", "--gallery", eval_set.data, *common], "none of the 1 query images could be read"),
    ]
    for args, message in cases:
        code, _, err = cli_in_process(capsys, "neighbors", eval_set.checkpoint, *args, "--gpus", "0")
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)


def test_the_cli_defaults_are_the_configs():
    """The options of features, neighbors and export start from their config dataclasses' values."""
    import dataclasses

    import typer.main

    from alexnet_cli.cli import app
    from alexnet_cli.export import ExportConfig
    from alexnet_cli.features import FeaturesConfig

    commands = typer.main.get_command(app).commands
    for name, config in (("features", FeaturesConfig), ("neighbors", NeighborsConfig), ("export", ExportConfig)):
        options = {p.name: p.default for p in commands[name].params}
        defaults = {f.name: f.default for f in dataclasses.fields(config) if f.default is not dataclasses.MISSING}
        shared = defaults.keys() & options.keys()
        assert len(shared) >= 2 and {k: options[k] for k in shared} == {k: defaults[k] for k in shared}, name
