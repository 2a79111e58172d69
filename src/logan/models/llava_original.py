"""LLaVA-1.5 from ORIGINAL liuhaotian checkpoints, assembled in memory as transformers' LLaVA.

Full model (a download of liuhaotian/llava-v1.5-7b):

    logan tune target_model=llava-v1.5-7b target_model.model_path=/models/llava-v1.5-7b \
        target_model.vision_tower=/models/clip-vit-large-patch14-336 \
        data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT

    model_path    config.json (Llama fields + mm_* keys); the weights: pytorch_model-0000X-of-0000N.bin
                  + pytorch_model.bin.index.json, or model.safetensors (or its shards + index);
                  tokenizer.model + tokenizer_config.json (SentencePiece: needs sentencepiece, protobuf).
    vision_tower  a local CLIP folder (a download of openai/clip-vit-large-patch14-336: config.json,
                  its weights, preprocessor_config.json). It may be left out when config.json's
                  mm_vision_tower is an existing local folder. Its weights are not read when the
                  checkpoint embeds the tower (model.vision_tower.vision_tower.vision_model.*); its
                  config.json still gives the tower's shape.

Projector-only pretrain checkpoint (liuhaotian/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5):

    logan tune target_model=llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5 \
        target_model.model_path=/models/llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5 \
        target_model.model_base=/models/vicuna-7b-v1.5 \
        target_model.vision_tower=/models/clip-vit-large-patch14-336 ...

    model_path    mm_projector.bin (model.mm_projector.{0,2}.{weight,bias}) + config.json (mm_* keys).
    model_base    the base LLM as a Hugging Face LlamaForCausalLM folder (config.json, weights,
                  tokenizer.model).
    vision_tower  as above. The prompt is conv_mode=plain (BOS + image + text), the pretraining format.

How: the model is built with its parameters on the meta device and every tensor is loaded once,
strictly, through the key map of transformers' LLaVA converter (model.* -> model.language_model.*,
model.mm_projector.{0,2} -> model.multi_modal_projector.linear_{1,2}, CLIP vision_model.* ->
model.vision_tower.*). A missing, unexpected or mis-shaped key stops with one error naming its file.
`<image>` (id 32000) and `<pad>` (32001) are added as the converter does (32064 rows); the new rows
take the mean of the old ones and never reach a score: logits are cut to the 32000 real tokens.
Images are padded to a square of the mean colour (image_aspect_ratio=pad) before CLIP preprocessing.
Weights are read with torch.load(weights_only=True) or safetensors only.
"""

from __future__ import annotations

import json
import logging
import pickle
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.llava_hf import LlavaHF
from logan.models.preprocess import ImageTransform
from logan.models.registry import register_model

log = logging.getLogger(__name__)

WEIGHT_FILES = (
    "model.safetensors.index.json",
    "model.safetensors",
    "pytorch_model.bin.index.json",
    "pytorch_model.bin",
)
PROJECTOR_FILE = "mm_projector.bin"
# mm_projector_type -> (original nn.Sequential names -> HF names under model.multi_modal_projector.)
PROJECTORS = {
    "mlp2x_gelu": {
        "0.weight": "linear_1.weight",
        "0.bias": "linear_1.bias",
        "2.weight": "linear_2.weight",
        "2.bias": "linear_2.bias",
    },
    "linear": {"weight": "weight", "bias": "bias"},
}
# mm_vision_select_feature -> HF strategy
SELECT_FEATURE: dict[str, Literal["default", "full"]] = {"patch": "default", "cls_patch": "full"}
BUFFERS = ("rotary_emb.inv_freq", "position_ids")  # buffers older checkpoints saved; rebuilt from the config
CLIP_TEXT = ("text_model.", "text_projection.", "visual_projection.", "logit_scale")  # CLIPModel's text side
VOCAB_KEYS = ("model.language_model.embed_tokens.weight", "lm_head.weight")
TOWER = "model.vision_tower."  # the tower's keys in the HF model
EMBEDDED_TOWER = "model.vision_tower.vision_tower.vision_model."  # ... in an original checkpoint
ADDED_TOKENS = 2  # <image>, <pad>
PAD_ROWS_TO = 64


