"""Seeded Gaussian noise: reproducibility, clipping, quantisation modes and normalised-space scaling."""

from __future__ import annotations

import numpy as np
import pytest

from logan.models.preprocess import CLIP_STD
from logan.perturb import noise_rng, normalized_noise, perturb_pixels

SEED, KEY = 0, 123456789012345


def grey(value: int = 128, shape: tuple[int, int] = (64, 64)) -> np.ndarray:
    return np.full((*shape, 3), value, dtype=np.uint8)


def textured(seed: int = 0, shape: tuple[int, int] = (24, 32)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)


# ---------------------------------------------------------------- reproducibility


def test_same_arguments_give_identical_noise():
    image = textured()
    a = perturb_pixels(image, 2.0, seed=SEED, key=KEY, draw=1)
    b = perturb_pixels(image.copy(), 2.0, seed=SEED, key=KEY, draw=1)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, image.astype(np.float32))


@pytest.mark.parametrize("change", [
    {"seed": 1}, {"key": KEY + 1}, {"draw": 1}, {"std": 2.0000001}, {"std": 4.0},
])
def test_any_changed_argument_gives_different_noise(change):
    image = grey(128)
    base = dict(std=2.0, seed=SEED, key=KEY, draw=0)
    a = perturb_pixels(image, **base)
    b = perturb_pixels(image, **(base | change))
    assert not np.allclose(a, b)
    # not merely a rescaling of the same field either
    na, nb = a - 128.0, b - 128.0
    corr = float((na * nb).sum() / np.sqrt((na**2).sum() * (nb**2).sum()))
    assert abs(corr) < 0.1


def test_noise_does_not_depend_on_image_content_or_batch_context():
    """Same (seed, key, std, draw) -> same additive field, whatever the pixels (away from the clip)."""
    a = perturb_pixels(grey(100), 1.5, seed=SEED, key=KEY) - 100.0
    b = perturb_pixels(grey(150), 1.5, seed=SEED, key=KEY) - 150.0
    np.testing.assert_allclose(a, b, atol=1e-4)
    # other calls in between change nothing (no global RNG state)
    perturb_pixels(grey(), 7.0, seed=5, key=1)
    np.random.seed(99)
    c = perturb_pixels(grey(100), 1.5, seed=SEED, key=KEY) - 100.0
    assert np.array_equal(a, c)


def test_noise_rng_streams():
    x = noise_rng(3, KEY, 0.5, 0).standard_normal(100)
    assert np.array_equal(x, noise_rng(3, KEY, 0.5, 0).standard_normal(100))
    assert not np.array_equal(x, noise_rng(3, KEY, 0.5, 1).standard_normal(100))
    assert not np.array_equal(x, noise_rng(3, KEY, 0.25, 0).standard_normal(100))
    # the std is keyed by its float bits: int and float spellings of one value agree
    as_int = noise_rng(3, KEY, 2, 0).standard_normal(10)
    assert np.array_equal(as_int, noise_rng(3, KEY, 2.0, 0).standard_normal(10))


def test_noise_has_the_requested_std():
    std = 3.0
    out = perturb_pixels(grey(128, (256, 256)), std, seed=SEED, key=KEY)
    noise = out - 128.0
    assert abs(noise.mean()) < 0.05
    assert noise.std() == pytest.approx(std, rel=0.02)


# ---------------------------------------------------------------- std 0, dtype, clipping


@pytest.mark.parametrize("quantize", ["none", "round", "floor"])
def test_std_zero_returns_the_clean_pixels_exactly(quantize):
    image = textured(1)
    out = perturb_pixels(image, 0.0, seed=SEED, key=KEY, quantize=quantize)
    assert out.dtype == np.float32 and out.shape == image.shape
    assert np.array_equal(out, image.astype(np.float32))


def test_output_dtype_and_shape():
    image = textured(2, (5, 7))
    out = perturb_pixels(image, 0.7, seed=SEED, key=KEY)
    assert out.dtype == np.float32 and out.shape == (5, 7, 3)


def test_output_is_clipped_to_the_pixel_range():
    image = np.zeros((40, 40, 3), dtype=np.uint8)
    image[:, 20:] = 255
    out = perturb_pixels(image, 50.0, seed=SEED, key=KEY)
    assert out.min() == 0.0 and out.max() == 255.0
    assert np.all((out >= 0.0) & (out <= 255.0))
    # about half the black pixels are clipped at 0 and half the white ones at 255
    assert 0.4 < np.mean(out[:, :20] == 0.0) < 0.6
    assert 0.4 < np.mean(out[:, 20:] == 255.0) < 0.6


@pytest.mark.parametrize("quantize", ["none", "round", "floor"])
def test_huge_std_stays_in_range(quantize):
    out = perturb_pixels(textured(3), 5000.0, seed=SEED, key=KEY, quantize=quantize)
    assert np.all((out >= 0.0) & (out <= 255.0))


# ---------------------------------------------------------------- quantisation


