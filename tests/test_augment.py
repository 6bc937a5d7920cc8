"""Section 4.1's augmentation: crops and flips in range, PCA lighting statistics, and the
device-side normalisation agreeing with eval's normalize-then-crop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from alexnet_cli.data import augment
from alexnet_cli.data.transforms import (
    channels_last_view,
    normalize,
    preprocess_from_stats,
    torchvision_preprocess,
)

PCA = augment.pca_from_stats(
    [0.2175, 0.0188, 0.0045],
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]],
)


def test_draws_are_a_pure_function_of_seed_epoch_index():
    assert augment.draw(3, 1, 7) == augment.draw(3, 1, 7)
    others = {augment.draw(3, 2, 7), augment.draw(4, 1, 7), augment.draw(3, 1, 8)}
    assert augment.draw(3, 1, 7) not in others


def test_crops_and_flips_cover_the_whole_range():
    draws = [augment.draw(0, 0, i) for i in range(3000)]
    tops, lefts = {d.top for d in draws}, {d.left for d in draws}
    assert tops == set(range(33)) and lefts == set(range(33))  # 256 - 224 + 1 positions
    flips = np.mean([d.flip for d in draws])
    assert 0.45 < flips < 0.55


def test_lighting_coefficients_are_normal_with_std_0_1():
    alpha = np.array([augment.draw(0, 5, i).alpha for i in range(4000)])
    assert np.all(np.abs(alpha.mean(0)) < 4 * 0.1 / np.sqrt(4000))
    assert np.allclose(alpha.std(0), 0.1, rtol=0.05)
    assert abs(np.corrcoef(alpha.T)[0, 1]) < 0.06
    assert np.all(np.array([augment.draw(0, 5, i, lighting_std=0.0).alpha for i in range(10)]) == 0)


def test_lighting_offset_is_the_papers_formula_in_pixel_units():
    values, vectors = np.array(PCA["eigenvalues"]), np.array(PCA["eigenvectors"])
    for i in range(3):
        alpha = torch.zeros(1, 3, dtype=torch.float64)
        alpha[0, i] = 1.0
        offset = augment.lighting_offsets(alpha, PCA)[0].numpy()
        assert np.allclose(offset, 255 * values[i] * vectors[:, i])  # p_i * alpha_i * lambda_i, scaled to 0..255


def test_lighting_offsets_have_the_expected_covariance():
    alpha = torch.randn(20000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.1
    offsets = augment.lighting_offsets(alpha, PCA).numpy()
    values, vectors = np.array(PCA["eigenvalues"]), np.array(PCA["eigenvectors"])
    expected = 255**2 * vectors @ np.diag((0.1 * values) ** 2) @ vectors.T
    assert np.allclose(np.cov(offsets.T), expected, rtol=0.05, atol=0.05 * expected.max())


def test_crop_flip_takes_the_patch_and_mirrors_it():
    image = torch.arange(256 * 256 * 3).reshape(256, 256, 3)  # HWC, as the decoder writes it
    patch = augment.crop_flip(image, 5, 32, False)
    assert patch.shape == (224, 224, 3) and patch[0, 0, 0] == image[5, 32, 0] and patch[-1, -1, 2] == image[228, 255, 2]
    flipped = augment.crop_flip(image, 5, 32, True)
    assert torch.equal(flipped[:, 0], patch[:, -1]) and torch.equal(flipped.flip(1), patch)


@pytest.mark.parametrize("flip", [False, True])
def test_crop_mean_matches_slicing_at_every_edge(flip):
    mean = torch.rand(3, 256, 256)
    top = torch.tensor([0, 32, 0, 32, 17])
    left = torch.tensor([0, 0, 32, 32, 9])
    flips = torch.full((5,), flip)
    got = augment.crop_mean(mean, top, left, flips)
    for n in range(5):
        ref = mean[:, top[n] : top[n] + 224, left[n] : left[n] + 224]
        assert torch.equal(got[n], ref.flip(-1) if flip else ref)


def _stored_batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    full = torch.randint(0, 256, (n, 256, 256, 3), dtype=torch.uint8, generator=g).numpy()
    mean = torch.rand(256, 256, 3, generator=g).numpy() * 255
    return full, preprocess_from_stats(mean)


@pytest.mark.parametrize("kind", ["mean_image", "mean_std"])
def test_train_input_equals_normalize_then_crop_and_flip_plus_lighting(kind):
    """Loader crop + device mean crop == section 2's mean subtraction at 256, then the crop
    (for torchvision's mean/std too: the lit patch, normalised like eval's pixels)."""
    full, preprocess = _stored_batch()
    if kind == "mean_std":
        preprocess = torchvision_preprocess()
    draws = [augment.draw(1, 0, i) for i in range(len(full))]
    batch = {
        "images": torch.stack([augment.crop_flip(torch.from_numpy(im), d.top, d.left, d.flip)
                               for im, d in zip(full, draws)]),
        "top": torch.tensor([d.top for d in draws]),
        "left": torch.tensor([d.left for d in draws]),
        "flip": torch.tensor([d.flip for d in draws]),
        "alpha": torch.tensor([d.alpha for d in draws], dtype=torch.float32),
    }
    x = augment.train_input(batch, preprocess, PCA, "cpu")
    reference = normalize(torch.from_numpy(full).permute(0, 3, 1, 2), preprocess)
    offsets = augment.lighting_offsets(batch["alpha"], PCA)
    scale = 1 / (255 * torch.tensor(preprocess["std"]))[:, None, None] if kind == "mean_std" else 1
    for n, d in enumerate(draws):
        ref = reference[n, :, d.top : d.top + 224, d.left : d.left + 224]
        ref = (ref.flip(-1) if d.flip else ref) + offsets[n][:, None, None] * scale
        torch.testing.assert_close(x[n], ref, rtol=0, atol=1e-4)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32 and x.is_contiguous()
    nhwc = augment.train_input(batch, preprocess, PCA, "cpu", memory_format=torch.channels_last)
    assert torch.equal(nhwc, x) and nhwc.is_contiguous(memory_format=torch.channels_last)


def test_per_image_and_batched_centring_agree_exactly():
    g = torch.Generator().manual_seed(3)
    images = channels_last_view(torch.randint(0, 256, (6, 224, 224, 3), dtype=torch.uint8, generator=g))
    mean = torch.rand(3, 256, 256, generator=g) * 255
    top, left = torch.tensor([0, 32, 5, 0, 32, 11]), torch.tensor([0, 32, 0, 32, 7, 19])
    flip = torch.tensor([False, True, True, False, True, False])
    offsets = torch.randn(6, 3, generator=g) * 10
    batched = augment.centred_patches(images, mean, top, left, flip, offsets, torch.float32)
    per_image = augment.centred_patches_per_image(images, mean, top, left, flip, offsets, torch.float32)
    assert torch.equal(batched, per_image)


def test_lighting_units_stddev_is_cuda_convnet2s_square_roots():
    values, vectors = np.array(PCA["eigenvalues"]), np.array(PCA["eigenvectors"])
    alpha = torch.tensor([[0.1, -0.2, 0.3]], dtype=torch.float64)
    got = augment.lighting_offsets(alpha, PCA, "stddev")[0].numpy()
    assert np.allclose(got, vectors @ (alpha[0].numpy() * np.sqrt(values * 255**2)))  # sqrt of 0..255 eigenvalues
    paper = augment.lighting_offsets(alpha, PCA, "eigenvalue")[0].numpy()
    assert np.allclose(paper, vectors @ (alpha[0].numpy() * 255 * values))


@pytest.mark.parametrize("seed,epoch,std", [(0, 0, 0.1), (7, 3, 0.1), (123456, 89, 0.25), (2**32 - 1, 2**32 - 1, 0.0)])
def test_batched_draws_are_the_per_image_draws_value_for_value(seed, epoch, std):
    indices = np.concatenate([np.arange(600), np.random.default_rng(1).integers(0, 2**32, 200)])
    batch = augment.draws(seed, epoch, indices, lighting_std=std)
    got = [augment.ImageDraw(int(t), int(l), bool(f), tuple(float(a) for a in alpha))
           for t, l, f, alpha in zip(batch.top, batch.left, batch.flip, batch.alpha)]
    assert got == [augment.draw(seed, epoch, int(i), lighting_std=std) for i in indices]


def test_batched_draws_with_keys_beyond_32_bits_come_from_numpy_itself():
    indices = np.array([0, 5, 2**33 + 1])
    batch = augment.draws(2**40, 1, indices)
    for k, i in enumerate(indices):
        d = augment.draw(2**40, 1, int(i))
        assert (batch.top[k], batch.left[k], batch.flip[k], tuple(batch.alpha[k])) == (d.top, d.left, d.flip, d.alpha)


def test_generator_batch_outputs_are_numpys():
    from alexnet_cli import randomness

    last = np.array([0, 1, 2, 99, 2**32 - 1])
    g = randomness.GeneratorBatch(randomness.AUGMENT, (3, 4), last)
    ours = np.stack([g.next_uint64() for _ in range(4)], axis=1)
    for row, i in zip(ours, last):
        assert row.tolist() == randomness.generator(randomness.AUGMENT, 3, 4, int(i)).bit_generator.random_raw(4).tolist()
    assert not randomness.GeneratorBatch.fits(randomness.AUGMENT, (3, 2**32), last)
    assert not randomness.GeneratorBatch.fits(randomness.AUGMENT, (3, 4), np.array([-1]))


def _pcg64_emitting(first: int) -> np.random.Generator:
    """A NumPy generator whose next 64-bit output is `first`: PCG64 steps its 128-bit state
    (s -> s * M + inc) and outputs rotr(high ^ low, high >> 58), so the state high = 0,
    low = first outputs `first`; step back from it."""
    mult, inc = 0x2360ED051FC65DA44385DF649FCCF645, 1
    before = (first - inc) * pow(mult, -1, 2**128) % 2**128
    bit_generator = np.random.PCG64(0)
    bit_generator.state = {"bit_generator": "PCG64", "state": {"state": before, "inc": inc}, "has_uint32": 0, "uinteger": 0}
    return np.random.Generator(bit_generator)


@pytest.mark.parametrize("low,high", [(0, 0), (0xFFFFFFFF, 0x80000000), (130150524, 3), (2, 5), (130150525, 0x12345678)])
def test_lemire_bounded_integers_are_numpys_or_say_they_are_not(low, high):
    """augment._lemire against NumPy's integers(0, 33, size=2) on chosen 32-bit draws,
    including low words that start NumPy's rejection loop (u * 33 mod 2**32 below 33):
    those must be flagged, never returned as final."""
    expected = _pcg64_emitting(high << 32 | low).integers(0, 33, size=2).tolist()
    values, final = augment._lemire(np.array([low, high], np.uint64), 33)
    assert all(final) == (low * 33 % 2**32 >= 33 and high * 33 % 2**32 >= 33)
    if all(final):
        assert values.tolist() == expected


def test_crop_flip_batch_on_the_device_equals_crop_flip_per_image():
    g = torch.Generator().manual_seed(0)
    hwc = torch.randint(0, 256, (5, 256, 256, 3), dtype=torch.uint8, generator=g)
    top, left = torch.tensor([0, 32, 5, 17, 32]), torch.tensor([0, 32, 0, 9, 31])
    flip = torch.tensor([False, True, True, False, True])
    got = augment.crop_flip_batch(hwc.permute(0, 3, 1, 2).contiguous(), top, left, flip)
    expected = torch.stack([augment.crop_flip(hwc[n], int(top[n]), int(left[n]), bool(flip[n])) for n in range(5)])
    assert got.is_contiguous() and torch.equal(got, expected)
