"""Float-precision image preprocessing: CLIP-style pad / resize / centre-crop / normalise (ImageTransform),
and any transformers PIL-backend image processor made to run in float (float_image_processor).

The model's own image processor rounds to uint8 after resizing, which would erase noise below one
grey level. This transform runs the same steps on float pixels (PIL's bicubic filter in 32-bit float
mode, per channel), so `noise.quantize=none` keeps every std distinct and std 0 is bit-identical to
the clean image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageTransform:
    """Preprocessing parameters of one model; `__call__` maps H x W x 3 floats (0-255) to C x H x W."""

    shortest_edge: int | None = 336
    resize_hw: tuple[int, int] | None = None
    crop_hw: tuple[int, int] | None = (336, 336)
    pad_to_square: bool = False
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD
    rescale_factor: float = 1 / 255
    resample: int = Image.Resampling.BICUBIC

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.pad_to_square:
            pixels = self._pad(pixels)
        pixels = self._resize(pixels)
        if self.crop_hw is not None:
            pixels = _centre_crop(pixels, self.crop_hw)
        mean = np.asarray(self.image_mean, dtype=np.float32)
        std = np.asarray(self.image_std, dtype=np.float32)
        out = (pixels * np.float32(self.rescale_factor) - mean) / std
        return np.ascontiguousarray(out.transpose(2, 0, 1), dtype=np.float32)

    def _pad(self, pixels: np.ndarray) -> np.ndarray:
        """LLaVA-1.5's expand2square: centre the image on a square of the mean colour."""
        h, w = pixels.shape[:2]
        if h == w:
            return pixels
        side = max(h, w)
        fill = np.array([int(m * 255) for m in self.image_mean], dtype=np.float32)
        square = np.empty((side, side, 3), dtype=np.float32)
        square[:] = fill
        top, left = (side - h) // 2, (side - w) // 2
        square[top : top + h, left : left + w] = pixels
        return square

    def _resize(self, pixels: np.ndarray) -> np.ndarray:
        h, w = pixels.shape[:2]
        if self.resize_hw is not None:
            out_h, out_w = self.resize_hw
        elif self.shortest_edge is not None:
            short, long = (h, w) if h <= w else (w, h)
            new_long = int(self.shortest_edge * long / short)
            out_h, out_w = (self.shortest_edge, new_long) if h <= w else (new_long, self.shortest_edge)
        else:
            return pixels
        if (out_h, out_w) == (h, w):
            return pixels
        channels = [
            resize_plane(pixels[:, :, c], out_w, out_h, self.resample) for c in range(pixels.shape[2])
        ]
        return np.stack(channels, axis=2).astype(np.float32, copy=False)

    @classmethod
    def from_config(cls, config: dict[str, Any], pad_to_square: bool | None = None) -> ImageTransform:
        """From a Hugging Face image-processor config (preprocessor_config.json)."""
        size = config.get("size") or {"shortest_edge": 336}
        shortest, resize_hw = None, None
        if isinstance(size, dict) and "shortest_edge" in size:
            shortest = int(size["shortest_edge"])
        elif isinstance(size, dict):
            resize_hw = (int(size["height"]), int(size["width"]))
        else:
            shortest = int(size)
        if not config.get("do_resize", True):
            shortest, resize_hw = None, None
        crop = config.get("crop_size")
        crop_hw = None
        if config.get("do_center_crop", crop is not None) and crop:
            crop_hw = (
                (int(crop["height"]), int(crop["width"]))
                if isinstance(crop, dict)
                else (int(crop), int(crop))
            )
        pad = bool(config.get("do_pad", False)) if pad_to_square is None else pad_to_square
        return cls(
            shortest_edge=shortest,
            resize_hw=resize_hw,
            crop_hw=crop_hw,
            pad_to_square=pad,
            image_mean=tuple(config.get("image_mean", CLIP_MEAN)),
            image_std=tuple(config.get("image_std", CLIP_STD)),
            rescale_factor=float(config.get("rescale_factor", 1 / 255))
            if config.get("do_rescale", True)
            else 1.0,
            resample=int(config.get("resample", Image.Resampling.BICUBIC)),
        )

    @classmethod
    def from_folder(cls, folder: Path, pad_to_square: bool | None = None) -> ImageTransform | None:
        """Read the image-processor settings saved in a model folder, if any."""
        folder = Path(folder)
        direct = folder / "preprocessor_config.json"
        if direct.exists():
            return cls.from_config(json.loads(direct.read_text()), pad_to_square)
        nested = folder / "processor_config.json"
        if nested.exists():
            config = json.loads(nested.read_text()).get("image_processor")
            if config:
                return cls.from_config(config, pad_to_square)
        return None

    def to_config(self) -> dict[str, Any]:
        """A CLIPImageProcessor-compatible preprocessor_config.json for this transform."""
        if self.shortest_edge:
            size: dict[str, int] = {"shortest_edge": self.shortest_edge}
        elif self.resize_hw:
            size = {"height": self.resize_hw[0], "width": self.resize_hw[1]}
        else:
            size = {}
        config: dict[str, Any] = {
            "image_processor_type": "CLIPImageProcessor",
            "do_resize": bool(size),
            "size": size,
            "resample": int(self.resample),
            "do_pad": self.pad_to_square,
            "do_center_crop": self.crop_hw is not None,
            "do_rescale": True,
            "rescale_factor": self.rescale_factor,
            "do_normalize": True,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_convert_rgb": True,
        }
        if self.crop_hw is not None:
            config["crop_size"] = {"height": self.crop_hw[0], "width": self.crop_hw[1]}
        return config


