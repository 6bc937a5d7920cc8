"""The embedded demo's images: ten classes of drawn shapes in ImageNet folder layout.

Real files of varied size, aspect ratio, colour and background (a few grayscale and PNG among
them), so that `alexnet demo` exercises prep's decoding and resizing like a real dataset. Each
class is a shape with its own colour family; grayscale files keep only the shape, so the net
must use both cues. Deterministic for a given seed.
"""

from __future__ import annotations

import colorsys
import math
import random
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# (folder name, shape, base hue in [0, 1)); folder names sort in this order.
CLASSES = (
    ("c00_disc", "disc", 0.00),
    ("c01_square", "square", 0.10),
    ("c02_triangle", "triangle", 0.17),
    ("c03_ring", "ring", 0.33),
    ("c04_cross", "cross", 0.45),
    ("c05_stripes", "stripes", 0.55),
    ("c06_checker", "checker", 0.65),
    ("c07_star", "star", 0.75),
    ("c08_diamond", "diamond", 0.85),
    ("c09_dots", "dots", 0.93),
)


def _colour(rng: random.Random, hue: float) -> tuple[int, int, int]:
    h = (hue + rng.uniform(-0.04, 0.04)) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, rng.uniform(0.6, 1.0), rng.uniform(0.6, 1.0))
    return int(r * 255), int(g * 255), int(b * 255)


def _background(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    w, h = size
    kind = rng.choice(("solid", "gradient", "noise"))
    grey = rng.randint(20, 235)
    base = tuple(min(255, max(0, grey + rng.randint(-25, 25))) for _ in range(3))
    if kind == "solid":
        return Image.new("RGB", size, base)
    if kind == "gradient":
        other = tuple(min(255, max(0, c + rng.randint(-80, 80))) for c in base)
        ramp = Image.linear_gradient("L").resize(size)
        return Image.composite(Image.new("RGB", size, base), Image.new("RGB", size, other), ramp)
    # numpy noise from the seeded stream (Pillow's effect_noise would not be reproducible)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(128, rng.uniform(20, 60), (h, w, 1))
    noise = Image.fromarray(noise.clip(0, 255).astype(np.uint8).repeat(3, 2))
    return Image.blend(Image.new("RGB", size, base), noise, 0.35)


def _polygon(
    cx: float, cy: float, r: float, n: int, rot: float, inner: float = 1.0
) -> list[tuple[float, float]]:
    pts = []
    for i in range(n * (2 if inner != 1.0 else 1)):
        radius = r if i % 2 == 0 or inner == 1.0 else r * inner
        a = rot + i * math.pi * 2 / (n * (2 if inner != 1.0 else 1))
        pts.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
    return pts


def draw_example(shape: str, hue: float, rng: random.Random) -> Image.Image:
    """One image of a class: random size/aspect, background, position, scale, rotation."""
    w = rng.randint(160, 400)
    h = int(w / rng.uniform(0.6, 1.7))
    img = _background(rng, (w, h))
    d = ImageDraw.Draw(img)
    colour = _colour(rng, hue)
    s = min(w, h)
    r = s * rng.uniform(0.22, 0.42)
    cx, cy = w / 2 + rng.uniform(-0.15, 0.15) * s, h / 2 + rng.uniform(-0.15, 0.15) * s
    rot = rng.uniform(0, 2 * math.pi)
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "disc":
        d.ellipse(box, fill=colour)
    elif shape == "square":
        d.polygon(_polygon(cx, cy, r, 4, rot), fill=colour)
    elif shape == "triangle":
        d.polygon(_polygon(cx, cy, r, 3, rot), fill=colour)
    elif shape == "ring":
        d.ellipse(box, outline=colour, width=max(3, int(r * 0.3)))
    elif shape == "cross":
        t = r * 0.3
        for a in (rot, rot + math.pi / 2):
            dx, dy = math.cos(a), math.sin(a)
            d.line((cx - dx * r, cy - dy * r, cx + dx * r, cy + dy * r), fill=colour, width=int(2 * t))
    elif shape == "stripes":
        period = max(6, int(s * rng.uniform(0.06, 0.12)))
        for x in range(-s, 2 * s, period):
            d.line((x, 0, x + h * math.tan(rot % 0.8 - 0.4), h), fill=colour, width=period // 2)
    elif shape == "checker":
        cell = max(6, int(s * rng.uniform(0.07, 0.14)))
        for y in range(0, h, cell):
            for x in range(0, w, cell):
                if (x // cell + y // cell) % 2 == 0:
                    d.rectangle((x, y, x + cell - 1, y + cell - 1), fill=colour)
    elif shape == "star":
        d.polygon(_polygon(cx, cy, r, 5, rot, inner=0.45), fill=colour)
    elif shape == "diamond":
        pts = _polygon(cx, cy, r, 4, 0.0)  # corners on the axes: squeezed in x, a rhombus
        d.polygon([(cx + (x - cx) * 0.6, y) for x, y in pts], fill=colour)
    elif shape == "dots":
        dot = max(3, int(s * rng.uniform(0.03, 0.06)))
        for _ in range(rng.randint(12, 30)):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            d.ellipse((x - dot, y - dot, x + dot, y + dot), fill=colour)
    else:
        raise ValueError(shape)
    if rng.random() < 0.3:
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0.5, 1.5)))
    return img


def make_demo_images(
    root: str | Path, train_per_class: int = 60, val_per_class: int = 20, seed: int = 0
) -> dict:
    """Write root/train/<class>/*.JPEG and root/val/<class>/*.JPEG (about 1 in 12 grayscale,
    1 in 15 PNG). Returns counts. Existing files are rewritten identically (deterministic)."""
    root = Path(root)
    rng = random.Random(seed)
    counts = {"train": 0, "val": 0}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        for folder, shape, hue in CLASSES:
            out = root / split / folder
            out.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                img = draw_example(shape, hue, rng)
                if rng.random() < 1 / 12:
                    img = img.convert("L")
                if rng.random() < 1 / 15:
                    img.save(out / f"{folder}_{split}_{i:04d}.png")
                else:
                    img.save(out / f"{folder}_{split}_{i:04d}.JPEG", quality=90)
                counts[split] += 1
    return counts
