"""Export round trip: `alexnet export` to ONNX, then onnxruntime against torch on the CPU.

The paper's network with 1000 classes (random weights: speed does not depend on them) goes
through `export.run_export` (trace, ONNX, read back and checked against torch); then both run
the same uint8 batches [B, 256, 256, 3] -> logits, at batch 1 and 64, interleaved round by
round with the same thread count. Prints the export time, per-batch latencies (median of
--rounds) and the ratio torch / onnxruntime (above 1: onnxruntime is faster).

    python benchmarks/bench_export.py [--rounds 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alexnet_cli.checkpoint import save_checkpoint  # noqa: E402
from alexnet_cli.classes import imagenet_classes  # noqa: E402
from alexnet_cli.classifier import load_classifier  # noqa: E402
from alexnet_cli.export import ExportConfig, InferenceNet, run_export  # noqa: E402
from alexnet_cli.model import AlexNet, ModelConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", default="1,64")
    a = p.parse_args()
    import onnxruntime

    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "paper.pt"
        torch.manual_seed(0)
        mean = torch.full((3, 256, 256), 115.0)
        save_checkpoint(ckpt, {"model": AlexNet().state_dict(), "model_config": asdict(ModelConfig()),
                               "classes": [[c.wnid, c.name] for c in imagenet_classes()],
                               "preprocess": {"kind": "mean_image", "mean_image": mean}})
        result = run_export(ckpt, ExportConfig(Path(tmp) / "alexnet.onnx"))
        print(f"export to ONNX (trace, write, read back, check): {result.seconds:.1f} s, "
              f"{result.bytes / 2**20:.0f} MiB, max |logit diff| {result.max_abs_diff:.2g}")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = a.threads, 1
        session = onnxruntime.InferenceSession(str(result.output), options, providers=["CPUExecutionProvider"])
        net = InferenceNet(load_classifier([torch.device("cpu")], ckpt)).eval()
        rng = np.random.default_rng(0)
        print("\n| batch | torch ms/batch | onnxruntime ms/batch | torch img/s | onnxruntime img/s | ratio torch/ort |")
        print("|---:|---:|---:|---:|---:|---:|")
        for batch in (int(b) for b in a.batches.split(",")):
            images = rng.integers(0, 256, size=(batch, 256, 256, 3), dtype=np.uint8)
            tensor = torch.from_numpy(images)
            times = {"torch": [], "ort": []}
            with torch.inference_mode():
                net(tensor)  # warm-up: first calls allocate and pick kernels
                session.run(["logits"], {"images": images})
                for _ in range(a.rounds):
                    t = time.perf_counter()
                    net(tensor)
                    times["torch"].append(time.perf_counter() - t)
                    t = time.perf_counter()
                    session.run(["logits"], {"images": images})
                    times["ort"].append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"| {batch} | {1000 * med['torch']:.1f} | {1000 * med['ort']:.1f} | {batch / med['torch']:.1f} | "
                  f"{batch / med['ort']:.1f} | {med['torch'] / med['ort']:.2f}x |")


if __name__ == "__main__":
    main()
