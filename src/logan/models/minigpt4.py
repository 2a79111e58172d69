"""MiniGPT-4 (Vision-CAIR) rebuilt on transformers modules from its official files; no MiniGPT-4 code.

EVA ViT-g -> `Blip2VisionModel`, BLIP-2's Q-Former -> `Blip2QFormerModel` + `query_tokens`, `llama_proj` ->
`nn.Linear`, the LLM -> `LlamaForCausalLM`. The image embeddings replace the sentinel ids (-200) of the
prompt in the LLM's `inputs_embeds`, as MiniGPT-4's `get_context_emb` splices them.

Variants (`target_model.model_type`), with the files each needs:

- `pretrain_llama2` (the seed's and VL-MIA's): Llama-2-7b-chat, no Q-Former. The 256 patch outputs of
  `ln_vision(ViT)` are grouped 4 to 1 (`view(B, 64, 5632)`) into 64 image tokens; `ln_vision` is a fresh
  LayerNorm (weight 1, bias 0, eps 1e-5), because MiniGPT-4 loads no BLIP-2 weights here. Files:
  `pretrained_minigpt4_llama2_7b.pth`, `eva_vit_g.pth`, a Hugging Face Llama-2-7b-chat folder.

      logan tune target_model=minigpt-4 target_model.model_type=pretrain_llama2 \
          target_model.ckpt=/models/pretrained_minigpt4_llama2_7b.pth \
          target_model.llama_model=/models/Llama-2-7b-chat-hf target_model.vit_model=/models/eva_vit_g.pth \
          data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT

- `pretrain_vicuna0`: Vicuna v0 (7B or 13B); `ln_vision`, the Q-Former and its 32 queries come from BLIP-2's
  `blip2_pretrained_flant5xxl.pth`; 32 image tokens. Files: `pretrained_minigpt4_7b.pth` (13B:
  `pretrained_minigpt4.pth`), `eva_vit_g.pth`, `blip2_pretrained_flant5xxl.pth`, a Hugging Face Vicuna v0
  folder (e.g. Vision-CAIR/vicuna-7b).

      logan tune target_model=minigpt-4 target_model.model_type=pretrain_vicuna0 \
          target_model.ckpt=/models/pretrained_minigpt4_7b.pth target_model.llama_model=/models/vicuna-7b \
          target_model.vit_model=/models/eva_vit_g.pth \
          target_model.q_former_model=/models/blip2_pretrained_flant5xxl.pth \
          data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT

The seed's nested `target_model.model.ckpt` / `.model_type` (and `.llama_model`, `.vit_model`,
`.q_former_model`) are aliases; a flat key wins. Every file is loaded strictly: a missing or unexpected
key, a wrong shape or a missing path is one LoganError naming the file and the key, never a silently
random-initialised part. What is left out on purpose, as MiniGPT-4 leaves it out: EVA blocks past the 39th,
and the parts of the BLIP-2 file that MiniGPT-4 drops (its text branch, its T5 projection).

Prompts are MiniGPT-4's conversations (`CONV_VISION_LLama2` / `CONV_VISION_Vicuna0`), tokenised segment by
segment around `<ImageHere>` with BOS on the first only, and every special token in the text (the Llama-2
template's literal `<s>`) split out as MiniGPT-4's slow tokenizer did. Images: a plain 224 x 224 bicubic
resize, CLIP normalisation. Logits are cut to the real vocabulary (`vocab_size`, 32000) before any softmax.
Descriptions are greedy and stop at EOS only (as VL-MIA generates them; Vicuna's '###' is no stop). Everything
runs in the run's dtype (bf16 on a GPU), `ln_vision` in float32 as LAVIS computes it.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Callable
from dataclasses import dataclass
from math import isqrt
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import torch
from torch import nn

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.base import VLMAdapter, hf_progress_bars_off, token_id
from logan.models.contract import ImageBatch, TokenBatch, Traits
from logan.models.hf import until_eos
from logan.models.prefix import KeptPrefix, continuation, keep_prefix
from logan.models.preprocess import ImageTransform
from logan.models.registry import register_model

if TYPE_CHECKING:
    from transformers import Blip2QFormerModel, Blip2VisionModel, LlamaForCausalLM

_Module = TypeVar("_Module", bound=nn.Module)

log = logging.getLogger(__name__)

IMAGE_SENTINEL = -200  # image positions in input_ids (as the original LLaVA's IMAGE_TOKEN_INDEX)
EVA_DEPTH = 39  # MiniGPT-4 builds EVA-CLIP-g's 40 blocks minus the last
EVA_HEAD_DIM, BERT_HEAD_DIM = 88, 64  # EVA ViT-g: 1408 = 16 x 88; BERT-base Q-Former: 768 = 12 x 64
SYSTEM = (
    "Give the following image: <Img>ImageContent</Img>. "
    "You will be able to see the image once I provide it to you. Please answer my questions."
)
# conv_mode -> (text before the image, text after it with {instruction}); MiniGPT-4's conversation.py
TEMPLATES = {
    "minigpt4_llama2": (SYSTEM + "<s>[INST] <Img>", "</Img> {instruction} [/INST] "),
    "minigpt4_vicuna0": (SYSTEM + "###Human: <Img>", "</Img> {instruction}###Assistant: "),
}
VARIANTS = {"pretrain_llama2": "minigpt4_llama2", "pretrain_vicuna0": "minigpt4_vicuna0"}
PATH_KEYS = ("ckpt", "llama_model", "vit_model", "q_former_model")
# the seed's nested `model:` keys: aliases, accepted ones, and MiniGPT-4 eval knobs that change nothing here
NESTED = {
    *PATH_KEYS,
    "model_type",
    "arch",
    "image_size",
    "low_resource",
    "device_8bit",
    "max_txt_len",
    "end_sym",
    "prompt_template",
}
# BLIP-2 Q-Former parts that MiniGPT-4 sets to None (text branch) or never reads (a buffer)
QFORMER_DROPPED = re.compile(
    r"Qformer\.(cls\.|bert\.embeddings\.(word_embeddings|position_embeddings"
    r"|position_ids)|bert\.encoder\.layer\.\d+\.(intermediate|output)\.)"
)
VIT_FROM_HF = [  # Blip2VisionModel name -> EVA (LAVIS) name, applied in order
    (r"^embeddings\.class_embedding$", "cls_token"),
    (r"^embeddings\.position_embedding$", "pos_embed"),
    (r"^embeddings\.patch_embedding\.", "patch_embed.proj."),
    (r"^encoder\.layers\.", "blocks."),
    (r"\.layer_norm([12])\.", r".norm\1."),
    (r"\.self_attn\.projection\.", ".attn.proj."),
    (r"\.self_attn\.", ".attn."),
]
QFORMER_FROM_HF = [  # Blip2QFormerModel name -> LAVIS name
    (r"^layernorm\.", "Qformer.bert.embeddings.LayerNorm."),
    (r"^encoder\.", "Qformer.bert.encoder."),
    (r"attention\.attention\.", "attention.self."),
]


def image_token_count(image_size: int, patch_size: int, num_query_tokens: int | None = None) -> int:
    """Image embeddings MiniGPT-4 splices in: the Q-Former's queries, or the ViT's patches grouped 4 to 1."""
    if num_query_tokens is not None:
        return num_query_tokens
    patches = (image_size // patch_size) ** 2
    if patches % 4:
        raise LoganError(f"{patches} ViT patches cannot be grouped 4 to 1 into MiniGPT-4 image tokens.")
    return patches // 4


@dataclass(frozen=True)
class _Files:
    """The resolved variant and the path of every component."""

    model_type: str
    conv_mode: str
    ckpt: Path
    llama_model: Path
    vit_model: Path
    q_former_model: Path | None
    image_size: int | None

    @property
    def has_qformer(self) -> bool:
        return self.model_type == "pretrain_vicuna0"


def _resolve(cfg: ModelConfig) -> _Files:
    """Flat keys, then the seed's nested `model:` aliases; every path checked before anything loads."""
    nested = dict(cfg.model or {})
    unknown = sorted(set(nested) - NESTED)
    if unknown:
        raise LoganError(
            f"target_model.model.{unknown[0]} is not a MiniGPT-4 setting; "
            f"valid keys: {', '.join(sorted(NESTED))}."
        )
    if nested.get("arch", "minigpt4") != "minigpt4":
        raise LoganError(
            f"target_model.model.arch={nested['arch']}: only MiniGPT-4 (arch minigpt4) is supported."
        )
    model_type = cfg.model_type or nested.get("model_type") or "pretrain_llama2"
    if model_type not in VARIANTS:
        raise LoganError(
            f"target_model.model_type={model_type} is not a MiniGPT-4 variant; use {' or '.join(VARIANTS)}."
        )
    conv_mode = VARIANTS[model_type] if cfg.conv_mode in (None, "auto") else cfg.conv_mode
    if conv_mode not in TEMPLATES:
        raise LoganError(
            f"target_model.conv_mode={conv_mode} is not a MiniGPT-4 template; "
            f"use auto, {' or '.join(TEMPLATES)}."
        )
    given = {key: getattr(cfg, key) or nested.get(key) for key in PATH_KEYS}
    needs_qformer = model_type == "pretrain_vicuna0"
    if given["q_former_model"] and not needs_qformer:
        raise LoganError(
            f"target_model.q_former_model is set, but {model_type} has no Q-Former; drop it, "
            "or use model_type=pretrain_vicuna0."
        )
    hints = {
        "ckpt": "the MiniGPT-4 checkpoint (pretrained_minigpt4*.pth)",
        "llama_model": "the Hugging Face folder of the LLM (Llama-2-7b-chat or Vicuna v0)",
        "vit_model": "the EVA ViT-g weights (eva_vit_g.pth)",
        "q_former_model": "BLIP-2's blip2_pretrained_flant5xxl.pth",
    }
    paths: dict[str, Path] = {}
    for key in PATH_KEYS:
        if key == "q_former_model" and not needs_qformer:
            continue
        if not given[key]:
            raise LoganError(f"target_model.{key} is not set: {model_type} needs {hints[key]}.")
        path = Path(str(given[key])).expanduser()
        folder = key == "llama_model"
        if not (path.is_dir() if folder else path.is_file()):
            raise LoganError(
                f"target_model.{key}={path} is not {'a folder' if folder else 'a file'}: give {hints[key]}."
            )
        paths[key] = path
    config = paths["llama_model"] / "config.json"
    if not config.is_file():
        raise LoganError(
            f"target_model.llama_model={paths['llama_model']} is not a Hugging Face model "
            "folder (no config.json there)."
        )
    found = json.loads(config.read_text()).get("model_type")
    if found != "llama":
        raise LoganError(
            f"{paths['llama_model']} holds a '{found}' model; MiniGPT-4's LLM is a Llama "
            "(model_type 'llama')."
        )
    size = nested.get("image_size")
    return _Files(
        model_type,
        conv_mode,
        paths["ckpt"],
        paths["llama_model"],
        paths["vit_model"],
        paths.get("q_former_model"),
        int(size) if size else None,
    )


