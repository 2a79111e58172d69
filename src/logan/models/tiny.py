"""A tiny but real LLaVA (CLIP vision tower + Llama LM, transformers classes), built offline.

It is saved in Hugging Face format with a word-level tokenizer and a CLIP preprocessor config, so
every `logan` command loads it exactly like a downloaded checkpoint:

    from logan.models.tiny import build_tiny_llava
    build_tiny_llava("tiny", corpus=["a red circle on a blue background"])
    # logan tune target_model=llava-hf target_model.model_path=tiny ...
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from logan.io import follow_umask
from logan.models.base import TEMPLATES, token_id
from logan.models.preprocess import ImageTransform

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

SPECIALS = ["<unk>", "<s>", "</s>", "<pad>"]
NEWLINE = "⏎"


@dataclass(frozen=True)
class TinySpec:
    image_size: int = 32
    patch_size: int = 8
    vision_hidden: int = 32
    vision_layers: int = 2
    hidden: int = 64
    layers: int = 2
    heads: int = 4
    intermediate: int = 128
    max_positions: int = 256


def _tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.Sequence([normalizers.Replace("\n", f" {NEWLINE} "), normalizers.Lowercase()])
    pre = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    words: dict[str, None] = {}
    for text in corpus:
        for word, _ in pre.pre_tokenize_str(normalizer.normalize_str(text)):
            words[word] = None
    vocab = {w: i for i, w in enumerate([*SPECIALS, *[w for w in words if w not in SPECIALS]])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.normalizer = normalizer
    backend.pre_tokenizer = pre
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>"
    )
    tok.add_tokens(["<image>"], special_tokens=True)
    return tok


def build_tiny_llava(
    folder: str | Path,
    corpus: list[str],
    spec: TinySpec = TinySpec(),
    seed: int = 0,
    instruction: str = "Describe this image concisely.",
) -> Path:
    """Build a randomly initialised tiny LLaVA whose vocabulary covers `corpus` and the prompt templates."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    folder = Path(folder)
    texts = [*corpus, instruction, *(t for pair in TEMPLATES.values() for t in pair)]
    tok = _tokenizer(texts)
    image_token = token_id(tok, "<image>")
    config = LlavaConfig(
        text_config={
            "model_type": "llama",
            "vocab_size": len(tok),
            "hidden_size": spec.hidden,
            "num_hidden_layers": spec.layers,
            "num_attention_heads": spec.heads,
            "num_key_value_heads": spec.heads,
            "intermediate_size": spec.intermediate,
            "max_position_embeddings": spec.max_positions,
            "pad_token_id": tok.pad_token_id,
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "tie_word_embeddings": False,
        },
        vision_config={
            "model_type": "clip_vision_model",
            "image_size": spec.image_size,
            "patch_size": spec.patch_size,
            "hidden_size": spec.vision_hidden,
            "num_hidden_layers": spec.vision_layers,
            "num_attention_heads": 4,
            "intermediate_size": spec.vision_hidden * 2,
            "projection_dim": spec.vision_hidden,
        },
        image_token_index=image_token,
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        image_seq_length=(spec.image_size // spec.patch_size) ** 2,
    )
    config.pad_token_id = tok.pad_token_id  # not one of LlavaConfig's declared fields: set as an extra key
    with torch.random.fork_rng(devices=[]):  # seeded here, the caller's random state restored afterwards
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    transform = ImageTransform(shortest_edge=spec.image_size, crop_hw=(spec.image_size, spec.image_size))
    (folder / "preprocessor_config.json").write_text(json.dumps(transform.to_config(), indent=2) + "\n")
    (folder / "logan_tiny.json").write_text(json.dumps({"spec": asdict(spec), "seed": seed}, indent=2) + "\n")
    follow_umask(folder)
    return folder
