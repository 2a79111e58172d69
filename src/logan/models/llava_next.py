"""LLaVA-NeXT (LLaVA-1.6) in Hugging Face format (`LlavaNextForConditionalGeneration`).

    logan tune target_model=llava-next target_model.model_path=/models/llava-v1.6-mistral-7b-hf \
        data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT

For a vicuna checkpoint (llava-v1.6-vicuna-7b-hf) add `target_model.conv_mode=vicuna_v1`.

LLaVA-NeXT's "anyres" input: the image is resized (aspect kept) into the best-fitting resolution of
`image_grid_pinpoints`, zero-padded to it and cut into tiles of the vision tower's size; a base view of
the whole image resized to one tile comes first. The model drops the padding rows/columns again and
ends every row of tile features with a newline embedding, so the number of image tokens depends on
the image's size. Everything else (loading, vocabulary cut, prompts, generation) is the HF LLaVA
adapter's; the views are made from float pixels (PIL's 32-bit float mode) so that noise below one grey
level survives, like `ImageTransform` does for LLaVA-1.5.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import torch

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.base import TEMPLATES
from logan.models.contract import PIXELS, ImageInput, Size, Traits
from logan.models.llava_hf import LlavaHF
from logan.models.preprocess import ImageTransform
from logan.models.registry import register_model

# conv_mode -> (text before the image, text after it), as LLaVA-NeXT's conversation templates render them
NEXT_TEMPLATES: dict[str, tuple[str, str]] = {
    "mistral_instruct": ("[INST] ", "\n{instruction} [/INST]"),  # llava-v1.6-mistral-7b
}


@register_model("llava-next")
class LlavaNext(LlavaHF):
    """Adapter for a local HF-format LLaVA-NeXT folder (model_type `llava_next`)."""

    hf_model_type, family, hf_class = "llava_next", "LLaVA-NeXT", "LlavaNextForConditionalGeneration"
    default_conv_mode = "mistral_instruct"
    traits = Traits(keeps_prefix=True, fixed_image_tokens=False)

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        known = {**TEMPLATES, **NEXT_TEMPLATES}
        if cls.resolve_conv_mode(cfg.conv_mode) not in known:
            raise LoganError(
                f"target_model.conv_mode={cfg.conv_mode} is unknown; use one of {', '.join(known)}."
            )
        if cfg.pad_to_square:
            raise LoganError(
                "target_model.pad_to_square=true does not apply to LLaVA-NeXT: it tiles the "
                "whole image (anyres) instead; leave it null or false."
            )
        super().check(cfg)

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        self.check(cfg)
        super().__init__(cfg, device, dtype)
        config = self.model.config
        vision = config.vision_config
        # preprocessor_config.json's do_pad pads the tile stacks for batching, not the image to a square
        self.transform = replace(self.transform, pad_to_square=False)
        t = self.transform
        tile = t.crop_hw[0] if t.crop_hw else (t.resize_hw[0] if t.resize_hw else t.shortest_edge)
        base_hw = t.resize_hw or ((t.shortest_edge, t.shortest_edge) if t.shortest_edge is not None else None)
        strategy = config.vision_feature_select_strategy
        if strategy != "default" or tile is None or tile != vision.image_size or base_hw is None:
            raise LoganError(
                f"{self.path} is not a LLaVA-NeXT layout this adapter knows: it needs "
                f"vision_feature_select_strategy 'default' (has '{strategy}') and image tiles of the vision "
                f"tower's size {vision.image_size} (its image processor makes {tile})."
            )
        self.tile, self.base_hw = tile, base_hw
        self.pinpoints = [tuple(int(v) for v in p) for p in config.image_grid_pinpoints]
        self.side = vision.image_size // vision.patch_size  # features per tile edge

    def template(self) -> tuple[str, str]:
        return NEXT_TEMPLATES.get(self.conv_mode) or super().template()

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "image_grid_pinpoints": [list(p) for p in self.pinpoints]}

    def _best_fit(self, height: int, width: int) -> tuple[int, int]:
        from transformers.image_processing_utils import select_best_resolution

        return select_best_resolution((height, width), self.pinpoints)

    def image_tokens(self, image_size: Size | None = None) -> int:
        """Base-view features + the unpadded tile grid with one newline per row (HF's count, per image)."""
        if image_size is None:
            raise ValueError("LLaVA-NeXT's image-token count depends on the image: pass image_size=(w, h).")
        width, height = image_size
        best_h, best_w = self._best_fit(height, width)
        rows, cols = best_h // self.tile * self.side, best_w // self.tile * self.side
        # same float arithmetic as transformers' unpad_image, so rounding ties resolve identically
        if width / height > cols / rows:
            rows -= (rows - int(round(height * (cols / width), 7))) // 2 * 2
        else:
            cols -= (cols - int(round(width * (rows / height), 7))) // 2 * 2
        return self.side * self.side + rows * (cols + 1)

    def _views(self, pixels: np.ndarray) -> list[np.ndarray]:
        """The base view and the tiles of one H x W x 3 float image, still in 0-255 and unnormalised."""
        height, width = pixels.shape[:2]
        best_h, best_w = self._best_fit(height, width)
        scale_w, scale_h = best_w / width, best_h / height  # transformers' get_patch_output_size
        if scale_w < scale_h:
            new_h, new_w = min(math.ceil(height * scale_w), best_h), best_w
        else:
            new_h, new_w = best_h, min(math.ceil(width * scale_h), best_w)
        canvas = np.zeros((best_h, best_w, 3), dtype=np.float32)
        top, left = (best_h - new_h) // 2, (best_w - new_w) // 2
        canvas[top : top + new_h, left : left + new_w] = self._resized(pixels, (new_h, new_w))
        tiles = [
            canvas[i : i + self.tile, j : j + self.tile]
            for i in range(0, best_h, self.tile)
            for j in range(0, best_w, self.tile)
        ]
        return [self._resized(pixels, self.base_hw), *tiles]

    def _resized(self, pixels: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
        """Float resize to exactly (height, width) with the processor's filter; no normalising or rounding."""
        plain = ImageTransform(
            shortest_edge=None,
            resize_hw=size_hw,
            crop_hw=None,
            rescale_factor=1.0,
            image_mean=(0.0, 0.0, 0.0),
            image_std=(1.0, 1.0, 1.0),
            resample=self.transform.resample,
        )
        return plain(pixels).transpose(1, 2, 0)

    def layout_size(self, image_size: Size | None) -> Size | None:
        return image_size  # the image-token count follows the size

    def image_input(self, pixels: np.ndarray) -> ImageInput:
        """{"pixel_values": [1, views, C, H, W], "image_sizes": [1, (h, w)]} of one image (collate pads the
        views of a batch with zero views, as the processor does)."""
        views = np.stack([self.transform(view) for view in self._views(pixels)])
        sizes = torch.tensor([pixels.shape[:2]], dtype=torch.long)
        return ImageInput(
            {PIXELS: torch.from_numpy(views).unsqueeze(0), "image_sizes": sizes},
            (pixels.shape[1], pixels.shape[0]),
        )
