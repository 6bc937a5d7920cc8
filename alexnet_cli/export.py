"""`alexnet export`: a trained network as ONNX, a torch.export program, or safetensors weights.

All three hold the inference network: eval mode, no augmentation, dropout off. The paper
halves the dropout layers' outputs at test time; torch's dropout scales by 1/(1-p) while
training instead, so the trained weights already carry that scale and inference is the plain
forward pass.

The two graphs (``.onnx``, ``.pt2``) take what `alexnet predict` feeds its network and include
every step after it: input ``images``, uint8 ``[batch, 256, 256, 3]`` RGB (each image's central
256x256 patch after its shorter side is resized to 256: `imaging.load_256`), then the
checkpoint's normalisation (the paper's mean image, or torchvision's mean/std), the central
224x224 crop, the network; output ``logits`` ``[batch, classes]``. So the mean image ships
inside the graph. ``.safetensors`` holds the bare network's weights (the grouped layout of
model.py) and the mean image as the tensor ``preprocess.mean_image``.

Every export writes a card beside it, ``OUT.json`` (e.g. ``alexnet.onnx.json``): the model
config, the class table, the preprocessing steps and the graph's input and output. The same
card is embedded in the file (ONNX metadata, .pt2 extra file, safetensors metadata), so a
``.safetensors`` file alone is a checkpoint that every command loads, without pickle.
"""

from __future__ import annotations

import importlib
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from alexnet_cli import __version__
from alexnet_cli.checkpoint import FORMAT_NAME as CHECKPOINT_FORMAT
from alexnet_cli.checkpoint import FORMAT_VERSION as CHECKPOINT_VERSION
from alexnet_cli.classifier import Classifier, load_classifier
from alexnet_cli.config import ExportConfig
from alexnet_cli.data.transforms import network_input
from alexnet_cli.errors import AlexnetError, InputError
from alexnet_cli.fileio import atomic_path, atomic_write_text, check_new_file

FORMAT_NAME = "alexnet-cli export"
FORMAT_VERSION = 1
FORMATS = {".onnx": "onnx", ".pt2": "torch.export", ".safetensors": "safetensors"}
# What each format needs beyond torch: the ONNX exporter (onnx, onnxscript) and the runtime that
# checks its output (onnxruntime); safetensors to write and read the weights.
NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime"), "torch.export": (), "safetensors": ("safetensors",)}
CARD_KEY = "alexnet-cli"  # the card's name inside each file
MEAN_IMAGE = "preprocess.mean_image"
INPUT, OUTPUT = "images", "logits"
IMAGE_SHAPE = (256, 256, 3)
CHECK_IMAGES = 3  # the round-trip check's batch: not the traced batch of 2, so batch is dynamic
TOLERANCE = 1e-4  # largest allowed |logit difference| against torch, relative to max(1, |logits|)


@dataclass
class ExportResult:
    output: Path
    card: Path
    format: str
    bytes: int
    source: str
    classes: int
    max_abs_diff: float  # largest |logit| difference of the written file against torch (check)
    max_abs_logit: float
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "output": str(self.output),
            "card": str(self.card),
            "check_images": CHECK_IMAGES,
        }


