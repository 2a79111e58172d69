"""Tiny random-weight Hugging Face VLM folders for the generic adapter's tests, built offline from config
classes, each with its real processor class, a small BPE tokenizer of the family's own tokenizer class
carrying its special tokens, and a chat template that renders the family's prompt structure:

| family | prompt (instruction "Describe.") | image tokens |
|---|---|---|
| qwen2_vl, qwen2_5_vl | `<|im_start|>system ...<|im_end|>\n<|im_start|>user\n<|vision_start|><|image_pad|>...` | (h/28)(w/28), M-RoPE |
| idefics3 | `<|begin_of_text|>User:<image>Describe.<end_of_utterance>\nAssistant:` | tiles x 4, row tags between |
| gemma3 | `<bos><start_of_turn>user\n<start_of_image>Describe.<end_of_turn>\n<start_of_turn>model\n` | 16, token_type_ids |
| llava_onevision | `<|im_start|>user <image>\nDescribe.<|im_end|><|im_start|>assistant\n` | anyres grid |
| internvl | `<|im_start|>user\n<IMG_CONTEXT>\nDescribe.<|im_end|>\n<|im_start|>assistant\n` | 4 per tile |

`build(name, folder)` saves one (a fraction of a second each); the folder loads with
`AutoModelForImageTextToText` and, without torchvision, with the processor minus its video processor
(with torchvision, `AutoProcessor` loads the whole processor: processor_config.json is written as the real
class writes it).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

CORPUS = ["a red circle on a blue background", "a green square next to a yellow triangle",
          "Describe this image concisely.", "Describe.", "What is in the picture? Answer briefly.",
          "You are a helpful assistant.", "user assistant system model User: Assistant:",
          "Here is the original image and here are some crops to help you see better",
          "a small red circle . a large green square"]
TEXT = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 2048}
VISION = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}


@dataclass(frozen=True)
class Shape:
    """A real checkpoint's shape in place of the tiny one (benchmarks/bench_families.py): config values, the
    image processor's settings, and whether to save random weights (False: config only, the benchmark makes
    the weights on the GPU)."""

    text: dict = field(default_factory=dict)
    vision: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    image: dict = field(default_factory=dict)
    processor: dict = field(default_factory=dict)
    weights: bool = True


TINY = Shape()


def train_bpe(tokenizer_cls: type, specials: list[str], byte_level: bool = True, **kwargs: Any) -> Any:
    """A tokenizer of the family's own class whose BPE (vocabulary 400) is trained here on CORPUS through the
    class's own normaliser and pre-tokeniser; `specials` are added as special tokens after it."""
    from tokenizers import pre_tokenizers, trainers

    backend = tokenizer_cls(**kwargs)._tokenizer
    alphabet = pre_tokenizers.ByteLevel.alphabet() if byte_level else sorted(set("".join(CORPUS) + "\n▁ "))
    named = [str(kwargs[k]) for k in ("pad_token", "eos_token", "bos_token", "unk_token") if kwargs.get(k)]
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=alphabet, show_progress=False, special_tokens=named)
    backend.train_from_iterator(CORPUS * 4, trainer=trainer)
    model = json.loads(backend.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    tok = tokenizer_cls(vocab=model["vocab"], merges=merges, **kwargs)
    tok.add_special_tokens({"extra_special_tokens": specials}, replace_extra_special_tokens=False)
    return tok


def save(folder: Path, model: Any, processor_class: str, video: tuple[str, dict] | None, **parts: Any) -> Path:
    """Save the model (a model, or only its config) and its processor as a Hub folder holds them, with or
    without torchvision."""
    import transformers

    from logan.models.hf_vlm import image_only

    model.save_pretrained(folder)
    cls = getattr(transformers, processor_class)
    wants_video = "video_processor" in cls.get_attributes()
    try:
        if wants_video:
            parts["video_processor"] = getattr(transformers, video[0])(**video[1])
        processor = cls(**parts)
    except ImportError:  # the video processor needs torchvision: save the image-only processor
        processor = image_only(cls)(**{**parts, "video_processor": None})
    processor.save_pretrained(folder)
    path = folder / "processor_config.json"
    config = json.loads(path.read_text())
    config["processor_class"] = processor_class
    image = config.get("image_processor", {})
    image["image_processor_type"] = image.get("image_processor_type", "").removesuffix("Pil")
    if wants_video and "video_processor" not in config:
        config["video_processor"] = {"video_processor_type": video[0], **video[1]}
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return folder


def _chatml(image: str, system: bool = False, space: str = "\n", close: str = "\n") -> str:
    """ChatML as the Qwen / OneVision / InternVL checkpoints render it, the image as `image`."""
    head = ("{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
            "{% endif %}") if system else ""
    return (head + "{% for m in messages %}<|im_start|>{{ m['role'] }}" + space +
            "{% for c in m['content'] %}{% if c['type'] == 'image' %}" + image +
            "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}<|im_end|>" + close +
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _seeded(model_cls: Any, config: Any, shape: Shape = TINY, seed: int = 0) -> Any:
    """The model with seeded random weights, or its config alone (`shape.weights` False)."""
    if not shape.weights:
        return config
    torch.manual_seed(seed)
    return model_cls(config).eval()


def qwen(folder: Path, version: str = "2", shape: Shape = TINY) -> Path:
    import transformers

    specials = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
    tok = train_bpe(transformers.Qwen2Tokenizer, specials, unk_token=None, bos_token=None, eos_token="<|im_end|>",
                    pad_token="<|endoftext|>")
    ids = {t: tok.convert_tokens_to_ids(t) for t in specials}
    # LM-head rows past the tokenizer, as Qwen2-VL-7B's 152064 rows for its 151657 tokens: logits are cut
    text = {**TEXT, "vocab_size": len(tok) + 43, "bos_token_id": None, "eos_token_id": ids["<|im_end|>"],
            "pad_token_id": tok.pad_token_id,
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
            **shape.text}
    if version == "2":
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 4, "mlp_ratio": 2}
        names = ("Qwen2VLConfig", "Qwen2VLForConditionalGeneration", "Qwen2VLProcessor")
    else:
        vision = {"depth": 2, "hidden_size": 32, "intermediate_size": 64, "out_hidden_size": 64, "num_heads": 4,
                  "window_size": 56, "fullatt_block_indexes": [1]}
        names = ("Qwen2_5_VLConfig", "Qwen2_5_VLForConditionalGeneration", "Qwen2_5_VLProcessor")
    vision |= {"patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2, **shape.vision}
    config = getattr(transformers, names[0])(
        text_config=text, vision_config=vision, image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        tie_word_embeddings=False, **shape.config)
    size = {"shortest_edge": 28 * 28 * 4, "longest_edge": 28 * 28 * 64}  # 4 .. 64 image tokens
    grid = {"size": size, "patch_size": 14, "merge_size": 2, "temporal_patch_size": 2, **shape.image}
    model = _seeded(getattr(transformers, names[1]), config, shape)
    return save(folder, model, names[2], ("Qwen2VLVideoProcessor", grid),
                image_processor=transformers.Qwen2VLImageProcessorPil(**grid), tokenizer=tok,
                chat_template=_chatml("<|vision_start|><|image_pad|><|vision_end|>", system=True))


def idefics3(folder: Path) -> Path:
    import transformers

    tags = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    specials = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>", *tags]
    tok = train_bpe(transformers.GPT2Tokenizer, specials, unk_token="<|endoftext|>", bos_token="<|begin_of_text|>",
                    eos_token="<end_of_utterance>", pad_token="<|endoftext|>")
    text = {**TEXT, "model_type": "llama", "vocab_size": len(tok), "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    config = transformers.Idefics3Config(text_config=text, vision_config={**VISION, "image_size": 64, "patch_size": 16},
                                         image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2,
                                         pad_token_id=tok.pad_token_id)
    template = ("{{ bos_token }}{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
                "{% endfor %}<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
    image = transformers.Idefics3ImageProcessorPil(size={"longest_edge": 256}, max_image_size={"longest_edge": 64})
    return save(folder, _seeded(transformers.Idefics3ForConditionalGeneration, config), "Idefics3Processor", None,
                image_processor=image, tokenizer=tok, image_seq_len=4, chat_template=template)


def gemma3(folder: Path, shape: Shape = TINY) -> Path:
    import transformers

    named = {"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>", "image_token": "<image_soft_token>"}
    tok = train_bpe(transformers.GemmaTokenizer, ["<start_of_turn>", "<end_of_turn>", *named.values()],
                    byte_level=False, unk_token="<unk>", bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                    mask_token="<mask>", extra_special_tokens=named)
    # final_logit_softcapping as some gemma-3 config.json files set it: Gemma3ForConditionalGeneration ignores it
    text = {**TEXT, "vocab_size": len(tok), "head_dim": 16, "query_pre_attn_scalar": 16, "sliding_window": 32,
            "final_logit_softcapping": 30.0,
            "layer_types": ["sliding_attention", "full_attention"], "pad_token_id": tok.pad_token_id,
            "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id, **shape.text}
    ids = {k: tok.convert_tokens_to_ids(v) for k, v in named.items()}
    config = transformers.Gemma3Config(
        text_config=text, vision_config={**VISION, "model_type": "siglip_vision_model", "image_size": 64,
                                         "patch_size": 8, **shape.vision},
        **{"mm_tokens_per_image": 16, **shape.config}, boi_token_index=ids["boi_token"],
        eoi_token_index=ids["eoi_token"], image_token_index=ids["image_token"])
    model = _seeded(transformers.Gemma3ForConditionalGeneration, config, shape)
    if shape.weights:  # transformers initialises the image projection to zeros: the image would not count
        torch.nn.init.normal_(model.model.multi_modal_projector.mm_input_projection_weight, std=0.5)
    template = ("{{ bos_token }}{% for m in messages %}<start_of_turn>"
                "{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<start_of_image>{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}"
                "{% endfor %}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")
    image = transformers.Gemma3ImageProcessorPil(**{
        "size": {"height": 64, "width": 64}, "image_mean": [0.5] * 3, "image_std": [0.5] * 3,
        "pan_and_scan_min_crop_size": 32, "pan_and_scan_max_num_crops": 4, "pan_and_scan_min_ratio_to_activate": 1.2,
        **shape.image})
    return save(folder, model, "Gemma3Processor", None, image_processor=image, tokenizer=tok,
                **{"image_seq_length": 16, **shape.processor}, chat_template=template)


def llava_onevision(folder: Path) -> Path:
    import transformers

    tok = train_bpe(transformers.Qwen2Tokenizer, ["<|im_start|>", "<|im_end|>", "<image>", "<video>"], unk_token=None,
                    bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    pinpoints = [[32 * i, 32 * j] for i in range(1, 4) for j in range(1, 4)]
    config = transformers.LlavaOnevisionConfig(
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), "eos_token_id": tok.eos_token_id,
                     "pad_token_id": tok.pad_token_id},
        vision_config={**VISION, "model_type": "siglip_vision_model", "image_size": 32, "patch_size": 8},
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        image_grid_pinpoints=pinpoints, vision_feature_select_strategy="full", vision_feature_layer=-1,
        vision_aspect_ratio="anyres_max_9")
    image = transformers.LlavaOnevisionImageProcessorPil(size={"height": 32, "width": 32}, image_grid_pinpoints=pinpoints)
    return save(folder, _seeded(transformers.LlavaOnevisionForConditionalGeneration, config), "LlavaOnevisionProcessor",
                ("LlavaOnevisionVideoProcessor", {"size": {"height": 32, "width": 32}}), image_processor=image,
                tokenizer=tok, num_image_tokens=16, vision_feature_select_strategy="full",
                vision_aspect_ratio="anyres_max_9", chat_template=_chatml("<image>\n", space=" ", close=""))


def internvl(folder: Path) -> Path:
    import transformers

    named = {"start_image_token": "<img>", "end_image_token": "</img>", "context_image_token": "<IMG_CONTEXT>",
             "video_token": "<video>"}
    tok = train_bpe(transformers.Qwen2Tokenizer, ["<|im_start|>", "<|im_end|>", *named.values()], unk_token=None,
                    bos_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>", extra_special_tokens=named)
    config = transformers.InternVLConfig(
        text_config={**TEXT, "model_type": "qwen2", "vocab_size": len(tok), "eos_token_id": tok.eos_token_id,
                     "pad_token_id": tok.pad_token_id},
        vision_config={**VISION, "image_size": [32, 32], "patch_size": [8, 8]}, image_seq_length=4,
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), downsample_ratio=0.5, tie_word_embeddings=False)
    image = transformers.GotOcr2ImageProcessorPil(size={"height": 32, "width": 32}, crop_to_patches=True, min_patches=1,
                                                 max_patches=6, image_mean=[0.485, 0.456, 0.406],
                                                 image_std=[0.229, 0.224, 0.225])
    return save(folder, _seeded(transformers.InternVLForConditionalGeneration, config), "InternVLProcessor",
                ("InternVLVideoProcessor", {"size": {"height": 32, "width": 32}}), image_processor=image,
                tokenizer=tok, image_seq_length=4, chat_template=_chatml("<IMG_CONTEXT>\n"))


def llava(folder: Path, tiny_llava: Path) -> Path:
    """A copy of a tiny llava-hf folder with a LlavaProcessor whose chat template renders llava-hf's prompt
    (`<s>USER: <image>\\n{instruction} ASSISTANT:`, conv_mode=llava_hf's text)."""
    import shutil

    import transformers

    shutil.copytree(tiny_llava, folder)
    template = ("{{ bos_token }}{% for m in messages %}USER: {% for c in m['content'] %}{% if c['type'] == 'image' %}"
                "<image>\n{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %} ASSISTANT:{% endfor %}")
    config = transformers.AutoConfig.from_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        image = transformers.CLIPImageProcessorPil.from_pretrained(folder)
    processor = transformers.LlavaProcessor(
        image_processor=image, tokenizer=transformers.AutoTokenizer.from_pretrained(folder),
        patch_size=config.vision_config.patch_size, vision_feature_select_strategy="default",
        num_additional_image_tokens=1, chat_template=template)
    processor.save_pretrained(folder)
    return folder


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "qwen2_vl": qwen, "qwen2_5_vl": lambda folder: qwen(folder, "2.5"), "idefics3": idefics3, "gemma3": gemma3,
    "llava_onevision": llava_onevision, "internvl": internvl,
}
