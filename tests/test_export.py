"""`alexnet export`: ONNX checked with onnxruntime on real images (batch 1 and 64), the .pt2
program, safetensors weights that every command loads as a checkpoint, the card, refusals."""

from __future__ import annotations

import json
import struct
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from alexnet_cli.checkpoint import load_checkpoint
from alexnet_cli.data.imaging import load_256
from alexnet_cli.classifier import load_classifier
from alexnet_cli.data.transforms import network_input
from alexnet_cli.export import ExportConfig, card_path, run_export
from tests.conftest import cli_in_process

CPU = [torch.device("cpu")]


@pytest.fixture(scope="module")
def extra():
    """The export extra (in the test extra too); without it these tests say what to install."""
    for module in ("onnx", "onnxscript", "onnxruntime", "safetensors"):
        pytest.importorskip(module, reason="the export extra is not installed: pip install -e '.[export]'")


@pytest.fixture(scope="module")
def real_images(shared_data) -> np.ndarray:
    """64 real ImageNet images as predict loads them: uint8 [64, 256, 256, 3]."""
    files = sorted((shared_data / "imagenet-sample").glob("*.JPEG"))[::15][:64]
    return np.stack([load_256(f) for f in files])


@pytest.fixture(scope="module")
def exported(extra, eval_set, tmp_path_factory):
    """The eval_set checkpoint exported to each format once: {suffix: ExportResult}."""
    folder = tmp_path_factory.mktemp("export")
    return {s: run_export(eval_set.checkpoint, ExportConfig(folder / f"alexnet{s}")) for s in (".onnx", ".pt2", ".safetensors")}


def torch_logits(checkpoint, images: np.ndarray) -> torch.Tensor:
    """What `alexnet predict` computes before its softmax, in torch."""
    c = load_classifier(CPU, checkpoint)
    with torch.inference_mode():
        return c.model(network_input(torch.from_numpy(images), c.preprocess, ten_crop=False))


def onnx_logits(path, images: np.ndarray) -> np.ndarray:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"images": images})[0]


@pytest.mark.parametrize("batch", [1, 64])
def test_onnxruntime_logits_are_within_1e_4_of_torch_on_real_images(exported, eval_set, real_images, batch):
    images = real_images[:batch]
    got, want = onnx_logits(exported[".onnx"].output, images), torch_logits(eval_set.checkpoint, images)
    assert got.shape == (batch, len(eval_set.classes))
    assert np.abs(got - want.numpy()).max() <= 1e-4
    assert (got.argmax(1) == want.argmax(1).numpy()).all()


def test_the_onnx_graph_is_the_inference_network_and_carries_its_card(exported, eval_set):
    import onnx

    result = exported[".onnx"]
    model = onnx.load(str(result.output))
    ops = {n.op_type for n in model.graph.node}
    assert "Dropout" not in ops and "ScatterND" not in ops  # eval mode; LRN as plain ops
    assert {"Conv", "Gemm", "Pow", "MaxPool"} <= ops
    (inp,), (out,) = model.graph.input, model.graph.output

    def dims(value) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert (inp.name, inp.type.tensor_type.elem_type, dims(inp)) == ("images", onnx.TensorProto.UINT8, ["batch", 256, 256, 3])
    assert (out.name, dims(out)) == ("logits", ["batch", len(eval_set.classes)])
    card = json.loads(card_path(result.output).read_text())
    assert json.loads({p.key: p.value for p in model.metadata_props}["alexnet-cli"]) == card
    assert card["classes"] == [list(c) for c in eval_set.classes]
    assert card["model_config"]["arch"] == "paper" and card["preprocessing"]["kind"] == "mean_image"
    assert card["graph"]["input"]["shape"] == ["batch", 256, 256, 3]


def test_the_pt2_program_runs_like_torch_at_another_batch_size(exported, eval_set):
    with open(exported[".pt2"].output, "rb") as f:
        program = torch.export.load(f)
    with torch.inference_mode():
        got = program.module()(torch.from_numpy(eval_set.pixels))
    assert (got - torch_logits(eval_set.checkpoint, eval_set.pixels)).abs().max() <= 1e-4


