"""The text before the image, computed once: every forward of a run starts at the image.

In a causal language model the tokens before the image attend only to each other, so their keys and
values are the same for every sample and every noise level. LLaVA-1.5's system prompt is about 5 % of an
img-only sequence (a few dozen tokens before 576 image tokens), so 5 % of every forward. An adapter that
reuses it:

1. holds a `KeptPrefix` for its language model, which switches it to the attention function
   `logan_prefix`: SDPA, unless a call asks for the prefix;
2. asks it how many leading tokens to skip (`KeptPrefix.skip`); on first use it runs the prefix once
   (`capture`), and each attention layer keeps its keys and values as buffers;
3. forwards the rest of each sequence with `continuation(...)`: `position_ids` that go on after the
   prefix, and the call keyword `logan_prefix=True`, under which each layer attends over [its prefix
   keys; the batch's keys] with the causal mask aligned to the last key (the first query sees the whole
   prefix).

The keys live on the attention modules (buffers), not in a per-layer cache indexed by layer number, so a
block compiled once (`compile_repeated_blocks`) still serves every layer without recompiling.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

ATTENTION = "logan_prefix"
KEYS, VALUES = "logan_prefix_keys", "logan_prefix_values"


def prefix_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    logan_prefix: bool = False,
    logan_capture: dict | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """HF attention function: SDPA, over the module's prefix keys first when the call asks for them."""
    from transformers.integrations.sdpa_attention import repeat_kv, sdpa_attention_forward

    if logan_capture is not None:  # the prefix's own forward: keep what this layer computed
        logan_capture[module] = (key, value)
    past = getattr(module, KEYS, None) if logan_prefix else None
    if past is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    batch, length = query.shape[0], query.shape[2]
    key = torch.cat([past.expand(batch, -1, -1, -1), key], dim=2)
    value = torch.cat([getattr(module, VALUES).expand(batch, -1, -1, -1), value], dim=2)
    groups = getattr(module, "num_key_value_groups", 1)
    key, value = (repeat_kv(key, groups), repeat_kv(value, groups)) if groups > 1 else (key, value)
    if attention_mask is None and _flash_runs(query):  # flash's causal mask is aligned to the last key
        out = torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, dropout, True, scale=scaling
        )[0]
    else:
        if attention_mask is None:  # causal, aligned to the last key: query i sees the prefix and keys <= i
            mask = torch.ones(length, key.shape[2], dtype=torch.bool, device=query.device).tril(past.shape[2])
        else:  # HF's 4D mask over the batch's own keys: every query also sees the whole prefix
            seen = torch.ones(
                *attention_mask.shape[:-1], past.shape[2], dtype=torch.bool, device=attention_mask.device
            )
            if attention_mask.dtype != torch.bool:  # an additive mask: 0 where attention is allowed
                seen = torch.zeros_like(seen, dtype=attention_mask.dtype)
            mask = torch.cat([seen, attention_mask], dim=-1)
        out = F.scaled_dot_product_attention(
            query, key, value, attn_mask=mask, dropout_p=dropout, scale=scaling
        )
    return out.transpose(1, 2).contiguous(), None


_FLASH_GPUS: set[int] = set()  # CUDA devices where flash attention runs (compute capability 8 and newer)


def _flash_runs(query: torch.Tensor) -> bool:
    """Whether PyTorch's flash kernel takes this query (its causal flag then aligns to the last key)."""
    head = query.shape[-1]
    return (
        query.is_cuda
        and query.device.index in _FLASH_GPUS
        and head % 8 == 0
        and head <= 256
        and query.dtype in (torch.float16, torch.bfloat16)
    )


def use_prefix_attention(language_model: Any) -> None:
    """Register `logan_prefix` with transformers (masks as SDPA's) and switch `language_model` to it."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, prefix_attention)
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)
    language_model.set_attn_implementation(ATTENTION)


@torch.inference_mode()
def capture(language_model: torch.nn.Module, embeds: torch.Tensor) -> int:
    """Run `language_model` (an HF decoder on `logan_prefix` attention) on the prefix `embeds` [1, P, H],
    eagerly, and keep each attention layer's keys and values [1, kv heads, P, head dim]; returns the count."""
    store: dict[torch.nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}
    eager = getattr(torch.compiler, "set_stance", None)  # compiled blocks run as written (torch >= 2.6)
    with eager("force_eager") if eager else contextlib.nullcontext():
        language_model(inputs_embeds=embeds, use_cache=False, logan_capture=store)
    device = embeds.device
    if (
        device.type == "cuda"
        and torch.backends.cuda.flash_sdp_enabled()
        and (torch.cuda.get_device_capability(device)[0] >= 8)
    ):
        _FLASH_GPUS.add(device.index if device.index is not None else torch.cuda.current_device())
    for module, (keys, values) in store.items():
        module.register_buffer(KEYS, keys.clone(), persistent=False)
        module.register_buffer(VALUES, values.clone(), persistent=False)
    return len(store)


class KeptPrefix:
    """The prompt ids before the image whose keys and values `language_model`'s layers keep."""

    def __init__(self, language_model: Any, embed: torch.nn.Module) -> None:
        use_prefix_attention(language_model)
        self.language_model, self.embed = language_model, embed
        self.ids: tuple[int, ...] = ()

    def skip(self, prefix: tuple[int, ...], mask: torch.Tensor) -> int:
        """How many leading tokens of a batch (host `mask` [B, S]) its forward leaves to the kept keys."""
        if not prefix or not bool(mask[:, : len(prefix)].all()):
            return 0
        if prefix != self.ids:
            weight = self.embed.weight
            assert isinstance(weight, torch.Tensor)  # an embedding's table
            ids = torch.tensor([prefix], dtype=torch.long, device=weight.device)
            layers = capture(self.language_model, self.embed(ids))
            self.ids = prefix
            log.info(
                "the %d prompt tokens before the image run once: %d layers keep their keys",
                len(prefix),
                layers,
            )
        return len(prefix)


def keep_prefix(
    reuse: bool, attn_implementation: str | None, language_model: Any, embed: torch.nn.Module
) -> KeptPrefix | None:
    """`inference.reuse_prefix` for an adapter: a KeptPrefix, or None when off or when the user picked an
    attention implementation other than SDPA (which the kept keys run on)."""
    if reuse and attn_implementation not in (None, "sdpa"):
        log.info(
            "inference.reuse_prefix is off under attn_implementation=%s (it runs on SDPA)",
            attn_implementation,
        )
    return KeptPrefix(language_model, embed) if reuse and attn_implementation in (None, "sdpa") else None


def continuation(skip: int, length: int, device: torch.device) -> dict[str, Any]:
    """The language model's keyword arguments for a batch of `length` tokens whose first `skip` are kept."""
    if not skip:
        return {}
    return {"position_ids": torch.arange(skip, length, device=device).unsqueeze(0), "logan_prefix": True}