def _load_tensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A .pth state dict (or a training checkpoint's 'model' entry), loaded without running pickled code."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL (\S+)", str(error))
        objects = found.group(1) if found else "not weights"
        load = f"c = torch.load('{path}', map_location='cpu', weights_only=False)"
        keep = f"torch.save({{'model': c['model']}}, '{path}.weights.pth')"
        raise LoganError(
            f"{path} holds pickled Python objects besides tensors ({objects}), which LOGAN does not "
            f'unpickle. If you trust the file, keep its weights once: python -c "import torch; {load}; '
            f'{keep}" and pass the new file.'
        ) from None
    except Exception as error:  # noqa: BLE001 - any unreadable file is one user-facing error
        raise LoganError(
            f"{path} is not a readable torch checkpoint ({type(error).__name__}: {error}); "
            f"it should be {what}."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise LoganError(f"{path} is not a state dict of tensors; it should be {what}.")
    return obj


def _need(tensors: dict[str, torch.Tensor], key: str, path: Path, what: str) -> torch.Tensor:
    if key not in tensors:
        raise LoganError(f"{path} has no '{key}': it is not {what}.")
    return tensors[key]


def _renamer(rules: list[tuple[str, str]]) -> Callable[[str], list[str]]:
    """HF parameter name -> the file key(s) it is loaded from."""

    def to_file(name: str) -> list[str]:
        for pattern, replacement in rules:
            name = re.sub(pattern, replacement, name)
        if name.endswith(".attn.qkv.bias"):  # EVA keeps q and v biases; the k bias is zero
            return [name.replace("qkv.bias", "q_bias"), name.replace("qkv.bias", "v_bias")]
        return [name]

    return to_file


def _fill(
    module: nn.Module,
    tensors: dict[str, torch.Tensor],
    to_file: Callable[[str], list[str]],
    path: Path,
    what: str,
) -> set[str]:
    """Load every parameter of `module` from the file's tensors, strictly; returns the file keys used."""
    state, used = {}, set()
    for name, like in module.state_dict().items():
        sources = to_file(name)
        shapes = [tuple(like.shape)] if len(sources) == 1 else [(like.shape[0] // 3,)] * 2
        parts = []
        for source, shape in zip(sources, shapes):
            tensor = _need(tensors, source, path, what)
            if tuple(tensor.shape) != shape:
                raise LoganError(
                    f"{path}: '{source}' has shape {list(tensor.shape)}, but the model this "
                    f"file describes needs {list(shape)}; it is not {what}."
                )
            parts.append(tensor)
        if len(parts) == 2:  # EVA's q and v biases around a zero k bias
            parts = [torch.cat([parts[0], torch.zeros_like(parts[1]), parts[1]])]
        state[name] = parts[0]
        used.update(sources)
    module.load_state_dict(state, strict=True, assign=True)
    return used


def _reject_unused(keys: set[str], used: set[str], path: Path, what: str) -> None:
    extra = sorted(keys - used)
    if extra:
        more = f" (and {len(extra) - 1} more)" if len(extra) > 1 else ""
        raise LoganError(f"{path} has the unexpected key '{extra[0]}'{more}: it is not {what}.")


def _build_vit(path: Path, image_size: int | None) -> Blip2VisionModel:
    """EVA ViT-g (eva_vit_g.pth, bare or `visual_encoder.` names) as a Blip2VisionModel without final norm."""
    from transformers import Blip2VisionConfig, Blip2VisionModel

    what = "EVA ViT-g weights as MiniGPT-4 loads them (eva_vit_g.pth)"
    raw = _load_tensors(path, what)
    tensors = {k.removeprefix("visual_encoder."): v for k, v in raw.items()}
    block_of = {k: int(m.group(1)) for k in tensors if (m := re.match(r"blocks\.(\d+)\.", k))}
    depth = min(len(set(block_of.values())), EVA_DEPTH)
    dropped = {k for k, block in block_of.items() if block >= depth}
    if dropped:
        log.info("%s: leaving out EVA blocks %d and up, as MiniGPT-4 (depth %d) does", path, depth, EVA_DEPTH)
    weight = _need(tensors, "patch_embed.proj.weight", path, what)
    width, patch = weight.shape[0], weight.shape[-1]
    positions = _need(tensors, "pos_embed", path, what).shape[1] - 1
    grid = isqrt(positions)
    if grid * grid != positions or width % EVA_HEAD_DIM:
        raise LoganError(
            f"{path}: 'pos_embed' / 'patch_embed.proj.weight' do not describe an EVA ViT "
            f"({positions} patch positions, width {width}); it is not {what}."
        )
    if image_size is not None and image_size != grid * patch:
        raise LoganError(
            f"target_model.model.image_size={image_size}, but {path} ('pos_embed') is for "
            f"{grid * patch} px images ({grid}x{grid} patches of {patch}); MiniGPT-4 uses 224."
        )
    config = Blip2VisionConfig(
        hidden_size=width,
        intermediate_size=_need(tensors, "blocks.0.mlp.fc1.weight", path, what).shape[0],
        num_hidden_layers=depth,
        num_attention_heads=width // EVA_HEAD_DIM,
        image_size=grid * patch,
        patch_size=patch,
        layer_norm_eps=1e-6,
        qkv_bias=True,
    )
    with torch.device("meta"):
        vit = Blip2VisionModel(config)
    vit.add_module("post_layernorm", nn.Identity())  # MiniGPT-4's ln_vision is a module of its own
    used = _fill(vit, tensors, _renamer(VIT_FROM_HF), path, what)
    _reject_unused(set(tensors) - dropped, used, path, what)
    return vit


def _build_qformer(path: Path, vit_width: int) -> tuple[Blip2QFormerModel, torch.Tensor, nn.LayerNorm]:
    """BLIP-2's Q-Former, queries and ln_vision from its LAVIS checkpoint (blip2_pretrained_flant5xxl.pth)."""
    from transformers import Blip2QFormerConfig, Blip2QFormerModel

    what = "a BLIP-2 checkpoint with the Q-Former MiniGPT-4 loads (blip2_pretrained_flant5xxl.pth)"
    tensors = _load_tensors(path, what)
    if any(k.startswith("visual_encoder.") for k in tensors):
        raise LoganError(
            f"{path} carries its own ViT weights (visual_encoder.*), which MiniGPT-4 would load "
            f"over eva_vit_g.pth; use {what}."
        )
    queries = _need(tensors, "query_tokens", path, what)
    if queries.ndim != 3 or queries.shape[0] != 1 or queries.shape[-1] % BERT_HEAD_DIM:
        raise LoganError(
            f"{path}: 'query_tokens' has shape {list(queries.shape)}, not [1, queries, width]; "
            f"it is not {what}."
        )
    layer = re.compile(r"Qformer\.bert\.encoder\.layer\.(\d+)\.(crossattention\.)?")
    layers = {int(m.group(1)) for k in tensors if (m := layer.match(k))}
    cross = sorted({int(m.group(1)) for k in tensors if (m := layer.match(k)) and m.group(2)})
    width = queries.shape[-1]
    config = Blip2QFormerConfig(
        hidden_size=width,
        num_hidden_layers=len(layers),
        num_attention_heads=width // BERT_HEAD_DIM,
        intermediate_size=_need(
            tensors, "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight", path, what
        ).shape[0],
        encoder_hidden_size=vit_width,
        cross_attention_frequency=cross[1] - cross[0] if len(cross) > 1 else 2,
    )
    with torch.device("meta"):
        qformer = Blip2QFormerModel(config)
    ln_vision = nn.LayerNorm(vit_width, eps=1e-5)
    used = _fill(qformer, tensors, _renamer(QFORMER_FROM_HF), path, what)
    used |= _fill(ln_vision, tensors, lambda name: [f"ln_vision.{name}"], path, what)
    ours = {k for k in tensors if k.startswith(("Qformer.", "ln_vision.")) and not QFORMER_DROPPED.match(k)}
    _reject_unused(ours, used | {"query_tokens"}, path, what)
    return qformer, queries, ln_vision


def _build_projection(files: _Files, features: int) -> nn.Linear:
    """llama_proj from pretrained_minigpt4*.pth: its 'model' holds exactly llama_proj.weight and .bias."""
    what = "a MiniGPT-4 checkpoint ({'model': {'llama_proj.weight', 'llama_proj.bias'}})"
    tensors = _load_tensors(files.ckpt, what)
    hidden = json.loads((files.llama_model / "config.json").read_text()).get("hidden_size")
    with torch.device("meta"):
        proj = nn.Linear(features, int(hidden))
    weight = _need(tensors, "llama_proj.weight", files.ckpt, what)
    if weight.ndim == 2 and weight.shape[1] != features:
        other = "pretrain_vicuna0" if files.model_type == "pretrain_llama2" else "pretrain_llama2"
        raise LoganError(
            f"{files.ckpt}: 'llama_proj.weight' has shape {list(weight.shape)}, but "
            f"{files.model_type} needs {[proj.out_features, features]}; is it a {other} "
            "checkpoint (target_model.model_type)?"
        )
    used = _fill(proj, tensors, lambda name: [f"llama_proj.{name}"], files.ckpt, what)
    _reject_unused(set(tensors), used, files.ckpt, what)
    return proj


def _load_llm(folder: Path, dtype: torch.dtype) -> LlamaForCausalLM:
    from transformers import LlamaForCausalLM

    with hf_progress_bars_off():
        # with output_loading_info, from_pretrained returns (model, info): its annotation says the model only
        loaded = LlamaForCausalLM.from_pretrained(folder, dtype=dtype, output_loading_info=True)
        model, info = cast("tuple[LlamaForCausalLM, dict[str, Any]]", loaded)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        keys = sorted(map(str, info.get(kind) or []))
        if keys:
            raise LoganError(
                f"{folder}: {kind.replace('_', ' ')[:-1]} '{keys[0]}'"
                f"{f' (and {len(keys) - 1} more)' if len(keys) > 1 else ''}; "
                "it is not a complete Llama checkpoint."
            )
    return model


def _to_eval(module: _Module, *to: Any) -> _Module:
    """`module.to(*to).eval()`, which moves it in place, typed as nn.Module's (transformers' annotation of
    PreTrainedModel.to, a functools.wraps of nn.Module.to, leaves out `self`)."""
    module.to(*to).eval()
    return module


@register_model("minigpt-4")
class MiniGPT4(VLMAdapter):
    """MiniGPT-4 (pretrain_llama2 or pretrain_vicuna0) from its official checkpoint files."""

    _kept: KeptPrefix | None = None  # inference.reuse_prefix (models/prefix.py)
    traits = Traits(keeps_prefix=True)

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        _resolve(cfg)

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoTokenizer

        files = _resolve(cfg)
        vit = _build_vit(files.vit_model, files.image_size)
        width = vit.config.hidden_size
        self.qformer: Blip2QFormerModel | None = None
        self.query_tokens: torch.Tensor | None = None
        if files.q_former_model is not None:  # set exactly when the variant has one (files.has_qformer)
            qformer, queries, ln_vision = _build_qformer(files.q_former_model, width)
            self.qformer = _to_eval(qformer, device, dtype)
            self.query_tokens = queries.to(device, dtype)
            features = qformer.config.hidden_size
        else:
            ln_vision = nn.LayerNorm(width, eps=1e-5)  # fresh, as MiniGPT-4 has it without a Q-Former
            features = 4 * width
        self.llama_proj = _build_projection(files, features).to(device, dtype).eval()
        self.vit = _to_eval(vit, device, dtype)
        self.ln_vision = ln_vision.to(device, torch.float32).eval()  # float32, as LAVIS's LayerNorm runs
        self.llm = _to_eval(_load_llm(files.llama_model, dtype), device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(files.llama_model)
        except Exception as error:  # noqa: BLE001 - a missing or broken tokenizer is one user-facing error
            raise LoganError(
                f"{files.llama_model} has no usable tokenizer ({type(error).__name__}: "
                f"{error}); it needs tokenizer.model or tokenizer.json."
            ) from None
        names = sorted(self.tokenizer.all_special_tokens, key=len, reverse=True)
        self._specials = {t: token_id(self.tokenizer, t) for t in names}
        self._split = re.compile("(" + "|".join(map(re.escape, names)) + ")") if names else None
        self.files, self.device, self.dtype, self.conv_mode = files, device, dtype, files.conv_mode
        size, patch = vit.config.image_size, vit.config.patch_size
        assert isinstance(size, int) and isinstance(patch, int)  # _build_vit gives its config single numbers
        self.transform = ImageTransform(
            shortest_edge=None, resize_hw=(size, size), crop_hw=None, pad_to_square=bool(cfg.pad_to_square)
        )
        self.image_token_id = IMAGE_SENTINEL
        self.n_image_tokens = image_token_count(
            size, patch, self.query_tokens.shape[1] if self.query_tokens is not None else None
        )
        rows = self.llm.lm_head.out_features
        self.set_token_ids(self.tokenizer, rows, cfg.vocab_size)
        log.info(
            "loaded MiniGPT-4 %s (%s, %s): %d image tokens, vocabulary %d of %d rows",
            files.model_type,
            device,
            str(dtype).replace("torch.", ""),
            self.n_image_tokens,
            self.real_vocab,
            rows,
        )

    def template(self) -> tuple[str, str]:
        return TEMPLATES[self.conv_mode]

    def tokenize(self, text: str) -> list[int]:
        """Special tokens in the text become their ids and every piece between them is tokenised on its own,
        as the slow Llama tokenizer MiniGPT-4 ran with (transformers 4.30) did."""
        ids: list[int] = []
        for piece in self._split.split(text) if self._split else [text]:
            if piece in self._specials:
                ids.append(self._specials[piece])
            elif piece:
                ids += self.tokenizer(piece, add_special_tokens=False).input_ids
        return ids

    def decode(self, ids: list[int]) -> str:
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        assert isinstance(text, str)  # one list of ids decodes to one string
        return text.strip()

    def fingerprint(self) -> dict[str, Any]:
        f = self.files
        paths = {k: str(getattr(f, k).resolve()) for k in PATH_KEYS if getattr(f, k) is not None}
        return {**super().fingerprint(), "model_type": f.model_type, **paths}

    def image_embeddings(self, images: ImageBatch) -> torch.Tensor:
        """[B, n_image_tokens, LLM hidden]: ViT -> ln_vision -> (Q-Former | 4-to-1 grouping) -> llama_proj."""
        features = self.vit(**images.to(self.device, self.dtype)).last_hidden_state
        features = self.ln_vision(features.float()).to(self.dtype)
        if self.qformer is not None:
            assert self.query_tokens is not None  # loaded with the Q-Former
            queries = self.query_tokens.expand(features.shape[0], -1, -1)
            mask = torch.ones(features.shape[:-1], dtype=torch.long, device=features.device)
            features = self.qformer(
                query_embeds=queries, encoder_hidden_states=features, encoder_attention_mask=mask
            ).last_hidden_state.to(self.dtype)
        else:
            patches = features[:, 1:]
            features = patches.reshape(patches.shape[0], patches.shape[1] // 4, patches.shape[2] * 4)
        return self.llama_proj(features)

    def _inputs_embeds(self, input_ids: torch.Tensor, images: ImageBatch) -> torch.Tensor:
        ids = input_ids.to(self.device)
        image = ids == IMAGE_SENTINEL
        counts = image.sum(1)
        if not bool((counts == self.n_image_tokens).all()):
            raise LoganError(
                f"every sequence needs {self.n_image_tokens} image positions; got {counts.tolist()}."
            )
        embeds = self.llm.get_input_embeddings()(ids.masked_fill(image, 0))
        features = self.image_embeddings(images).to(embeds.dtype)
        return embeds.masked_scatter(image.unsqueeze(-1), features)

    def prepare_inference(
        self, compile: bool = False, attn_implementation: str | None = None, reuse_prefix: bool = False
    ) -> None:
        if attn_implementation:
            self.llm.set_attn_implementation(attn_implementation)
        self._kept = keep_prefix(
            reuse_prefix, attn_implementation, self.llm.model, self.llm.get_input_embeddings()
        )

    @torch.inference_mode()
    def forward_logits(self, tokens: TokenBatch, images: ImageBatch, positions: torch.Tensor) -> torch.Tensor:
        skip = self._kept.skip(tokens.prefix, tokens.attention_mask) if self._kept else 0
        embeds = self._inputs_embeds(tokens.input_ids, images)[:, skip:]
        mask = tokens.attention_mask[:, skip:].to(self.device)
        hidden = self.llm.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            use_cache=False,
            **continuation(skip, tokens.input_ids.shape[1], self.device),
        ).last_hidden_state
        index = (positions.to(self.device) - skip).clamp_min(0).unsqueeze(-1).expand(-1, -1, hidden.shape[-1])
        return self.llm.lm_head(torch.gather(hidden, 1, index))[..., : self.real_vocab].float()

    @torch.inference_mode()
    def generate(self, tokens: TokenBatch, images: ImageBatch, max_new_tokens: int) -> list[list[int]]:
        from transformers import GenerationConfig

        rows = self.llm.lm_head.out_features
        banned = {*range(self.real_vocab, rows), self.pad_token_id, self.bos_token_id}
        banned -= {self.eos_token_id, None}
        settings = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            suppress_tokens=sorted(banned),
            pad_token_id=self.pad_token_id,
            eos_token_id=self.eos_token_id,
            bos_token_id=self.bos_token_id,
        )
        out = self.llm.generate(
            inputs_embeds=self._inputs_embeds(tokens.input_ids, images),
            attention_mask=tokens.attention_mask.to(self.device),
            generation_config=settings,
        )
        return [
            until_eos(ids, [self.eos_token_id] if self.eos_token_id is not None else [])
            for ids in out.tolist()
        ]
