"""VL-MIA's four image augmentations for aug-KL, seeded per (seed, image content, augmentation).

RandomResizedCrop(256), RandomRotation(45), RandomAffine(30, translate 0.1, scale 0.75-1.25) and
ColorJitter(0.5, 0.5, 0.5, 0.5), as torchvision defines them, written with PIL (torchvision is not a
dependency). VL-MIA draws them unseeded; here the same image always gets the same augmentations.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageEnhance

N_AUGMENTATIONS = 4


def _rng(seed: int, key: int, index: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key, 0xA06, index])


def _resized_crop(img: Image.Image, rng: np.random.Generator, size: int = 256) -> Image.Image:
    w, h = img.size
    for _ in range(10):
        area = w * h * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        cw, ch = round(math.sqrt(area * ratio)), round(math.sqrt(area / ratio))
        if 0 < cw <= w and 0 < ch <= h:
            left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            return img.resize((size, size), Image.Resampling.BILINEAR, box=(left, top, left + cw, top + ch))
    side = min(w, h)
    box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
    return img.resize((size, size), Image.Resampling.BILINEAR, box=box)


def _rotation(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    return img.rotate(rng.uniform(-45, 45), resample=Image.Resampling.NEAREST)


def _affine(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    w, h = img.size
    angle = math.radians(rng.uniform(-30, 30))
    scale = rng.uniform(0.75, 1.25)
    tx, ty = rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h
    cx, cy = w / 2, h / 2
    # inverse map (output -> input) of rotate-scale about the centre, then translate
    a, b = math.cos(angle) / scale, math.sin(angle) / scale
    matrix = (a, b, cx - a * (cx + tx) - b * (cy + ty), -b, a, cy + b * (cx + tx) - a * (cy + ty))
    return img.transform(img.size, Image.Transform.AFFINE, matrix, resample=Image.Resampling.NEAREST)


def _colour_jitter(img: Image.Image, rng: np.random.Generator) -> Image.Image:
    img = ImageEnhance.Brightness(img).enhance(rng.uniform(0.5, 1.5))
    img = ImageEnhance.Contrast(img).enhance(rng.uniform(0.5, 1.5))
    img = ImageEnhance.Color(img).enhance(rng.uniform(0.5, 1.5))
    hsv = np.asarray(img.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.uniform(-0.5, 0.5) * 255)) % 256
    return Image.fromarray(hsv, "HSV").convert("RGB")


AUGMENTATIONS = (_resized_crop, _rotation, _affine, _colour_jitter)


def augment(image: np.ndarray, index: int, *, seed: int, key: int) -> np.ndarray:
    """The `index`-th VL-MIA augmentation of a uint8 image, as float32 pixels (0-255).

    The output keeps the input's size (the 256 px crop is resized back), so families whose number of
    image tokens depends on the image size see the same sequence layout as for the clean image.
    """
    img = Image.fromarray(image)
    out = AUGMENTATIONS[index](img, _rng(seed, key, index)).convert("RGB")
    if out.size != img.size:
        out = out.resize(img.size, Image.Resampling.BICUBIC)
    return np.asarray(out, dtype=np.float32)
