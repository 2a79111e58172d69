"""What every transformers decoder VLM shares behind the contract: loading strictly, the forward at the
gathered positions, greedy generation and the speed options. The HF families (llava_hf.py, llava_next.py,
llava_original.py, hf_vlm.py) differ only in how they load, encode prompts and make pixel tensors.

The forward runs the model's base (`model.model`: vision tower, projector, language model) and applies
the LM head to the gathered hidden states only, cut to the real vocabulary. Side inputs of the sequence
(`TokenBatch.side`) go to the model as they are, except `position_ids` ([B, 3, S] for M-RoPE families,
computed on the host), which are given in the model's [3, B, S] layout and sliced after a kept prefix.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.base import VLMAdapter, compile_repeated_blocks, hf_progress_bars_off, right_padded
from logan.models.contract import ImageBatch, TokenBatch
from logan.models.prefix import KeptPrefix, continuation, keep_prefix

log = logging.getLogger(__name__)

POSITIONS = "position_ids"


def load_checked(
    model_class: Any,
    folder: Path,
    cfg: ModelConfig,
    device: torch.device,
    dtype: torch.dtype,
    family: str,
    **options: Any,
) -> tuple[torch.nn.Module, torch.device]:
    """`model_class.from_pretrained(folder)` straight to the device (or spread by `device_map`), in eval
    mode; a checkpoint that does not match its config is one error. Returns the model and the device its
    inputs go to."""
    placement = {"device_map": cfg.device_map or str(device)}
    with hf_progress_bars_off():
        model, info = model_class.from_pretrained(
            folder, dtype=dtype, output_loading_info=True, **placement, **options
        )
    problems = {
        k: v for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
    }
    if problems:
        kind, keys = next(iter(problems.items()))
        raise LoganError(
            f"checkpoint {folder} does not match its config: {kind.replace('_', ' ')} "
            f"{sorted(map(str, keys))[:3]}; it is not a complete {family} checkpoint."
        )
    model = (model if cfg.device_map else model.to(device)).eval()
    if cfg.device_map:  # spread over the node's GPUs: inputs go where the embeddings live
        device = model.get_input_embeddings().weight.device
    return model, device


class HFAdapter(VLMAdapter):
    """A transformers `...ForConditionalGeneration` whose image tokens sit in the decoder's sequence."""

    model: Any
    tokenizer: Any
    path: Path
    _compiled = False
    _kept: KeptPrefix | None = None  # inference.reuse_prefix (models/prefix.py)
    _no_prefix_reason = ""  # why traits.keeps_prefix is False, for the log
    logit_softcap: float | None = None  # tanh soft-capping after the LM head, where the model applies it
    image_names: set[str] | None = None  # image tensors the model's forward takes (None: all)

    def tokenize(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False).input_ids)

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), "model_path": str(self.path.resolve())}

    def language_model(self) -> torch.nn.Module | None:
        """The decoder the kept prefix runs on (transformers names it language_model, Idefics3 text_model)."""
        return getattr(self.model.model, "language_model", None) or getattr(
            self.model.model, "text_model", None
        )

    def prepare_inference(
        self, compile: bool = False, attn_implementation: str | None = None, reuse_prefix: bool = False
    ) -> None:
        if attn_implementation:
            self.model.set_attn_implementation(attn_implementation)
        if reuse_prefix and not self.traits.keeps_prefix:
            log.info("inference.reuse_prefix is off for this model: %s", self._no_prefix_reason)
        elif reuse_prefix:
            self._kept = keep_prefix(
                reuse_prefix, attn_implementation, self.language_model(), self.model.get_input_embeddings()
            )
        if compile and len(set(getattr(self.model, "hf_device_map", {}).values())) > 1:
            log.warning("inference.compile is ignored for a model spread over several devices (device_map)")
        elif compile:  # the vision tower's and the LM's layers; generate() runs them eagerly
            log.info("torch.compile: %d transformer blocks", compile_repeated_blocks(self.model))
            self._compiled = True

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits over the real vocabulary from final hidden states (the model's own post-head scaling)."""
        logits = self.model.lm_head(hidden)[..., : self.real_vocab]
        if self.logit_softcap:
            logits = torch.tanh(logits / self.logit_softcap) * self.logit_softcap
        return logits  # model dtype: the engine casts as it reduces

    def sequence_inputs(self, tokens: TokenBatch, skip: int) -> dict[str, Any]:
        """The side inputs and positions of the tokens after the first `skip` (kept) ones."""
        side = {
            k: v[..., skip:].to(self.device, non_blocking=True)
            for k, v in tokens.side.items()
            if k != POSITIONS
        }
        if POSITIONS in tokens.side:  # host-computed [B, 3, S] -> the model's [3, B, S]
            positions = tokens.side[POSITIONS].transpose(0, 1)[..., skip:].to(self.device, non_blocking=True)
            return {**side, POSITIONS: positions, **({"logan_prefix": True} if skip else {})}
        return {**side, **continuation(skip, tokens.input_ids.shape[1], self.device)}

    @torch.inference_mode()
    def forward_logits(self, tokens: TokenBatch, images: ImageBatch, positions: torch.Tensor) -> torch.Tensor:
        skip = self._kept.skip(tokens.prefix, tokens.attention_mask) if self._kept else 0
        attention_mask = tokens.attention_mask[:, skip:]
        # a right-padded batch needs no mask under causal attention (see right_padded)
        mask = None if right_padded(attention_mask) else attention_mask.to(self.device)
        hidden = self.model.model(
            input_ids=tokens.input_ids[:, skip:].to(self.device, non_blocking=True),
            attention_mask=mask,
            **images.to(self.device, self.dtype, self.image_names),
            use_cache=False,
            **self.sequence_inputs(tokens, skip),
        ).last_hidden_state
        index = (positions.to(self.device, non_blocking=True) - skip).clamp_min(0)  # padding rows point at 0
        return self.head(torch.gather(hidden, 1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1])))

    @torch.inference_mode()
    def generate(self, tokens: TokenBatch, images: ImageBatch, max_new_tokens: int) -> list[list[int]]:
        rows = self.model.lm_head.out_features
        stops = list(self.stop_token_ids)
        # an image token in a description would meet no image features when the description is scored
        banned = {
            *range(self.real_vocab, rows),
            self.pad_token_id,
            self.bos_token_id,
            self.image_token_id,
        } - {*stops, None}
        side = {
            k: v.to(self.device) for k, v in tokens.side.items() if k != POSITIONS
        }  # generate makes its own
        # one token at a time over a growing cache: compiled blocks would only recompile, so run eagerly
        with torch.compiler.set_stance("force_eager") if self._compiled else contextlib.nullcontext():
            out = self.model.generate(
                input_ids=tokens.input_ids.to(self.device),
                attention_mask=tokens.attention_mask.to(self.device),
                **images.to(self.device, self.dtype, self.image_names),
                **side,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                num_beams=1,
                suppress_tokens=sorted(banned),
                pad_token_id=self.pad_token_id,
                eos_token_id=stops or None,
            )
        return [until_eos(ids, stops) for ids in out[:, tokens.input_ids.shape[1] :].tolist()]

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """The ids generation stops at (EOS; chat models add their end-of-turn)."""
        return (self.eos_token_id,) if self.eos_token_id is not None else ()


def until_eos(ids: list[int], stops: list[int] | tuple[int, ...]) -> list[int]:
    """Generated ids up to (without) the first stop id."""
    ends = [ids.index(stop) for stop in stops if stop in ids]
    return ids[: min(ends)] if ends else ids
