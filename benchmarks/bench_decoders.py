"""Every JPEG decoder installed here, timed on the same real ImageNet JPEGs, and where the
decode time goes by image size: the evidence behind prep's choice of decoder and DCT scaling.

    python benchmarks/bench_decoders.py [--data ../shared/data/imagenet-sample] [--rounds 2]

Decoders that are not installed are listed as skipped (prep itself needs only simplejpeg and
Pillow; kornia-rs, pyvips, opencv and PyTurboJPEG are optional candidates, measured when
present). Each decoder gives full-size RGB; `max |diff|` is its largest pixel difference from
Pillow's decode of the same file (0 = the same pixels prep stores). One process, one core.

The table by shorter side shows which images the DCT's power-of-2 scaling can reach: a JPEG
is decoded at 1/2 scale only if its shorter side stays at least 256 after it (Pillow's
`draft`), or 512 (what prep does, so the antialiased resize still does the reduction).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import simplejpeg  # noqa: E402
from PIL import Image  # noqa: E402

from alexnet_cli.data.sources import is_image_name  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample"
Decoder = Callable[[bytes], np.ndarray]
PREPS = "simplejpeg (libjpeg-turbo), prep's"


def pillow(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def candidates() -> dict[str, Decoder | str]:
    """name -> decoder, or the reason it is not measured."""
    found: dict[str, Decoder | str] = {
        "Pillow (libjpeg-turbo, RGBX)": pillow,
        PREPS: lambda d: simplejpeg.decode_jpeg(d, "RGB"),
        "simplejpeg fastdct+fastupsample": lambda d: simplejpeg.decode_jpeg(d, "RGB", fastdct=True, fastupsample=True),
    }
    try:
        import kornia_rs

        found["kornia-rs decode_image_jpeg"] = lambda d: np.asarray(kornia_rs.io.decode_image_jpeg(d))
    except ImportError:
        found["kornia-rs"] = "not installed (pip install kornia-rs)"
    try:
        import pyvips

        found["pyvips (libvips)"] = lambda d: pyvips.Image.new_from_buffer(d, "", access="sequential").numpy()
    except (ImportError, OSError):
        found["pyvips"] = "not installed (pip install pyvips pyvips-binary)"
    try:
        import cv2

        cv2.setNumThreads(1)
        found["opencv imdecode"] = lambda d: cv2.cvtColor(cv2.imdecode(np.frombuffer(d, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    except ImportError:
        found["opencv"] = "not installed (pip install opencv-python-headless)"
    try:
        from turbojpeg import TJPF_RGB, TurboJPEG

        tj = TurboJPEG()
        found["PyTurboJPEG"] = lambda d: tj.decode(d, pixel_format=TJPF_RGB)
    except (ImportError, OSError, RuntimeError):
        found["PyTurboJPEG"] = "not usable (pip install PyTurboJPEG, plus a system libturbojpeg)"
    return found


def plain_jpegs(folder: Path) -> list[bytes]:
    """The baseline YCbCr/gray JPEGs of the folder: the images every decoder can take."""
    out = []
    for path in sorted(p for p in folder.iterdir() if is_image_name(p.name)):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            if im.format == "JPEG" and im.mode in ("RGB", "L"):
                out.append(data)
    return out


def time_decoder(decode: Decoder, datas: list[bytes], rounds: int) -> tuple[float, list[float]]:
    """Median ms per image over `rounds` passes, and per-image seconds of the last pass."""
    medians, per_image = [], []
    for _ in range(rounds):
        per_image = []
        for d in datas:
            t = time.perf_counter()
            decode(d)
            per_image.append(time.perf_counter() - t)
        medians.append(sum(per_image) / len(datas) * 1e3)
    return statistics.median(medians), per_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--check", type=int, default=50, help="images compared with Pillow's pixels per decoder")
    args = parser.parse_args()
    datas = plain_jpegs(args.data)
    if not datas:
        sys.exit(f"no baseline JPEGs in {args.data}")
    print(f"{len(datas)} baseline JPEGs from {args.data}, one process, median of {args.rounds} passes")
    print(f"{'decoder':40s} {'ms/image':>9s} {'max |diff| vs Pillow':>21s}")
    reference = [pillow(d) for d in datas[: args.check]]
    ours_per_image: list[float] = []
    for name, decode in candidates().items():
        if isinstance(decode, str):
            print(f"{name:40s} {'-':>9s}  skipped: {decode}")
            continue
        ms, per_image = time_decoder(decode, datas, args.rounds)
        diff = max(int(np.abs(decode(d).astype(np.int16) - r.astype(np.int16)).max()) for d, r in zip(datas, reference))
        print(f"{name:40s} {ms:9.3f} {diff:21d}")
        if name == PREPS:
            ours_per_image = per_image
    shorter = np.array([min(simplejpeg.decode_jpeg_header(d)[:2]) for d in datas])
    seconds = np.array(ours_per_image)
    print("\nsimplejpeg full decode time by shorter side (what DCT scaling could reach):")
    print(f"{'shorter side':>14s} {'images':>7s} {'share of decode time':>21s} {'ms/image':>9s}")
    for lo, hi in ((0, 256), (256, 512), (512, 1024), (1024, 1 << 30)):
        m = (shorter >= lo) & (shorter < hi)
        label = f"{lo}-{hi - 1}" if hi < 1 << 30 else f">= {lo}"
        ms = seconds[m].mean() * 1e3 if m.any() else 0.0
        print(f"{label:>14s} {int(m.sum()):7d} {seconds[m].sum() / seconds.sum():20.0%} {ms:9.2f}")
    reachable = seconds[shorter >= 512].sum() / seconds.sum()
    print(f"ratio: {reachable:.0%} of the decode time is in images a 1/2 DCT scale can reach (shorter side >= 512)")


if __name__ == "__main__":
    main()