def test_safetensors_weights_are_a_checkpoint_without_pickle(exported, eval_set, shared_data, capsys):
    path = exported[".safetensors"].output
    raw = path.read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + header_len])  # plain JSON and raw tensors: nothing to unpickle
    assert header["conv2.weight"]["shape"] == [256, 48, 5, 5] and header["preprocess.mean_image"]["shape"] == [3, 256, 256]
    original, loaded = load_checkpoint(eval_set.checkpoint), load_checkpoint(path)
    assert original["model"].keys() == loaded["model"].keys()
    assert all(torch.equal(original["model"][k], loaded["model"][k]) for k in original["model"])
    assert torch.equal(original["preprocess"]["mean_image"], loaded["preprocess"]["mean_image"])
    image = shared_data / "fixtures/imagenet_named/n02123045_tabby.JPEG"
    outputs = []
    for ckpt in (eval_set.checkpoint, path):
        code, out, err = cli_in_process(capsys, "predict", image, "--checkpoint", ckpt, "--json", "--gpus", "0")
        assert code == 0, err
        outputs.append(json.loads(out)[0]["predictions"])
    assert outputs[0] == outputs[1]


def test_torchvisions_pretrained_net_exports_with_its_mean_std(extra, torch_home, torchvision_weights, real_images,
                                                               tmp_path, capsys):
    from torchvision import transforms as T
    from torchvision.models import alexnet

    out = tmp_path / "torchvision.onnx"
    code, stdout, err = cli_in_process(capsys, "export", "torchvision", out, "--json")
    assert code == 0, err
    summary = json.loads(stdout)
    assert summary["classes"] == 1000 and summary["max_abs_diff"] <= 1e-4
    card = json.loads(card_path(out).read_text())
    assert card["model_config"]["arch"] == "torchvision" and card["preprocessing"]["mean"] == [0.485, 0.456, 0.406]
    model = alexnet().eval()
    model.load_state_dict(torch.load(torchvision_weights, weights_only=True))
    tv = T.Compose([T.ToTensor(), T.CenterCrop(224), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    images = real_images[:4]
    with torch.no_grad():
        want = model(torch.stack([tv(p) for p in images]))
    got = onnx_logits(out, images)
    assert np.abs(got - want.numpy()).max() <= 1e-4
    assert torch.allclose(F.softmax(torch.from_numpy(got), 1), F.softmax(want, 1), atol=1e-6)


def test_refusals_are_one_line_and_nothing_is_overwritten(extra, exported, eval_set, tmp_path, capsys, monkeypatch):
    onnx_file = exported[".onnx"].output
    before = onnx_file.stat().st_mtime_ns
    card_only = tmp_path / "new.onnx"
    card_path(card_only).write_text("{}")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(eval_set.checkpoint.read_bytes()[:4096])
    cases = [
        ([eval_set.checkpoint, tmp_path / "model.h5"], "unknown export format '.h5'; end OUT in .onnx, .pt2, .safetensors"),
        ([eval_set.checkpoint, onnx_file], "already exists; choose another name or add --force"),
        ([eval_set.checkpoint, card_only], "new.onnx.json: already exists"),
        ([truncated, tmp_path / "x.onnx"], "truncated.pt: not a readable checkpoint"),
        ([tmp_path / "missing.pt", tmp_path / "x.onnx"], "no such checkpoint"),
        ([eval_set.checkpoint, tmp_path / "no" / "x.onnx"], "does not exist; create it"),
    ]
    for args, message in cases:
        code, _, err = cli_in_process(capsys, "export", *args)
        assert code == 2 and message in err and err.count("\n") == 1, (args, err)
    assert onnx_file.stat().st_mtime_ns == before and not (tmp_path / "x.onnx").exists()
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # as if the extra were not installed
    code, _, err = cli_in_process(capsys, "export", eval_set.checkpoint, tmp_path / "y.onnx")
    assert code == 2 and "needs onnxscript, not installed; install the export extra: pip install -e \".[export]\"" in err