def resize_plane(plane: np.ndarray, width: int, height: int, resample: int) -> np.ndarray:
    """One float channel resized in PIL's 32-bit float mode ('F'): no rounding, no clipping."""
    return np.asarray(
        Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32)).resize((width, height), resample)
    )


def _centre_crop(pixels: np.ndarray, crop_hw: tuple[int, int]) -> np.ndarray:
    h, w = pixels.shape[:2]
    ch, cw = crop_hw
    if h < ch or w < cw:
        pad_h, pad_w = max(ch - h, 0), max(cw - w, 0)
        pixels = np.pad(pixels, ((pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
        h, w = pixels.shape[:2]
    top, left = (h - ch) // 2, (w - cw) // 2
    return pixels[top : top + ch, left : left + cw]


def float_image_processor(image_processor: Any) -> Any:
    """A copy of a transformers PIL-backend image processor that runs in float: its resize works in PIL's
    32-bit float mode (same filter, no rounding to uint8, no clipping) and RGB conversion is skipped (LOGAN
    hands over H x W x 3 pixels). Everything else (the family's sizing rules, tiling, cropping, pan-and-scan,
    patchifying, rescaling, normalising) stays transformers' own code, which works on any dtype: the class
    is derived as (family class, FloatResize, PilBackend), so a family's `resize` override computes its size
    and calls `super().resize`, which lands here. A processor of another backend is returned as it is."""
    import copy

    from transformers.image_processing_backends import PilBackend

    if not isinstance(image_processor, PilBackend):
        return image_processor
    clone = copy.copy(image_processor)
    clone.__class__ = _float_class(type(image_processor))
    return clone


_FLOAT_CLASSES: dict[type, type] = {}


def _float_class(pil_class: type) -> type:
    if pil_class not in _FLOAT_CLASSES:
        from transformers.image_processing_backends import PilBackend

        class FloatResize(PilBackend):
            def resize(
                self,
                image: np.ndarray,
                size: Any,
                resample: Any = None,
                reducing_gap: Any = None,
                **kwargs: Any,
            ) -> np.ndarray:
                height, width = _target_size(image, size)
                filter_ = Image.Resampling.BILINEAR if resample is None else int(resample)
                if image.shape[1:] == (height, width):
                    return image.astype(np.float32, copy=False)
                return np.stack([resize_plane(c, width, height, filter_) for c in image]).astype(
                    np.float32, copy=False
                )

            def convert_to_rgb(self, image: np.ndarray, input_data_format: Any = None) -> np.ndarray:
                return image

        _FLOAT_CLASSES[pil_class] = type(f"{pil_class.__name__}Float", (pil_class, FloatResize), {})
    return _FLOAT_CLASSES[pil_class]


def _target_size(chw: np.ndarray, size: Any) -> tuple[int, int]:
    """The (height, width) transformers' PilBackend.resize gives a C x H x W image for `size` (same rules,
    same order, same helpers)."""
    from transformers.image_transforms import get_resize_output_image_size, get_size_with_aspect_ratio
    from transformers.image_utils import ChannelDimension, get_image_size_for_max_height_width

    height, width = chw.shape[1:]
    if size.shortest_edge and size.longest_edge:
        out_h, out_w = get_size_with_aspect_ratio((height, width), size.shortest_edge, size.longest_edge)
        return out_h, out_w
    if size.shortest_edge:
        out_h, out_w = get_resize_output_image_size(
            chw, size=size.shortest_edge, default_to_square=False, input_data_format=ChannelDimension.FIRST
        )
        return out_h, out_w
    if size.max_height and size.max_width:
        return get_image_size_for_max_height_width((height, width), size.max_height, size.max_width)
    if size.height and size.width:
        return size.height, size.width
    raise ValueError(
        f"an image size without height and width, max_height and max_width or shortest_edge: {size}"
    )
