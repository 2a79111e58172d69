"""The float CLIP-style transform against transformers' own (uint8, PIL-backend) CLIP image processor."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from PIL import Image

from logan.models.preprocess import CLIP_MEAN, CLIP_STD, ImageTransform

try:  # transformers 5 names the PIL backend explicitly; CLIPImageProcessor may need torchvision
    from transformers import CLIPImageProcessorPil as _Processor
except ImportError:  # pragma: no cover - older transformers
    from transformers import CLIPImageProcessor as _Processor

# one uint8 rounding after each of PIL's two resampling passes: < ~1.2 grey levels / (255 * 0.26)
UINT8_TOL = 0.02


def hf_processor(**extra) -> _Processor:
    kwargs = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                  image_mean=list(CLIP_MEAN), image_std=list(CLIP_STD))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _Processor(**(kwargs | extra))


def hf_pixels(processor, image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    return processor(images=image, return_tensors="np")["pixel_values"][0]


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Integer image without bicubic overshoot past 0 / 255 (uint8 PIL would clip it, float does not)."""
    rng = np.random.default_rng(seed)
    return rng.integers(40, 216, (h, w, 3), dtype=np.uint8)


def gradient_image(h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([255 * x / max(w - 1, 1), 255 * y / max(h - 1, 1), 127 + 100 * np.sin(x / 3.0)], -1)
    return np.rint(img).astype(np.uint8)


def expand2square(image: Image.Image, fill: tuple[int, ...]) -> Image.Image:
    """LLaVA-1.5's padding, written from its description (PIL, uint8)."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


TRANSFORM = ImageTransform(shortest_edge=32, crop_hw=(32, 32))


@pytest.mark.parametrize("shape", [(32, 32), (40, 40), (48, 64), (64, 48), (37, 53), (100, 33), (20, 24)])
def test_matches_clip_image_processor_on_integer_images(shape):
    image = smooth_image(*shape, seed=sum(shape))
    ours = TRANSFORM(image.astype(np.float32))
    ref = hf_pixels(hf_processor(), image)
    assert ours.shape == ref.shape == (3, 32, 32)
    np.testing.assert_allclose(ours, ref, atol=UINT8_TOL)


@pytest.mark.parametrize("shape", [(48, 64), (33, 90)])
def test_matches_clip_image_processor_on_a_gradient(shape):
    image = gradient_image(*shape)
    np.testing.assert_allclose(TRANSFORM(image.astype(np.float32)), hf_pixels(hf_processor(), image),
                               atol=UINT8_TOL)


def test_no_resize_is_exact():
    """When no resampling happens the float transform equals the processor to float precision."""
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    ref = hf_pixels(hf_processor(), image)
    np.testing.assert_allclose(TRANSFORM(image.astype(np.float32)), ref, atol=1e-5)


def test_resize_to_fixed_height_width_matches_processor():
    image = smooth_image(50, 70, seed=3)
    ours = ImageTransform(shortest_edge=None, resize_hw=(24, 40), crop_hw=None)(image.astype(np.float32))
    proc = hf_processor(size={"height": 24, "width": 40}, do_center_crop=False)
    ref = hf_pixels(proc, image)
    assert ours.shape == ref.shape == (3, 24, 40)
    np.testing.assert_allclose(ours, ref, atol=UINT8_TOL)


def test_output_shape_dtype_and_layout():
    out = TRANSFORM(smooth_image(45, 60).astype(np.float32))
    assert out.shape == (3, 32, 32)
    assert out.dtype == np.float32
    assert out.flags["C_CONTIGUOUS"]
    big = ImageTransform(shortest_edge=48, crop_hw=(40, 44))(smooth_image(45, 60).astype(np.float32))
    assert big.shape == (3, 40, 44) and big.dtype == np.float32


def test_float_noise_below_one_grey_level_survives():
    image = smooth_image(48, 64).astype(np.float32)
    clean = TRANSFORM(image)
    assert np.array_equal(clean, TRANSFORM(image.copy()))
    noisy = TRANSFORM(image + np.float32(0.01))
    diff = noisy - clean
    assert np.all(diff > 0)
    # a uniform +0.01 grey-level shift goes straight through (bicubic weights sum to 1)
    want = np.broadcast_to(0.01 / 255 / np.asarray(CLIP_STD)[:, None, None], diff.shape)
    np.testing.assert_allclose(diff, want, rtol=0.02)


def test_input_is_not_modified():
    image = smooth_image(30, 50).astype(np.float32)
    copy = image.copy()
    ImageTransform(shortest_edge=32, crop_hw=(32, 32), pad_to_square=True)(image)
    assert np.array_equal(image, copy)


# ---------------------------------------------------------------- pad to square


def pad_fill() -> np.ndarray:
    return np.array([int(m * 255) for m in CLIP_MEAN], dtype=np.float64)


def normalised(rgb: np.ndarray) -> np.ndarray:
    return (np.asarray(rgb, dtype=np.float64) / 255 - np.asarray(CLIP_MEAN)) / np.asarray(CLIP_STD)


@pytest.mark.parametrize("shape", [(20, 40), (40, 20), (21, 40)])
def test_pad_to_square_uses_the_mean_colour_centred(shape):
    h, w = shape
    image = np.zeros((h, w, 3), dtype=np.uint8)
    image[...] = (250, 10, 30)
    transform = ImageTransform(shortest_edge=32, crop_hw=(32, 32), pad_to_square=True)
    out = transform(image.astype(np.float32)).astype(np.float64)
    assert out.shape == (3, 32, 32)
    fill = normalised(pad_fill())
    body = normalised([250, 10, 30])
    # corners are padding in both orientations
    for y, x in ((0, 0), (0, 31), (31, 0), (31, 31)):
        np.testing.assert_allclose(out[:, y, x], fill, atol=1e-4)
    np.testing.assert_allclose(out[:, 16, 16], body, atol=1e-4)
    if h < w:  # padding above and below, image across the full width
        np.testing.assert_allclose(out[:, 0, 16], fill, atol=1e-4)
        np.testing.assert_allclose(out[:, 16, 0], body, atol=1e-4)
    else:
        np.testing.assert_allclose(out[:, 16, 0], fill, atol=1e-4)
        np.testing.assert_allclose(out[:, 0, 16], body, atol=1e-4)


def test_pad_fill_is_int_of_mean_times_255():
    assert pad_fill().tolist() == [122, 116, 104]


def test_pad_to_square_matches_expand2square_then_processor():
    image = smooth_image(30, 56, seed=7)
    fill = tuple(int(m * 255) for m in CLIP_MEAN)
    ref = hf_pixels(hf_processor(), expand2square(Image.fromarray(image), fill))
    ours = ImageTransform(shortest_edge=32, crop_hw=(32, 32), pad_to_square=True)(image.astype(np.float32))
    np.testing.assert_allclose(ours, ref, atol=UINT8_TOL)


def test_pad_is_centred_with_odd_difference():
    """21 rows on a 40 x 40 square: (40 - 21) // 2 = 9 rows above, 10 below."""
    image = np.full((21, 40, 3), 200, dtype=np.float32)
    padded = ImageTransform(shortest_edge=None, crop_hw=None, pad_to_square=True)._pad(image)
    assert padded.shape == (40, 40, 3)
    rows = padded[:, 0, 0]
    assert np.all(rows[:9] == 122) and np.all(rows[9:30] == 200) and np.all(rows[30:] == 122)


def test_square_input_is_not_padded():
    image = smooth_image(32, 32).astype(np.float32)
    with_pad = ImageTransform(shortest_edge=32, crop_hw=(32, 32), pad_to_square=True)(image)
    assert np.array_equal(with_pad, TRANSFORM(image))


# ---------------------------------------------------------------- configs


def test_from_config_reads_a_clip_processor_config():
    proc = hf_processor()
    config = json.loads(proc.to_json_string())
    transform = ImageTransform.from_config(config)
    assert transform == ImageTransform(shortest_edge=32, crop_hw=(32, 32), image_mean=tuple(CLIP_MEAN),
                                       image_std=tuple(CLIP_STD), resample=Image.Resampling.BICUBIC)
    image = smooth_image(45, 61, seed=9)
    np.testing.assert_allclose(transform(image.astype(np.float32)), hf_pixels(proc, image), atol=UINT8_TOL)


@pytest.mark.parametrize("transform", [
    ImageTransform(),
    ImageTransform(shortest_edge=32, crop_hw=(32, 32)),
    ImageTransform(shortest_edge=None, resize_hw=(24, 40), crop_hw=None),
    ImageTransform(shortest_edge=224, crop_hw=(224, 200), image_mean=(0.5, 0.5, 0.5),
                   image_std=(0.5, 0.5, 0.5), rescale_factor=1 / 127.5, resample=Image.Resampling.BILINEAR),
])
def test_to_config_from_config_round_trip(transform):
    config = transform.to_config()
    assert json.loads(json.dumps(config)) == config
    assert ImageTransform.from_config(config) == transform


def test_round_trip_keeps_padding_only_when_asked():
    transform = ImageTransform(shortest_edge=32, crop_hw=(32, 32), pad_to_square=True)
    config = transform.to_config()
    assert ImageTransform.from_config(config, pad_to_square=True) == transform
    assert ImageTransform.from_config(config | {"do_pad": True}) == transform


def test_to_config_is_loadable_by_the_clip_processor():
    transform = ImageTransform(shortest_edge=32, crop_hw=(32, 32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        proc = _Processor(**{k: v for k, v in transform.to_config().items() if k != "image_processor_type"})
    image = smooth_image(40, 52, seed=4)
    np.testing.assert_allclose(transform(image.astype(np.float32)), hf_pixels(proc, image), atol=UINT8_TOL)


def test_from_config_variants():
    t = ImageTransform.from_config({"size": 48, "crop_size": 40})
    assert (t.shortest_edge, t.resize_hw, t.crop_hw) == (48, None, (40, 40))
    t = ImageTransform.from_config({"size": {"height": 30, "width": 20}, "do_center_crop": False,
                                    "crop_size": {"height": 10, "width": 10}})
    assert (t.shortest_edge, t.resize_hw, t.crop_hw) == (None, (30, 20), None)
    t = ImageTransform.from_config({"do_rescale": False, "rescale_factor": 0.5})
    assert t.rescale_factor == 1.0
    t = ImageTransform.from_config({"do_resize": False, "crop_size": {"height": 8, "width": 8}})
    assert t.shortest_edge is None and t.resize_hw is None
    out = t(smooth_image(12, 10).astype(np.float32))
    assert out.shape == (3, 8, 8)


def test_from_folder(tmp_path):
    assert ImageTransform.from_folder(tmp_path) is None
    transform = ImageTransform(shortest_edge=32, crop_hw=(32, 32))
    (tmp_path / "processor_config.json").write_text(json.dumps({"image_processor": transform.to_config()}))
    assert ImageTransform.from_folder(tmp_path) == transform
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(ImageTransform().to_config()))
    assert ImageTransform.from_folder(tmp_path) == ImageTransform()
    assert ImageTransform.from_folder(tmp_path, pad_to_square=True).pad_to_square is True


def test_crop_larger_than_image_pads_with_zeros():
    transform = ImageTransform(shortest_edge=None, crop_hw=(10, 10), image_mean=(0, 0, 0),
                               image_std=(1, 1, 1))
    out = transform(np.full((6, 8, 3), 255.0, dtype=np.float32))
    assert out.shape == (3, 10, 10)
    assert out[:, 0, 0].tolist() == [0.0, 0.0, 0.0]
    assert out[:, 5, 5].tolist() == [1.0, 1.0, 1.0]


def test_to_config_without_resize_round_trips():
    transform = ImageTransform.from_config({"do_resize": False, "crop_size": {"height": 8, "width": 8}})
    assert ImageTransform.from_config(transform.to_config()) == transform


def test_to_config_keeps_pad_to_square():
    transform = ImageTransform(shortest_edge=32, crop_hw=(32, 32), pad_to_square=True)
    assert ImageTransform.from_config(transform.to_config()) == transform
