"""LLaVA in Hugging Face format (`LlavaForConditionalGeneration`), e.g. llava-hf/llava-1.5-7b-hf.

    logan tune target_model=llava-hf target_model.model_path=/models/llava-1.5-7b-hf \
        data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT

Prompts follow the original LLaVA-1.5 (`conv_mode=llava_v1`, system prompt, chunk-wise tokenisation
around the image); logits are cut to the real vocabulary (32000 for llava-1.5-7b-hf, whose 64 extra
rows are padding) before any softmax.
"""

from __future__ import annotations

import contextlib
import json
import logging
from pathlib import Path

import torch

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.base import VLMAdapter, compile_repeated_blocks, hf_progress_bars_off, right_padded
from logan.models.prefix import KeptPrefix, continuation, keep_prefix
from logan.models.preprocess import ImageTransform
from logan.models.registry import register_model

log = logging.getLogger(__name__)


def _check_folder(path: str | None, model_type: str = "llava", family: str = "LLaVA") -> Path:
    if not path:
        raise LoganError(
            f"target_model.model_path is not set: give the folder of a Hugging Face {family} checkpoint.")
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
            "pick the target_model that matches the checkpoint."
        )
    return folder


@register_model("llava-hf")
class LlavaHF(VLMAdapter):
    """Adapter for any local HF-format LLaVA folder."""

    # what a subclass for another HF LLaVA family changes: config.json's model_type and the transformers class
    hf_model_type, family, hf_class = "llava", "LLaVA", "LlavaForConditionalGeneration"
    _compiled = False
    _kept: KeptPrefix | None = None  # inference.reuse_prefix (models/prefix.py)

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        _check_folder(cfg.model_path, cls.hf_model_type, cls.family)

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        import transformers
        from transformers import AutoTokenizer

        folder = _check_folder(cfg.model_path, self.hf_model_type, self.family)
        model_class = getattr(transformers, self.hf_class)
        # straight to the device (no copy through host memory), or spread by accelerate's device_map
        placement = {"device_map": cfg.device_map or str(device)}
        with hf_progress_bars_off():
            model, info = model_class.from_pretrained(folder, dtype=dtype, output_loading_info=True, **placement)
        problems = {k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if problems:
            kind, keys = next(iter(problems.items()))
            raise LoganError(
                f"checkpoint {folder} does not match its config: {kind.replace('_', ' ')} "
                f"{sorted(map(str, keys))[:3]}; it is not a complete {self.family} checkpoint."
            )
        self.model = (model if cfg.device_map else model.to(device)).eval()
        if cfg.device_map:  # spread over the node's GPUs: inputs go where the embeddings live
            device = self.model.get_input_embeddings().weight.device
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.device, self.dtype, self.conv_mode = device, dtype, cfg.conv_mode
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
        log.info("loaded %s (%s, %s): %d image tokens, vocabulary %d of %d rows",
                 folder, device, str(dtype).replace("torch.", ""), self.n_image_tokens, self.real_vocab, rows)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "model_path": str(self.path.resolve())}

    def model_inputs(self, pixel_values: torch.Tensor) -> dict:
        """The HF model's image keyword arguments (on its device) for what `pixel_values()` returned."""
        return {"pixel_values": self.to_model(pixel_values)}

    def prepare_inference(self, compile: bool = False, attn_implementation: str | None = None,
                          reuse_prefix: bool = False) -> None:
        if attn_implementation:
            self.model.set_attn_implementation(attn_implementation)
        self._kept = keep_prefix(reuse_prefix, attn_implementation, self.model.model.language_model,
                                 self.model.get_input_embeddings())
        if compile and len(set(getattr(self.model, "hf_device_map", {}).values())) > 1:
            log.warning("inference.compile is ignored for a model spread over several devices (device_map)")
        elif compile:  # the vision tower's and the LM's layers; generate() runs them eagerly
            log.info("torch.compile: %d transformer blocks", compile_repeated_blocks(self.model))
            self._compiled = True

    @torch.inference_mode()
    def forward_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       pixel_values: torch.Tensor, positions: torch.Tensor,
                       prefix: tuple[int, ...] = ()) -> torch.Tensor:
        skip = self._kept.skip(prefix, attention_mask) if self._kept else 0
        attention_mask = attention_mask[:, skip:]
        # a right-padded batch needs no mask under causal attention (see right_padded)
        mask = None if right_padded(attention_mask) else attention_mask.to(self.device)
        hidden = self.model.model(
            input_ids=input_ids[:, skip:].to(self.device, non_blocking=True),
            attention_mask=mask,
            **self.model_inputs(pixel_values),
            use_cache=False,
            **continuation(skip, input_ids.shape[1], self.device),
        ).last_hidden_state
        index = (positions.to(self.device, non_blocking=True) - skip).clamp_min(0)  # padding rows point at 0
        picked = torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
        return self.model.lm_head(picked)[..., : self.real_vocab]  # model dtype: the engine casts as it reduces

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                 max_new_tokens: int) -> list[list[int]]:
        rows = self.model.lm_head.out_features
        banned = {*range(self.real_vocab, rows), self.pad_token_id, self.bos_token_id} - {self.eos_token_id, None}
        # one token at a time over a growing cache: compiled blocks would only recompile, so run eagerly
        with torch.compiler.set_stance("force_eager") if self._compiled else contextlib.nullcontext():
            out = self.model.generate(
                input_ids=input_ids.to(self.device),
                attention_mask=attention_mask.to(self.device),
                **self.model_inputs(pixel_values),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                suppress_tokens=sorted(banned),
                pad_token_id=self.pad_token_id,
                eos_token_id=self.eos_token_id,
            )
        new = out[:, input_ids.shape[1]:].tolist()
        result = []
        for ids in new:
            if self.eos_token_id is not None and self.eos_token_id in ids:
                ids = ids[: ids.index(self.eos_token_id)]
            result.append(ids)
        return result