def image_token_count(image_size: int, patch_size: int, strategy: str = "default") -> int:
    """Image positions of a CLIP tower: (image/patch)^2 patches, plus CLS for strategy 'full'."""
    return (image_size // patch_size) ** 2 + (1 if strategy == "full" else 0)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise LoganError(f"cannot read {path}: {error}") from None
    if not isinstance(data, dict):
        raise LoganError(f"{path} does not hold a JSON object.")
    return data


def _folder(path: str | None, key: str, what: str) -> Path:
    """A local folder with a config.json, or one error naming the config key to set."""
    if not path:
        raise LoganError(f"target_model.{key} is not set: give the local folder of {what}.")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise LoganError(
            f"target_model.{key}={path} is not a local folder: download {what} and give its folder."
        )
    if not (folder / "config.json").is_file():
        raise LoganError(f"target_model.{key}={folder} has no config.json: it is not {what}.")
    return folder


@dataclass(frozen=True)
class Weights:
    """The weight files of one checkpoint part: one file, or shards listed by an index JSON."""

    path: Path  # the single file or the index JSON
    listed: dict[str, Path] = field(default_factory=dict)  # key -> shard, from the index

    @classmethod
    def find(cls, folder: Path, what: str) -> Weights:
        for name in WEIGHT_FILES:
            if (folder / name).is_file():
                return cls.at(folder / name)
        raise LoganError(f"{what} {folder} has no weights: expected one of {', '.join(WEIGHT_FILES)} there.")

    @classmethod
    def at(cls, path: Path) -> Weights:
        if not path.name.endswith(".index.json"):
            return cls(path)
        weight_map = _read_json(path).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise LoganError(f"{path} has no weight_map: it is not a weight index.")
        listed = {key: path.parent / name for key, name in weight_map.items()}
        for key, shard in listed.items():
            if not shard.is_file():
                raise LoganError(f"{path} puts {key} in {shard.name}, but {shard} does not exist.")
        return cls(path, listed)

    def file_of(self, key: str) -> Path:
        return self.listed.get(key, self.path)

    def tensors(self) -> Iterator[tuple[str, torch.Tensor, Path]]:
        """(key, tensor, file) over every shard, one shard in memory at a time."""
        for file in dict.fromkeys(self.listed.values()) if self.listed else [self.path]:
            for key, tensor in _read_tensors(file):
                yield key, tensor, file


def _read_tensors(path: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of one weight file, safely: safetensors, or torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 - a safetensors handle, not a dict
                    yield key, handle.get_tensor(key)
        except (SafetensorError, OSError) as error:
            raise LoganError(f"cannot read weights from {path}: {error}") from None
        return
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # files from torch < 1.6 (not zip) cannot be memory-mapped
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError) as error:
        raise LoganError(
            f"cannot read weights from {path} (plain tensors only, weights_only=True): {error}"
        ) from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LoganError(f"{path} does not hold a flat dictionary of tensors: it is not a weight file.")
    while state:
        key = next(iter(state))
        yield key, state.pop(key)


@dataclass(frozen=True)
class Source:
    """One checkpoint part and how its key names map onto LlavaForConditionalGeneration's."""

    label: str
    weights: Weights
    prefixes: tuple[tuple[str, str], ...]  # (checkpoint prefix, model prefix); first match wins
    renames: dict[str, str] = field(default_factory=dict)  # model-side renames after the prefix swap
    skip: tuple[str, ...] = ()  # checkpoint prefixes deliberately not loaded

    def target(self, key: str) -> str | None:
        """Model key for a checkpoint key; None when the key is not loaded (a buffer or a skipped part)."""
        if key.endswith(BUFFERS) or key.startswith(self.skip):
            return None
        for theirs, ours in self.prefixes:
            if key.startswith(theirs):
                name = ours + key[len(theirs) :]
                return self.renames.get(name, name)
        return key  # no prefix matched: reported as unexpected under its own name

    def source(self, target: str) -> str | None:
        """Checkpoint key expected for a model key, or None when this part does not hold it."""
        back = {ours: theirs for theirs, ours in self.renames.items()}
        name = back.get(target, target)
        for theirs, ours in self.prefixes:
            if name.startswith(ours):
                return theirs + name[len(ours) :]
        return None


@dataclass(frozen=True)
class Parts:
    """Everything a checkpoint is assembled from, validated before any tensor is read."""

    settings: dict[str, Any]  # the mm_* keys (the LLaVA config.json)
    settings_file: Path
    text: dict[str, Any]  # Llama config fields
    vision: dict[str, Any]  # CLIP vision config fields
    vision_folder: Path
    sources: tuple[Source, ...]  # LLaVA / LLM weights first; the CLIP folder last
    tokenizer: Path
    paths: dict[str, str]

    @property
    def projector_type(self) -> str:
        return self.settings.get("mm_projector_type", "linear")


def _settings(config: dict[str, Any], file: Path) -> dict[str, Any]:
    """Check the mm_* keys this loader reproduces."""
    if "text_config" in config or "mm_vision_tower" not in config:
        raise LoganError(
            f"{file} is not an original-format LLaVA config (no mm_vision_tower key); "
            "for a Hugging Face-format folder use target_model=llava-hf."
        )
    projector = config.get("mm_projector_type", "linear")
    if projector not in PROJECTORS:
        raise LoganError(
            f"{file}: mm_projector_type={projector} is not supported; "
            f"this loader knows {', '.join(PROJECTORS)}."
        )
    feature = config.get("mm_vision_select_feature", "patch")
    if feature not in SELECT_FEATURE:
        raise LoganError(
            f"{file}: mm_vision_select_feature={feature} is not supported; use patch or cls_patch."
        )
    if config.get("mm_use_im_start_end") or config.get("image_aspect_ratio") == "anyres":
        raise LoganError(
            f"{file} asks for image start/end tokens or anyres tiling, which LLaVA-1.5 "
            "checkpoints do not use and this loader does not reproduce."
        )
    return config


def _text_config(config: dict[str, Any], file: Path) -> dict[str, Any]:
    from transformers import LlamaConfig

    known = set(LlamaConfig().to_dict()) | {"rope_theta", "rope_scaling"}
    known -= {"model_type", "architectures", "_name_or_path", "transformers_version", "dtype"}
    text = {k: v for k, v in config.items() if k in known}
    if not all(k in text for k in ("hidden_size", "num_hidden_layers", "vocab_size")):
        raise LoganError(f"{file} lacks the Llama fields (hidden_size, num_hidden_layers, vocab_size).")
    return text


def _vision(cfg: ModelConfig, settings: dict[str, Any], file: Path) -> tuple[Path, dict[str, Any]]:
    """The CLIP folder (target_model.vision_tower, else a local mm_vision_tower) and its vision config."""
    path = cfg.vision_tower
    tower = str(settings.get("mm_vision_tower") or "")
    if not path:
        if not tower or not Path(tower).expanduser().is_dir():
            raise LoganError(
                f"{file} names the vision tower '{tower}', which is not a local folder: download it "
                "(openai/clip-vit-large-patch14-336 for LLaVA-1.5) and set "
                "target_model.vision_tower=CLIP_DIR."
            )
        path = tower
    folder = _folder(path, "vision_tower", "a CLIP vision tower (e.g. openai/clip-vit-large-patch14-336)")
    config = _read_json(folder / "config.json")
    if config.get("model_type") == "clip":
        config = config.get("vision_config") or {}
    elif config.get("model_type") != "clip_vision_model":
        raise LoganError(
            f"{folder / 'config.json'} holds a '{config.get('model_type')}' model, "
            "not a CLIP vision tower (model_type clip or clip_vision_model)."
        )
    vision = {
        k: v for k, v in config.items() if k not in ("model_type", "architectures", "transformers_version")
    }
    hidden = settings.get("mm_hidden_size")
    if hidden is not None and vision.get("hidden_size", 768) != hidden:
        raise LoganError(
            f"{file} has mm_hidden_size={hidden}, but the vision tower {folder} has hidden_size "
            f"{vision.get('hidden_size', 768)}: give the tower the checkpoint was trained with."
        )
    return folder, vision


def _clip_source(folder: Path) -> Source:
    full = _read_json(folder / "config.json").get("model_type") == "clip"
    return Source(
        f"vision tower {folder}",
        Weights.find(folder, "the vision tower"),
        (("vision_model.", TOWER), ("", TOWER)),
        skip=CLIP_TEXT if full else (),
    )


def _projector_renames(settings: dict[str, Any]) -> dict[str, str]:
    prefix = "model.multi_modal_projector."
    table = PROJECTORS[settings.get("mm_projector_type", "linear")]
    return {prefix + theirs: prefix + ours for theirs, ours in table.items()}


def _tokenizer_folder(folder: Path) -> Path:
    if not (folder / "tokenizer.model").is_file() and not (folder / "tokenizer.json").is_file():
        raise LoganError(f"{folder} has no tokenizer.model: the checkpoint's Llama tokenizer is missing.")
    return folder


def _full_parts(cfg: ModelConfig) -> Parts:
    if cfg.model_base:
        raise LoganError(
            f"target_model={cfg.name} loads a full checkpoint and takes no model_base "
            f"(got {cfg.model_base}); for the projector-only checkpoint use "
            "target_model=llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5."
        )
    folder = _folder(
        cfg.model_path, "model_path", "an original-format LLaVA checkpoint (liuhaotian/llava-v1.5-7b)"
    )
    file = folder / "config.json"
    config = _read_json(file)
    settings = _settings(config, file)
    vision_folder, vision = _vision(cfg, settings, file)
    llava = Source(
        f"checkpoint {folder}",
        Weights.find(folder, "the checkpoint"),
        (
            (EMBEDDED_TOWER, TOWER),
            ("model.mm_projector.", "model.multi_modal_projector."),
            ("lm_head.", "lm_head."),
            ("model.", "model.language_model."),
        ),
        renames=_projector_renames(settings),
    )
    return Parts(
        settings,
        file,
        _text_config(config, file),
        vision,
        vision_folder,
        (llava, _clip_source(vision_folder)),
        _tokenizer_folder(folder),
        {"model_path": str(folder.resolve()), "vision_tower": str(vision_folder.resolve())},
    )


def _pretrain_parts(cfg: ModelConfig) -> Parts:
    if not cfg.model_path:
        raise LoganError("target_model.model_path is not set: give the folder that holds mm_projector.bin.")
    folder = Path(cfg.model_path).expanduser()
    projector = folder / PROJECTOR_FILE
    if not projector.is_file():
        raise LoganError(
            f"target_model.model_path={cfg.model_path} has no {PROJECTOR_FILE}: give the "
            "folder of the projector-only checkpoint (mm_projector.bin + config.json)."
        )
    file = folder / "config.json"
    if not file.is_file():
        raise LoganError(f"{folder} has no config.json: the projector's mm_* settings are unknown.")
    settings = _settings(_read_json(file), file)
    base = _folder(cfg.model_base, "model_base", "the base LLM in Hugging Face format (lmsys/vicuna-7b-v1.5)")
    base_file = base / "config.json"
    base_config = _read_json(base_file)
    if base_config.get("model_type") != "llama":
        raise LoganError(f"{base_file} holds a '{base_config.get('model_type')}' model, not a Llama LLM.")
    vision_folder, vision = _vision(cfg, settings, file)
    llm = Source(
        f"base LLM {base}",
        Weights.find(base, "the base LLM"),
        (("lm_head.", "lm_head."), ("model.", "model.language_model.")),
    )
    mm = Source(
        f"projector {projector}",
        Weights.at(projector),
        (("model.mm_projector.", "model.multi_modal_projector."),),
        renames=_projector_renames(settings),
    )
    return Parts(
        settings,
        file,
        _text_config(base_config, base_file),
        vision,
        vision_folder,
        (llm, mm, _clip_source(vision_folder)),
        _tokenizer_folder(base),
        {
            "model_path": str(folder.resolve()),
            "model_base": str(base.resolve()),
            "vision_tower": str(vision_folder.resolve()),
        },
    )


@contextmanager
def _parameters_on_meta() -> Iterator[None]:
    """Build modules with parameters on the meta device (no memory, no init cost) but real buffers
    (rotary frequencies, CLIP position ids), like accelerate's init_empty_weights(include_buffers=False)."""
    register = nn.Module.register_parameter

    def on_meta(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
        register(self, name, param)
        if param is not None:
            self._parameters[name] = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]  # patched for the block only
    try:
        with torch.random.fork_rng(
            devices=[]
        ):  # the discarded initial values leave the caller's random state
            yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]  # restored


