"""LLaVA in Hugging Face format (`LlavaForConditionalGeneration`), e.g. llava-hf/llava-1.5-7b-hf.

    logan tune target_model=llava-hf target_model.model_path=/models/llava-1.5-7b-hf \
        data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT

Prompts follow the original LLaVA-1.5 (`conv_mode=llava_v1`, system prompt, chunk-wise tokenisation
around the image); logits are cut to the real vocabulary (32000 for llava-1.5-7b-hf, whose 64 extra
rows are padding) before any softmax.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.contract import Traits
from logan.models.hf import HFAdapter, load_checked
from logan.models.preprocess import ImageTransform
from logan.models.registry import register_model

log = logging.getLogger(__name__)


def _check_folder(path: str | None, model_type: str = "llava", family: str = "LLaVA") -> Path:
    if not path:
        raise LoganError(
            f"target_model.model_path is not set: give the folder of a Hugging Face {family} checkpoint."
        )
    folder = Path(path).expanduser()
    config = folder / "config.json"
    if not config.is_file():
        raise LoganError(
            f"target_model.model_path={folder} is not a Hugging Face model folder (no config.json there)."
        )
    found = json.loads(config.read_text()).get("model_type")
    if found != model_type:
        raise LoganError(
            f"{folder} holds a '{found}' model, not an HF-format {family} (model_type '{model_type}'); "
            "pick the target_model that matches the checkpoint (or target_model=auto)."
        )
    return folder


@register_model("llava-hf")
class LlavaHF(HFAdapter):
    """Adapter for any local HF-format LLaVA folder."""

    # what a subclass for another HF LLaVA family changes: config.json's model_type and the transformers class
    hf_model_type, family, hf_class = "llava", "LLaVA", "LlavaForConditionalGeneration"
    traits = Traits(keeps_prefix=True)

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        _check_folder(cfg.model_path, cls.hf_model_type, cls.family)

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        import transformers
        from transformers import AutoTokenizer

        folder = _check_folder(cfg.model_path, self.hf_model_type, self.family)
        self.model, device = load_checked(
            getattr(transformers, self.hf_class), folder, cfg, device, dtype, self.family
        )
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.device, self.dtype, self.conv_mode = device, dtype, self.resolve_conv_mode(cfg.conv_mode)
        config = self.model.config
        transform = ImageTransform.from_folder(folder, cfg.pad_to_square)
        if transform is None:
            raise LoganError(f"{folder} has no preprocessor_config.json: the image preprocessing is unknown.")
        self.transform = transform
        self.image_token_id = int(getattr(config, "image_token_id", None) or config.image_token_index)
        vision = config.vision_config
        patches = (vision.image_size // vision.patch_size) ** 2
        self.n_image_tokens = patches + (1 if config.vision_feature_select_strategy == "full" else 0)
        rows = self.model.lm_head.out_features
        self.set_token_ids(self.tokenizer, rows, cfg.vocab_size)
        self.path = folder
        log.info(
            "loaded %s (%s, %s): %d image tokens, vocabulary %d of %d rows",
            folder,
            device,
            str(dtype).replace("torch.", ""),
            self.n_image_tokens,
            self.real_vocab,
            rows,
        )
