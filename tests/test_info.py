"""`alexnet info`: the layer table computed from the modules."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from alexnet_cli.cli import app
from alexnet_cli.info import layer_table
from alexnet_cli.config import ModelConfig

runner = CliRunner()


def test_info_json_paper_totals():
    result = runner.invoke(app, ["info", "--json"])
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)
    assert s["total_params"] == 60_965_224
    assert s["total_macs"] == 724_406_816
    names = [layer["name"] for layer in s["layers"]]
    assert names[0] == "conv1" and names[-1] == "fc8"
    for layer in s["layers"]:
        assert {"name", "output_shape", "params", "macs"} <= set(layer)
    assert sum(layer["params"] for layer in s["layers"]) == s["total_params"]


def test_info_json_torchvision_totals():
    s = json.loads(runner.invoke(app, ["info", "--json", "--arch", "torchvision"]).stdout)
    assert (s["total_params"], s["total_macs"]) == (61_100_840, 714_188_480)


def test_layer_shapes_and_towers_follow_figure_2():
    rows = {r.name: r for r in layer_table(ModelConfig())}
    assert rows["conv1"].output_shape == [96, 55, 55]
    assert rows["pool1"].output_shape == [96, 27, 27]
    assert rows["conv2"].output_shape == [256, 27, 27]
    assert rows["pool2"].output_shape == [256, 13, 13]
    assert rows["conv5"].output_shape == [256, 13, 13]
    assert rows["pool5"].output_shape == [256, 6, 6]
    assert rows["conv1"].macs == 55 * 55 * 96 * 3 * 11 * 11
    assert rows["conv2"].macs == 27 * 27 * 256 * 48 * 5 * 5  # each kernel sees its own tower's 48 maps
    assert rows["conv3"].macs == 13 * 13 * 384 * 256 * 3 * 3  # conv3 sees both towers
    assert rows["conv3"].input_from == "both" and rows["conv4"].input_from == "own"
    assert rows["conv2"].towers == [0, 1] and rows["fc8"].towers == [0]


def test_info_num_classes_changes_fc8_only():
    s = json.loads(runner.invoke(app, ["info", "--json", "--num-classes", "10"]).stdout)
    assert s["total_params"] == 60_965_224 - 990 * 4097


def test_info_table_renders():
    result = runner.invoke(app, ["info"])
    assert result.exit_code == 0
    assert "conv1" in result.stdout and "60,965,224" in result.stdout