def card_path(out: str | os.PathLike) -> Path:
    """The JSON card beside an export: OUT plus ".json"."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def require_extra(kind: str, why: str) -> None:
    """One line naming the `export` extra when a package `kind` needs is not installed."""
    missing = []
    for module in NEEDS[kind]:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(module)
    if missing:
        raise InputError(
            f"{why} needs {', '.join(missing)}, not installed; install the export extra: "
            f'pip install -e ".[export]" (or pip install {" ".join(missing)})'
        )


class InferenceNet(nn.Module):
    """uint8 images [N, 256, 256, 3] -> logits [N, classes]: `network_input` (normalisation and the
    central 224x224 crop) then the network in eval mode, exactly as `alexnet predict` runs them."""

    def __init__(self, classifier: Classifier):
        super().__init__()
        self.net = classifier.model.eval()
        self.preprocess = classifier.preprocess

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(network_input(images, self.preprocess, ten_crop=False))


def model_card(classifier: Classifier, kind: str) -> dict[str, Any]:
    """What a user of the exported file needs to know: config, classes, preprocessing, graph I/O."""
    pre = classifier.preprocess
    if pre["kind"] == "mean_image":
        normalise = (
            f"subtract the training set's mean image (float32 [3, 256, 256], pixel units 0..255; "
            f"{'inside the graph' if kind != 'safetensors' else f'the tensor {MEAN_IMAGE}'})"
        )
        numbers = {}
    else:
        normalise = "scale to 0..1, subtract `mean` and divide by `std`, per RGB channel"
        numbers = {"mean": list(pre["mean"]), "std": list(pre["std"])}
    card = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "created_by": f"alexnet-cli {__version__}",
        "kind": kind,
        "source": classifier.source,
        "model_config": asdict(classifier.config),
        "classes": [list(c) for c in classifier.classes],
        "preprocessing": {
            "kind": pre["kind"],
            **numbers,
            "steps": [
                "decode as RGB; resize the shorter side to 256 (antialiased); keep the central 256x256 patch",
                normalise,
                "keep the central 224x224 patch (the network's input, float32 NCHW)",
            ],
        },
    }
    if kind == "safetensors":
        card["weights"] = (
            "state_dict of alexnet_cli.model.build_model(ModelConfig(**model_config)), eval mode"
        )
    else:
        card["graph"] = {
            "input": {
                "name": INPUT,
                "dtype": "uint8",
                "shape": ["batch", *IMAGE_SHAPE],
                "layout": "NHWC, RGB",
            },
            "output": {"name": OUTPUT, "dtype": "float32", "shape": ["batch", len(classifier.classes)]},
            "includes": "preprocessing steps 2-3 and the network in eval mode; "
            "softmax(logits) gives probabilities",
        }
    return card


def run_export(checkpoint: str | os.PathLike, config: ExportConfig) -> ExportResult:
    """Load CKPT (a checkpoint, a .safetensors export or `torchvision`), write OUT by its
    suffix and its card, each atomically, after checking OUT's network against torch: read back
    with onnxruntime or the safetensors loader; a .pt2's program as exported."""
    start = time.perf_counter()
    out = Path(config.out)
    kind = FORMATS.get(out.suffix.lower())
    if kind is None:
        raise InputError(f"{out}: unknown export format '{out.suffix}'; end OUT in {', '.join(FORMATS)}")
    card_file = card_path(out)
    check_new_file(out, config.force)
    check_new_file(card_file, config.force)
    require_extra(kind, f"export to {out.suffix}")
    classifier = load_classifier([torch.device("cpu")], checkpoint)
    card = model_card(classifier, kind)
    net = InferenceNet(classifier)
    images = torch.from_numpy(_sample_images(CHECK_IMAGES))
    with torch.inference_mode():
        expected = net(images)
    with atomic_path(out) as tmp:
        if kind == "safetensors":
            _write_safetensors(classifier, card, tmp)
            got = _safetensors_logits(tmp, images)
        elif kind == "onnx":
            _write_onnx(net, card, tmp, config.opset)
            got = _onnx_logits(tmp, images)
        else:
            program = _write_pt2(net, card, tmp)
            with torch.inference_mode():
                got = program(images)
        diff, scale = float((got - expected).abs().max()), float(expected.abs().max())
        if not diff <= TOLERANCE * max(1.0, scale):
            raise AlexnetError(
                f"{out}: the exported {kind} network differs from torch by {diff:.3g}; not written"
            )
    atomic_write_text(card_file, json.dumps(card, indent=1) + "\n")
    return ExportResult(
        out,
        card_file,
        kind,
        out.stat().st_size,
        classifier.source,
        len(classifier.classes),
        diff,
        scale,
        time.perf_counter() - start,
    )