@pytest.mark.parametrize("std", [0.005, 0.01, 0.1])
def test_floor_makes_low_stds_identical_in_distribution(std):
    """The original's astype(uint8): about half the pixels of a mid-grey image drop by exactly 1."""
    image = grey(128, (128, 128))
    out = perturb_pixels(image, std, seed=SEED, key=KEY, quantize="floor")
    assert set(np.unique(out).tolist()) == {127.0, 128.0}
    lowered = np.mean(out == 127.0)
    assert 0.47 < lowered < 0.53


def test_floor_hides_the_std_while_none_keeps_it():
    image = grey(128, (128, 128))
    stds = [0.005, 0.01, 0.1]
    floored = [perturb_pixels(image, s, seed=SEED, key=KEY, quantize="floor") for s in stds]
    fractions = [np.mean(f == 127.0) for f in floored]
    assert max(fractions) - min(fractions) < 0.03
    plain = [perturb_pixels(image, s, seed=SEED, key=KEY, quantize="none") for s in stds]
    spreads = [float(np.std(p - 128.0)) for p in plain]
    for spread, std in zip(spreads, stds):
        assert spread == pytest.approx(std, rel=0.05)
    assert spreads[0] < spreads[1] < spreads[2]
    # float pixels are distinct values, not integer grey levels
    assert len(np.unique(plain[0])) > 1000
    assert not np.array_equal(plain[0], np.rint(plain[0]))


def test_floor_is_the_floor_of_the_float_noise():
    image = textured(4)
    plain = perturb_pixels(image, 3.0, seed=SEED, key=KEY, quantize="none")
    floored = perturb_pixels(image, 3.0, seed=SEED, key=KEY, quantize="floor")
    assert np.array_equal(floored, np.floor(plain))


def test_round_gives_integers_equal_to_rounded_float_noise():
    image = textured(5)
    plain = perturb_pixels(image, 3.0, seed=SEED, key=KEY, quantize="none")
    rounded = perturb_pixels(image, 3.0, seed=SEED, key=KEY, quantize="round")
    assert rounded.dtype == np.float32
    assert np.array_equal(rounded, np.rint(rounded))
    assert np.array_equal(rounded, np.rint(plain))
    assert np.all((rounded >= 0) & (rounded <= 255))


def test_round_at_tiny_std_returns_the_clean_image():
    image = grey(128, (32, 32))
    out = perturb_pixels(image, 0.01, seed=SEED, key=KEY, quantize="round")
    assert np.array_equal(out, image.astype(np.float32))


# ---------------------------------------------------------------- mean shift


def test_mean_is_added_even_at_std_zero():
    out = perturb_pixels(grey(100, (4, 4)), 0.0, seed=SEED, key=KEY, mean=2.5)
    np.testing.assert_array_equal(out, np.full((4, 4, 3), 102.5, dtype=np.float32))


# ---------------------------------------------------------------- normalised space


def test_normalized_noise_is_zero_at_std_zero():
    out = normalized_noise((3, 8, 8), 0.0, np.asarray(CLIP_STD), seed=SEED, key=KEY)
    assert out.dtype == np.float32 and out.shape == (3, 8, 8)
    assert not out.any()


def test_normalized_noise_scaling_per_channel():
    std = 4.0
    channel_std = np.asarray(CLIP_STD)
    shape = (3, 200, 200)
    out = normalized_noise(shape, std, channel_std, seed=SEED, key=KEY, draw=2)
    assert out.dtype == np.float32 and out.shape == shape
    unit = noise_rng(SEED, KEY, std, 2).standard_normal(shape, dtype=np.float32)
    want = unit * (std / 255.0 / channel_std).reshape(-1, 1, 1)
    np.testing.assert_allclose(out, want, rtol=1e-6)
    for c in range(3):
        assert out[c].std() == pytest.approx(std / 255.0 / channel_std[c], rel=0.02)


def test_normalized_noise_matches_pixel_noise_in_size():
    """std grey levels in pixel space = the same field divided by 255 * channel_std after normalisation."""
    std = 1.0
    channel_std = np.asarray(CLIP_STD, dtype=np.float32)
    pixel = perturb_pixels(grey(128, (16, 16)), std, seed=SEED, key=KEY) - 128.0   # H x W x 3
    norm = normalized_noise((3, 16, 16), std, channel_std, seed=SEED, key=KEY)   # 3 x H x W
    assert pixel.std() / 255.0 / channel_std[0] == pytest.approx(norm[0].std(), rel=0.2)


def test_normalized_noise_reproducible_and_keyed():
    cs = np.asarray(CLIP_STD)
    a = normalized_noise((3, 6, 6), 1.0, cs, seed=1, key=KEY)
    assert np.array_equal(a, normalized_noise((3, 6, 6), 1.0, cs, seed=1, key=KEY))
    assert not np.array_equal(a, normalized_noise((3, 6, 6), 1.0, cs, seed=1, key=KEY, draw=1))
    assert not np.array_equal(a, normalized_noise((3, 6, 6), 1.0, cs, seed=2, key=KEY))
    assert not np.array_equal(a, normalized_noise((3, 6, 6), 1.0, cs, seed=1, key=KEY + 1))
