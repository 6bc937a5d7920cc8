"""`alexnet demo`: the whole pipeline on a generated dataset, in a few minutes on a laptop CPU.

It draws ten classes of shapes as real image files in ImageNet folder layout, then runs the
four commands a user runs on ImageNet, in process, each shown with its command line:
prep -> train -> eval (10 crops) -> predict. The network is the paper's, unchanged; what the
demo reduces against the paper's recipe is listed in `REDUCTIONS` and printed.
"""

from __future__ import annotations

import shlex
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alexnet_cli.config import DemoConfig, EvalConfig, PrepConfig, TrainConfig
from alexnet_cli.errors import InputError

MARKER = ".alexnet-demo"  # marks a folder the demo made, so a rerun may replace it


def reductions(cfg: DemoConfig) -> list[str]:
    """What the demo changes against the paper's recipe (section 5), one line each."""
    lines = [
        f"data: {10 * cfg.train_per_class} generated training images of 10 classes "
        "(paper: 1.2 million of 1000)",
        f"epochs: {cfg.epochs} (paper: about 90)",
        f"batch size: {cfg.batch_size} (paper: 128)",
    ]
    if cfg.lr != TrainConfig.lr:
        lines.append(f"learning rate: {cfg.lr} (paper: {TrainConfig.lr})")
    if cfg.bias_init != TrainConfig.bias_init:
        lines.append(f"bias init: {cfg.bias_init} in conv2/4/5 and fc6/7 (paper: {TrainConfig.bias_init})")
    return lines + [
        "network and the rest of the recipe: the paper's (two towers, LRN, dropout, SGD, 10 outputs)"
    ]


@dataclass
class Step:
    name: str
    command: str
    seconds: float = 0.0
    result: dict[str, Any] = field(default_factory=dict)


def _command(*parts: Any) -> str:
    return "alexnet " + " ".join(shlex.quote(str(p)) for p in parts)


def prepare_workdir(workdir: Path) -> None:
    """Create the demo folder; replace it only if an earlier demo made it (never a user's folder)."""
    if workdir.exists():
        if not (workdir / MARKER).exists():
            raise InputError(
                f"{workdir}: exists and was not made by `alexnet demo`; choose another --workdir or remove it"
            )
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    (workdir / MARKER).write_text("made by `alexnet demo`; rerunning the demo replaces this folder\n")


def run_demo(
    cfg: DemoConfig, show: Callable[[Step], None] = lambda step: None, quiet: bool = False
) -> dict[str, Any]:
    """Run the five steps; `show` is called after each. Returns the summary object of --json."""
    t0 = time.perf_counter()
    work = cfg.workdir
    prepare_workdir(work)
    images, data, run = work / "images", work / "demo.h5", work / "run"
    checkpoint = run / "best.pt"
    steps: list[Step] = []

    def step(name: str, command: str, action: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        s = Step(name, command)
        t = time.perf_counter()
        s.result = action()
        s.seconds = time.perf_counter() - t
        steps.append(s)
        show(s)
        return s.result

    step("images", f"(generated) {images}/{{train,val}}/<class>/*", lambda: _make_images(cfg, images))
    step("prep", _command("prep", images, data), lambda: _prep(cfg, images, data))
    train_cmd = _command(
        "train",
        "--data",
        data,
        "--run-dir",
        run,
        "--gpus",
        0,
        "--epochs",
        cfg.epochs,
        "--batch-size",
        cfg.batch_size,
        *(["--lr", cfg.lr] if cfg.lr != TrainConfig.lr else []),
        *(["--bias-init", cfg.bias_init] if cfg.bias_init != TrainConfig.bias_init else []),
        "--seed",
        cfg.seed,
    )
    step("train", train_cmd, lambda: _train(cfg, data, run, quiet))
    s = step(
        "eval",
        _command("eval", checkpoint, "--data", data, "--ten-crop"),
        lambda: _eval(cfg, data, checkpoint),
    )
    picks = _examples(images)
    step(
        "predict",
        _command("predict", *picks[:2], "...", "--checkpoint", checkpoint),
        lambda: _predict(picks, checkpoint),
    )
    return {
        "top1": s["top1"],
        "top5": s["top5"],
        "top1_error": s["top1_error"],
        "top5_error": s["top5_error"],
        "classes": 10,
        "chance_top1": 10.0,
        "val_images": s["images"],
        "seconds": round(time.perf_counter() - t0, 1),
        "workdir": str(work),
        "checkpoint": str(checkpoint),
        "data": str(data),
        "reductions": reductions(cfg),
        "steps": [{"name": st.name, "command": st.command, "seconds": round(st.seconds, 1)} for st in steps],
    }


def _make_images(cfg: DemoConfig, images: Path) -> dict[str, Any]:
    from alexnet_cli.demo_data import make_demo_images

    return make_demo_images(images, cfg.train_per_class, cfg.val_per_class, cfg.seed)


def _prep(cfg: DemoConfig, images: Path, data: Path) -> dict[str, Any]:
    from alexnet_cli.data.prep import prepare

    summary = prepare(images, data, PrepConfig(workers=cfg.workers)).to_json()
    return {"splits": summary["splits"], "classes": summary["classes"], "skipped": len(summary["skipped"])}


def _train(cfg: DemoConfig, data: Path, run: Path, quiet: bool) -> dict[str, Any]:
    from alexnet_cli.progress import TrainProgress
    from alexnet_cli.train import train

    train_cfg = TrainConfig(
        data=str(data),
        run_dir=str(run),
        epochs=cfg.epochs,
        batch_size=cfg.batch_size,
        lr=cfg.lr,
        bias_init=cfg.bias_init,
        gpus=0,
        workers=cfg.workers - 1,
        seed=cfg.seed,
        log_every=10,
    )
    return train(train_cfg, TrainProgress(enabled=not quiet, log_every=10)) or {}


def _eval(cfg: DemoConfig, data: Path, checkpoint: Path) -> dict[str, Any]:
    from alexnet_cli.evaluate import run_eval

    config = EvalConfig(data, "val", ten_crop=True, gpus=0, batch_size=50, workers=cfg.workers - 1)
    return run_eval(config, checkpoint).summary()


def _examples(images: Path) -> list[Path]:
    """The first validation image of each class."""
    return [
        sorted(folder.iterdir())[0] for folder in sorted(p for p in (images / "val").iterdir() if p.is_dir())
    ]


def _predict(picks: list[Path], checkpoint: Path) -> dict[str, Any]:
    from alexnet_cli.classifier import load_classifier
    from alexnet_cli.devices import placement
    from alexnet_cli.predict import Prediction, collect_inputs, predict

    classifier = load_classifier(placement(0).devices, checkpoint)
    out = [
        r
        for r in predict(classifier, collect_inputs([str(p) for p in picks]), 3)
        if isinstance(r, Prediction)
    ]
    correct = sum(r.predictions[0]["wnid"] == Path(r.file).parent.name for r in out)
    return {
        "images": len(out),
        "correct": correct,
        "predictions": [{"file": r.file, "top": r.predictions[0]} for r in out],
    }
