"""Seeded Gaussian noise in 0-255 pixel units (LOGAN's perturbation).

Noise is drawn per (seed, image content key, std, draw), so a sample gets the same perturbation in any
batch, order, shard or rerun. In `pixel` space it is added to the original-resolution image before the
model's preprocessing and clipped to [0, 255], as the original does. Quantisation:

- `none` (default): float pixels go to the preprocessing as they are.
- `round`: round to integers, as saving the noisy image as PNG would.
- `floor`: the original's `astype(np.uint8)`. It floors, so every std below about 0.3 gives the same
  perturbation (about half the pixels lowered by exactly 1); low-std results in this mode are a
  quantisation artefact, not a noise level.

In `normalized` space the noise is added to the model's pixel tensor instead (after resizing and
normalisation), scaled so that `std` keeps its 0-255 meaning: std / 255 / channel_std per channel. Families
that patchify their pixels into rows without a channel axis (Qwen2-VL) refuse it.
"""

from __future__ import annotations

import struct

import numpy as np


def noise_rng(seed: int, key: int, std: float, draw: int) -> np.random.Generator:
    """The generator of one (seed, sample, std, draw) noise field."""
    std_bits = struct.unpack("<Q", struct.pack("<d", float(std)))[0]
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key, std_bits, int(draw)])


def perturb_pixels(
    image: np.ndarray,
    std: float,
    *,
    seed: int,
    key: int,
    draw: int = 0,
    quantize: str = "none",
    mean: float = 0.0,
) -> np.ndarray:
    """Noisy copy (float32, H x W x 3, 0-255) of a uint8 image; std == 0 returns the clean pixels."""
    pixels = image.astype(np.float32)
    if std == 0 and mean == 0:
        return pixels
    noise = noise_rng(seed, key, std, draw).standard_normal(pixels.shape, dtype=np.float32)
    noisy = np.clip(pixels + np.float32(mean) + np.float32(std) * noise, 0.0, 255.0)
    if quantize == "round":
        return np.rint(noisy)
    if quantize == "floor":
        return np.floor(noisy)
    return noisy


def normalized_noise(
    shape: tuple[int, ...],
    std: float,
    channel_std: np.ndarray,
    *,
    seed: int,
    key: int,
    draw: int = 0,
    channel_axis: int = -3,
) -> np.ndarray:
    """Noise for a normalised pixel tensor of `shape` (one image's: [1, C, H, W], [views, C, H, W], ...),
    equivalent in size to `std` grey levels; `channel_axis` (negative) holds the C channels."""
    if std == 0:
        return np.zeros(shape, dtype=np.float32)
    noise = noise_rng(seed, key, std, draw).standard_normal(shape, dtype=np.float32)
    scale = np.float32(std) / 255.0 / channel_std.astype(np.float32)
    return noise * scale.reshape(-1, *([1] * (-channel_axis - 1)))
