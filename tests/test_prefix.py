"""inference.reuse_prefix: the prompt before the image runs once, every forward starts at the image, and
the scores are those of full forwards. On a GPU with `LOGAN_TEST_DEVICE=cuda` (float16, flash attention)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from logan.config import ModelConfig
from logan.data.images import load_image
from logan.engine import Engine, EngineSettings, WorkItem
from logan.models.contract import TokenBatch
from logan.models.llava_hf import LlavaHF
from logan.models.prefix import KEYS, prefix_attention

DEVICE = torch.device(os.environ.get("LOGAN_TEST_DEVICE", "cpu"))
DTYPE = torch.float32 if DEVICE.type == "cpu" else torch.float16
METRICS = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2"]


def adapter(world, reuse: bool, compile: bool = False) -> LlavaHF:
    model = LlavaHF(ModelConfig(model_path=str(world.model)), DEVICE, DTYPE)
    model.prepare_inference(compile=compile, reuse_prefix=reuse)
    return model


@pytest.fixture(scope="module")
def items(world, model) -> list[WorkItem]:
    entries = json.loads(world.members.read_text())[:3] + json.loads(world.nonmembers.read_text())[:3]
    words = model.tokenize("a small red circle . a small blue square .")
    return [WorkItem(e["image"], e["label"], description=tuple(words[: 2 + i])) for i, e in enumerate(entries)]


def scores(model: LlavaHF, items: list[WorkItem], parts: list[str], **settings) -> dict:
    engine = Engine(model, EngineSettings(parts=parts, metrics=METRICS, instruction="Describe.", batch_size=4,
                                          **settings))
    out = {}
    for std, results in engine.run(items, [0.0, 2.0, 30.0]):
        for res in results:
            out.update({(std, res.sample_id, *key): values for key, values in res.tokens.items()})
            out.update({(std, res.sample_id, part, "loss"): np.array(loss[:2]) for part, loss in res.losses.items()})
    return out


def lengths_seen(model: LlavaHF) -> list[int]:
    """The sequence lengths the language model is run on (a forward hook's record)."""
    seen: list[int] = []
    model.model.model.language_model.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["inputs_embeds"].shape[1]), with_kwargs=True)
    return seen


@pytest.mark.parametrize("parts", [["img"], ["img", "inst", "desp"]])
def test_forwards_that_start_at_the_image_score_as_full_forwards(world, items, parts) -> None:
    full, kept = adapter(world, reuse=False), adapter(world, reuse=True)
    seen = lengths_seen(kept)
    want, got = scores(full, items, parts), scores(kept, items, parts)
    prefix = kept.encode("Describe.").image_start
    assert prefix > 10 and len(kept._kept.ids) == prefix  # the system prompt's tokens are kept
    sequence = max(len(kept.encode("Describe.", list(it.description), text_after_image=parts != ["img"]).input_ids)
                   for it in items)
    assert seen[0] == prefix and max(seen[1:]) == sequence - prefix  # captured once; forwards skip it
    assert want.keys() == got.keys()
    tolerance = {"rtol": 1e-5, "atol": 1e-7} if DTYPE == torch.float32 else {"rtol": 2e-2, "atol": 1e-4}
    for key in want:
        if key[0] == 0.0 and key[-1] != "loss":
            assert np.all(got[key] == 0)  # clean and noisy forwards still share every kernel
        else:
            np.testing.assert_allclose(got[key], want[key], **tolerance, err_msg=str(key))


def test_the_kept_keys_are_what_the_image_positions_attend_to(world, items) -> None:
    kept = adapter(world, reuse=True)
    before = scores(kept, items[:4], ["img"])
    with torch.inference_mode():
        for module in kept.model.modules():
            if hasattr(module, KEYS):
                getattr(module, KEYS).mul_(1.5)
    after = scores(kept, items[:4], ["img"])
    assert any(not np.allclose(before[key], after[key]) for key in before if key[0] != 0.0)


def test_another_prefix_is_captured_anew_and_generation_is_unchanged(world, items) -> None:
    full, kept = adapter(world, reuse=False), adapter(world, reuse=True)
    for conv_mode in ("llava_v1", "vicuna_v1", "llava_v1"):  # another system prompt, then the first again
        full.conv_mode = kept.conv_mode = conv_mode
        want, got = scores(full, items[:4], ["img"]), scores(kept, items[:4], ["img"])
        assert kept._kept.ids == kept.encode("Describe.").input_ids[: kept.encode("Describe.").image_start]
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=2e-2 if DTYPE != torch.float32 else 1e-5, atol=1e-4)
    tokens = TokenBatch.build([kept.encode("Describe this image concisely.", None)] * 2, kept.pad_token_id, "left")
    pixels = kept.image_batch([load_image(it.sample_id)[0].astype(np.float32) for it in items[:2]])
    assert kept.generate(tokens, pixels, 6) == full.generate(tokens, pixels, 6)