def _build(parts: Parts) -> tuple[nn.Module, int]:
    """An empty (meta) LlavaForConditionalGeneration for these parts, and the real vocabulary size."""
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    text = LlamaConfig.from_dict(parts.text)
    vision = CLIPVisionConfig.from_dict(parts.vision)
    n_real = int(text.vocab_size)
    rows = -(-(n_real + ADDED_TOKENS) // PAD_ROWS_TO) * PAD_ROWS_TO
    strategy = SELECT_FEATURE[parts.settings.get("mm_vision_select_feature", "patch")]
    image_size, patch_size = vision.image_size, vision.patch_size
    if not isinstance(image_size, int) or not isinstance(patch_size, int):
        raise LoganError(
            f"{parts.vision_folder}: image_size={image_size} and patch_size={patch_size} must be "
            "single numbers (LLaVA-1.5's CLIP tower reads square images)."
        )
    config = LlavaConfig(
        text_config={**text.to_dict(), "vocab_size": rows},
        vision_config=vision.to_dict(),
        image_token_index=n_real,
        projector_hidden_act="gelu",
        vision_feature_layer=int(parts.settings.get("mm_vision_select_layer", -2)),
        vision_feature_select_strategy=strategy,
        image_seq_length=image_token_count(image_size, patch_size, strategy),
    )
    config.pad_token_id = n_real + 1  # not one of LlavaConfig's declared fields: set as an extra key
    with _parameters_on_meta():
        model = LlavaForConditionalGeneration(config)
        if parts.projector_type == "linear":
            model.model.multi_modal_projector = nn.Linear(vision.hidden_size, text.hidden_size)
    return model, n_real


def _load(model: nn.Module, parts: Parts, n_real: int, device: torch.device, dtype: torch.dtype) -> None:
    """Read every part, map its keys, and assign the tensors (each moved once, straight to the device):
    strict, one error naming file and key."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    rows = expected[VOCAB_KEYS[0]][0]
    checkpoint_shape = {**expected, **{k: (n_real, *expected[k][1:]) for k in VOCAB_KEYS}}
    state: dict[str, torch.Tensor] = {}
    origin: dict[str, Path] = {}
    read: list[Source] = []
    for source in parts.sources:
        if source is parts.sources[-1] and any(k.startswith(TOWER) for k in state):
            log.info(
                "the checkpoint embeds its vision tower: the weights in %s are not read", parts.vision_folder
            )
            continue
        read.append(source)
        for key, tensor, file in source.weights.tensors():
            target = source.target(key)
            if target is None:
                continue
            if target not in expected:
                raise LoganError(
                    f"{file}: unexpected key '{key}' ({source.label}); it has no place in a "
                    f"LLaVA-1.5 model with the settings of {parts.settings_file}."
                )
            if target in state:
                raise LoganError(f"{file}: key '{key}' was already read from {origin[target]}.")
            if tuple(tensor.shape) != checkpoint_shape[target]:
                raise LoganError(
                    f"{file}: key '{key}' has shape {list(tensor.shape)}, expected "
                    f"{list(checkpoint_shape[target])} from the configs ({source.label})."
                )
            state[target] = tensor.to(device, dtype)
            origin[target] = file
    missing = [k for k in expected if k not in state]
    if missing:
        raise _missing(missing[0], len(missing), read)
    for key in VOCAB_KEYS:  # rows for <image>, <pad> and padding: the mean row (the converter samples by it)
        real = state[key]
        extra = real.float().mean(0, keepdim=True).to(dtype).expand(rows - n_real, -1)
        state[key] = torch.cat([real, extra])
    model.load_state_dict(state, strict=True, assign=True)


def _missing(target: str, count: int, read: list[Source]) -> LoganError:
    """The error for a model key no part supplied, named after the file that should hold it."""
    more = f" (and {count - 1} more)" if count > 1 else ""
    for source in reversed(read):  # the CLIP folder, when read, holds the tower rather than the checkpoint
        key = source.source(target)
        if key is not None:
            return LoganError(
                f"{source.weights.file_of(key)}: key '{key}' is missing{more}; "
                f"the {source.label} is incomplete or of another model."
            )
    return LoganError(f"no checkpoint part holds '{target}'{more}.")


def _tokenizer(folder: Path, n_real: int) -> Any:
    """The folder's Llama (SentencePiece) tokenizer with <image> = n_real and <pad> = n_real + 1 added."""
    from transformers import AddedToken, LlamaTokenizer

    try:
        tokenizer = LlamaTokenizer.from_pretrained(folder)
    except (ImportError, OSError, ValueError) as error:
        raise LoganError(
            f"cannot load the tokenizer in {folder} (it needs the sentencepiece and protobuf "
            f"packages): {error}"
        ) from None
    if len(tokenizer) != n_real:
        raise LoganError(
            f"the tokenizer in {folder} has {len(tokenizer)} tokens, but the checkpoint's "
            f"embedding has {n_real} rows: they do not belong together."
        )
    tokenizer.add_tokens([AddedToken("<image>", special=True, normalized=False)], special_tokens=True)
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    return tokenizer


@register_model("llava-v1.5-7b")
class LlavaOriginal(LlavaHF):
    """LLaVA-1.5 from an original-format folder; scoring and generation are LlavaHF's."""

    @classmethod
    def parts(cls, cfg: ModelConfig) -> Parts:
        return _full_parts(cfg)

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        cls.parts(cfg)

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        parts = self.parts(cfg)
        model, n_real = _build(parts)
        self.tokenizer = _tokenizer(parts.tokenizer, n_real)
        _load(model, parts, n_real, device, dtype)
        self.model = model.to(device).eval()
        self.device, self.dtype, self.conv_mode = device, dtype, self.resolve_conv_mode(cfg.conv_mode)
        config = self.model.config
        pad = cfg.pad_to_square
        if pad is None:
            pad = parts.settings.get("image_aspect_ratio") == "pad"
        size = config.vision_config.image_size
        self.transform = ImageTransform.from_folder(parts.vision_folder, pad) or ImageTransform(
            shortest_edge=size, crop_hw=(size, size), pad_to_square=pad
        )
        self.image_token_id = int(config.image_token_index)
        self.n_image_tokens = int(config.image_seq_length)
        self.real_vocab = min(cfg.vocab_size or n_real, n_real)
        self.bos_token_id = self.tokenizer.bos_token_id
        self.eos_token_id = self.tokenizer.eos_token_id
        self.pad_token_id = int(config.pad_token_id)
        self.path = Path(parts.paths["model_path"])
        self.paths = parts.paths
        log.info(
            "assembled %s (%s, %s): %d image tokens, vocabulary %d of %d rows",
            ", ".join(f"{k}={v}" for k, v in parts.paths.items()),
            device,
            str(dtype).replace("torch.", ""),
            self.n_image_tokens,
            self.real_vocab,
            self.model.lm_head.out_features,
        )

    def fingerprint(self) -> dict:
        return {**super().fingerprint(), **self.paths}


@register_model("llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5")
class LlavaPretrain(LlavaOriginal):
    """The projector-only pretrain checkpoint (mm_projector.bin) on its base LLM and CLIP tower."""

    @classmethod
    def parts(cls, cfg: ModelConfig) -> Parts:
        return _pretrain_parts(cfg)