def _sample_images(n: int) -> np.ndarray:
    """n fixed pseudo-random uint8 images [n, 256, 256, 3] for tracing and the round-trip check."""
    return np.random.default_rng(0).integers(0, 256, size=(n, *IMAGE_SHAPE), dtype=np.uint8)


def _trace_args() -> tuple[tuple[torch.Tensor], tuple[dict[int, Any]]]:
    """Example input and dynamic shapes for both exporters: batch 2 (torch specialises sizes 0
    and 1), its size a named dynamic dim."""
    return (torch.from_numpy(_sample_images(2)),), ({0: torch.export.Dim("batch")},)


def _write_pt2(net: InferenceNet, card: dict[str, Any], path: Path) -> nn.Module:
    """Export and save the program; returns it as a module for the check. (Not read back from
    the file: torch.export.load unpickles, which this package never does.)"""
    args, dynamic = _trace_args()
    program = torch.export.export(net, args, dynamic_shapes=dynamic)
    with open(path, "wb") as f:  # a file object: torch.export wants a path to end in .pt2, not .tmp
        torch.export.save(program, f, extra_files={CARD_KEY: json.dumps(card)})
    return program.module()


def _write_onnx(net: InferenceNet, card: dict[str, Any], path: Path, opset: int | None) -> None:
    import warnings

    args, dynamic = _trace_args()
    with warnings.catch_warnings():  # the exporter's advice on its own internals is not the user's
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            net,
            args,
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_shapes=dynamic,
            opset_version=opset,
            dynamo=True,
            verbose=False,
        )
    program.model.metadata_props[CARD_KEY] = json.dumps(card)
    program.save(path, external_data=False)  # one file: 61M float32 weights fit ONNX's 2 GB


def _onnx_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run([OUTPUT], {INPUT: images.numpy()})[0])


def _write_safetensors(classifier: Classifier, card: dict[str, Any], path: Path) -> None:
    from safetensors.torch import save

    tensors = {k: v.contiguous() for k, v in classifier.model.state_dict().items()}
    if classifier.preprocess["kind"] == "mean_image":
        tensors[MEAN_IMAGE] = classifier.preprocess["mean_image"].contiguous()
    # save() to bytes, not save_file(): save_file makes a new file, losing atomic_path's permissions
    path.write_bytes(save(tensors, metadata={CARD_KEY: json.dumps(card)}))


def _safetensors_logits(path: Path, images: torch.Tensor) -> torch.Tensor:
    """The written file loaded as a checkpoint and run like the original (the check)."""
    from alexnet_cli.checkpoint import checkpoint_model_config, model_from_checkpoint

    ckpt = read_safetensors(path)
    model = model_from_checkpoint(ckpt, path=path).eval()
    config = checkpoint_model_config(ckpt, path)
    net = InferenceNet(
        Classifier(model, ckpt["preprocess"], ckpt["classes"], str(path), torch.device("cpu"), config)
    )
    with torch.inference_mode():
        return net(images)


def read_safetensors(path: str | os.PathLike) -> dict[str, Any]:
    """A .safetensors export as a checkpoint dict (checkpoint.py's keys: model, model_config,
    classes, preprocess), for every command that takes a checkpoint."""
    require_extra("safetensors", f"reading {path}")
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not a dict)
    except (SafetensorError, OSError) as e:
        raise InputError(f"{path}: not a readable safetensors file ({str(e)[:120]})") from None
    try:
        card = json.loads(meta[CARD_KEY])
        pre = card["preprocessing"]
        preprocess = (
            {"kind": "mean_image", "mean_image": tensors.pop(MEAN_IMAGE)}
            if pre["kind"] == "mean_image"
            else {"kind": pre["kind"], "mean": pre["mean"], "std": pre["std"]}
        )
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "model": tensors,
            "model_config": card["model_config"],
            "classes": card["classes"],
            "preprocess": preprocess,
        }
    except (KeyError, TypeError, ValueError):
        raise InputError(
            f"{path}: a safetensors file without alexnet-cli's card; export it with `alexnet export`"
        ) from None