def test_a_batch_without_a_common_prefix_runs_whole(world, items) -> None:
    kept = adapter(world, reuse=True)
    seen = lengths_seen(kept)
    sequences = [kept.encode("Describe.", None, text_after_image=False)] * 2
    tokens = TokenBatch.build(sequences, kept.pad_token_id, "left")
    ids, mask = tokens.input_ids, tokens.attention_mask
    ids, mask = torch.cat([ids, ids[:, :1]], 1), torch.cat([mask, torch.zeros_like(mask[:, :1])], 1)
    mask[1] = mask[1].roll(1)  # row 1 starts with a pad: its first tokens are not the prefix
    pixels = kept.image_batch([load_image(it.sample_id)[0].astype(np.float32) for it in items[:2]])
    positions = torch.arange(sequences[0].image_start, sequences[0].image_end).expand(2, -1)
    kept.forward_logits(replace(tokens, input_ids=ids, attention_mask=mask, prefix=sequences[0].prefix), pixels,
                        positions)
    assert seen == [ids.shape[1]] and kept._kept.ids == ()


@pytest.mark.parametrize("padded", [False, True])
def test_prefix_attention_equals_attention_over_the_whole_sequence(padded) -> None:
    """The attention function alone: [prefix keys; own keys] with the causal mask aligned to the last key
    (no mask: flash on a GPU; a 4D padding mask from HF: the prefix columns are added) = full attention."""
    gen = torch.Generator().manual_seed(0)
    batch, heads, kv_heads, prefix, length, dim = 3, 4, 2, 5, 7, 16
    q, k, v = (torch.randn(batch, h, prefix + length, dim, generator=gen).to(DEVICE, DTYPE)
               for h in (heads, kv_heads, kv_heads))
    module = torch.nn.Module()
    module.num_key_value_groups, module.is_causal = heads // kv_heads, True
    module.register_buffer(KEYS, k[:1, :, :prefix].clone())
    module.register_buffer("logan_prefix_values", v[:1, :, :prefix].clone())
    k[:, :, :prefix], v[:, :, :prefix] = k[:1, :, :prefix], v[:1, :, :prefix]  # one prefix for every row
    keep = torch.ones(batch, prefix + length, dtype=torch.bool, device=DEVICE)
    if padded:
        keep[0, -3:] = keep[2, -1:] = False  # right padding
    visible = torch.ones(prefix + length, prefix + length, dtype=torch.bool, device=DEVICE).tril()
    full_mask = (visible & keep[:, None, None, :])
    rep = heads // kv_heads
    want = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=full_mask,
        scale=1 / math.sqrt(dim)).transpose(1, 2)[:, prefix:]
    own_mask = full_mask[..., prefix:, prefix:] if padded else None
    got, _ = prefix_attention(module, q[:, :, prefix:], k[:, :, prefix:], v[:, :, prefix:], own_mask,
                              scaling=1 / math.sqrt(dim), logan_prefix=True)
    rows = keep[:, prefix:]  # outputs at padded positions are never read
    torch.testing.assert_close(got[rows], want[rows], **({} if DTYPE == torch.float32 else
                                                         {"rtol": 2e-3, "atol": 2e-3}))
    plain, _ = prefix_attention(module, q, k, v, full_mask, scaling=1 / math.sqrt(dim))  # not asked: SDPA
    torch.testing.assert_close(plain[:, prefix:][rows], want[rows], **({} if DTYPE == torch.float32 else
                                                                       {"rtol": 2e-3, "atol": 2e-3}))


def test_compiled_blocks_with_the_kept_prefix_compile_no_more_graphs(world, items) -> None:
    """The keys live on the attention modules, so one compiled block still serves every layer."""
    from torch._dynamo.utils import counters

    graphs = {}
    for reuse in (False, True):
        torch._dynamo.reset()
        counters.clear()
        model = adapter(world, reuse=reuse, compile=True)
        for parts in (["img"], ["img", "desp"]):
            scores(model, items[:3], parts)
        graphs[reuse] = counters["stats"]["unique_graphs"]
    assert graphs[True] == graphs[False], graphs
