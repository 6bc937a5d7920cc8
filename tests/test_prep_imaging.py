"""load_256's fast paths (simplejpeg decode, DCT scaling, SIMD resize) against plain Pillow,
and the awkward files prep meets, derived from real images."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from alexnet_cli.data import imaging
from alexnet_cli.data.imaging import ImageDecodeError, center_box, dct_scale, load_256
from tests.prep_helpers import sample_files


def _pillow_reference(data: bytes) -> np.ndarray:
    """The same crop through Pillow alone: decode (same DCT rule), transpose, RGB, resize."""
    with Image.open(io.BytesIO(data)) as im:
        scale = dct_scale(*im.size) if im.format == "JPEG" else 1
        if scale > 1:
            im.draft(im.mode, (im.size[0] // scale, im.size[1] // scale))
        rgb = imaging.to_rgb(ImageOps.exif_transpose(im))
    _, box = center_box(*rgb.size)
    return np.asarray(rgb.resize((256, 256), imaging.RESAMPLE, box=box))


def _diff(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.abs(a.astype(int) - b).max())


def test_dct_scaling_keeps_at_least_twice_the_target():
    assert dct_scale(500, 375) == 1
    assert dct_scale(2000, 1023) == 1  # 1023 // 2 < 512
    assert dct_scale(2400, 1632) == 2
    assert dct_scale(4096, 4096) == 8


def test_fast_paths_match_plain_pillow_on_real_images(shared_data):
    files = sample_files(shared_data, 12) + sorted((shared_data / "fixtures").rglob("*.*"))
    files = [f for f in files if f.suffix.lower() in (".jpeg", ".jpg", ".png")]
    for f in files:
        data = f.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            fast = imaging.decode_rgb(im, data)
        with Image.open(io.BytesIO(data)) as im:
            slow = imaging.decode_rgb(im, None)  # Pillow only
        assert np.array_equal(fast, slow), f"{f.name}: simplejpeg and Pillow decode differently"
        assert _diff(load_256(f), _pillow_reference(data)) <= 2, f.name


def test_pillow_resize_fallback_stays_within_two_levels(shared_data, monkeypatch):
    f = sample_files(shared_data, 1, start=7)[0]
    fast = load_256(f)
    monkeypatch.setattr(imaging, "_fir", None)
    slow = load_256(f)
    assert np.array_equal(slow, _pillow_reference(f.read_bytes()))
    assert 0 < _diff(fast, slow) <= 2  # a different implementation of the same filter


def test_large_jpeg_dct_scaling_costs_little(shared_data):
    big = max(sample_files(shared_data, 200), key=lambda f: min(Image.open(f).size))
    with Image.open(big) as im:
        assert dct_scale(*im.size) >= 2
        full = np.asarray(im.convert("RGB"))
    _, box = center_box(full.shape[1], full.shape[0])
    reference = imaging.resize_box(full, box)
    err = np.mean((load_256(big).astype(float) - reference) ** 2)
    assert 10 * np.log10(255**2 / err) > 30  # PSNR against decoding every pixel


def _jpeg_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo(shared_data) -> Image.Image:
    with Image.open(sample_files(shared_data, 1, start=3)[0]) as im:
        return im.convert("RGB")


def test_cmyk_jpeg(photo):
    rgb = load_256(_jpeg_bytes(photo))
    cmyk = load_256(_jpeg_bytes(photo.convert("CMYK")))
    assert cmyk.shape == (256, 256, 3)
    assert np.abs(cmyk.astype(int) - rgb).mean() < 3


def test_png_named_jpeg_and_rgba_and_palette(photo):
    png = io.BytesIO()
    photo.save(png, format="PNG")
    assert _diff(load_256(png.getvalue()), _pillow_reference(png.getvalue())) <= 2
    rgba = photo.convert("RGBA")
    rgba.putalpha(0)  # fully transparent: white background
    buf = io.BytesIO()
    rgba.save(buf, format="PNG")
    assert load_256(buf.getvalue()).min() == 255
    pal = io.BytesIO()
    photo.convert("P").save(pal, format="PNG")
    assert load_256(pal.getvalue()).shape == (256, 256, 3)


def test_sixteen_bit_png_is_scaled_not_clipped(photo):
    gray = np.asarray(photo.convert("L")).astype(np.uint16) * 257  # full 16-bit range
    buf = io.BytesIO()
    Image.fromarray(gray).save(buf, format="PNG")
    out = load_256(buf.getvalue())
    assert out.shape == (256, 256, 3)
    eight = io.BytesIO()
    photo.convert("L").save(eight, format="PNG")
    assert _diff(out, load_256(eight.getvalue())) <= 1  # clipping at 255 would be far off


def test_exif_rotation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to view
    rotated = load_256(_jpeg_bytes(photo, exif=exif))
    upright = load_256(_jpeg_bytes(photo.transpose(Image.Transpose.ROTATE_270)))
    assert np.abs(rotated.astype(int) - upright).mean() < 2


@pytest.mark.parametrize(
    "make,reason",
    [
        (lambda data: data[: len(data) // 2], "truncated"),
        (lambda data: b"", "not an image"),
        (lambda data: b"<html>404 Not Found</html>", "not an image"),
    ],
)
def test_undecodable_bytes_raise_with_a_short_reason(photo, make, reason):
    with pytest.raises(ImageDecodeError) as e:
        load_256(make(_jpeg_bytes(photo)))
    assert reason in e.value.reason


def test_missing_file_is_not_a_decode_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_256(tmp_path / "nope.JPEG")


def test_pixel_sums_are_exact_at_the_integer_limits():
    """Each crop's sum x x^T is accumulated in uint32: a white crop reaches 65536 * 255^2, just
    under 2^32, and a wrong accumulator (uint16 products summed as uint16, a float) fails here."""
    from alexnet_cli.data.format.stats import PixelSums
    from alexnet_cli.data.imaging import IMAGE_SIZE

    side = IMAGE_SIZE
    rng = np.random.default_rng(0)
    images = [np.full((side, side, 3), 255, np.uint8), rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
              np.full((side, side, 3), 255, np.uint8)]
    sums = PixelSums()
    sums.add_images(images)
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(object)  # Python ints
    expected = [[int(sum(pixels[:, i] * pixels[:, j])) for j in range(3)] for i in range(3)]
    assert sums.sumsq.tolist() == expected
    assert sums.sum.tolist() == [int(v) for v in pixels.sum(0)]
    assert sums.n == 3 * side * side and sums.images == 3
