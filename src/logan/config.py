"""Typed run configuration. Hydra composes YAML at the CLI edge; everything else receives these.

`RunConfig.from_dict` turns the composed, resolved config into dataclasses and validates the values
that can be checked before any file or model is touched.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logan.errors import LoganError, did_you_mean

PARTS = ("img", "inst", "desp", "inst_desp", "caption")
QUANTIZE = ("none", "round", "floor")
SPACES = ("pixel", "normalized")


@dataclass
class PathConfig:
    output_dir: str = "outputs/logan"
    cache_dir: str | None = None


@dataclass
class ModelConfig:
    name: str = "llava-hf"
    model_path: str | None = None
    model_base: str | None = None
    ckpt: str | None = None
    conv_mode: str = "llava_v1"
    pad_to_square: bool | None = None
    vocab_size: int | None = None
    device_map: str | None = None        # "auto": spread a model too large for one GPU over the node's GPUs
    vision_tower: str | None = None      # a local CLIP folder when a checkpoint does not embed its tower
    model_type: str | None = None        # family variant, e.g. MiniGPT-4's pretrain_vicuna0 / pretrain_llama2
    llama_model: str | None = None       # MiniGPT-4: the LLM folder (Vicuna v0 or Llama-2-chat)
    vit_model: str | None = None         # MiniGPT-4: EVA ViT-g weights (eva_vit_g.pth)
    q_former_model: str | None = None    # MiniGPT-4 (Vicuna): BLIP-2 Q-Former weights
    model: dict[str, Any] = field(default_factory=dict)


@dataclass
class GaussianNoiseConfig:
    use: bool = True
    mean: list[float] = field(default_factory=lambda: [0.0])
    std: list[float] | None = None


@dataclass
class AugmentationsConfig:
    GaussianNoise: GaussianNoiseConfig = field(default_factory=GaussianNoiseConfig)


@dataclass
class DataConfig:
    member_dataset: str | None = None
    nonmember_dataset: str | None = None
    dataset: str | None = None
    target_set_size: int = 300
    n_nm_ratio: float = 0.5
    reference_datasets_list: list[str] | str | None = field(default_factory=list)
    reference_set_sample_distribution: list[float] | None = None
    reference_set_size: int | None = None
    save_datasets: bool = True
    shard_id: int = 0
    num_shards: int = 1
    augmentations: AugmentationsConfig = field(default_factory=AugmentationsConfig)


@dataclass
class NoiseConfig:
    std_sets: list[list[float]] = field(default_factory=list)
    std: Any = None
    quantize: str = "none"
    space: str = "pixel"
    draws: int = 1


@dataclass
class MetricsConfig:
    parts: list[str] = field(default_factory=lambda: ["img"])
    metrics_to_use: list[str] = field(default_factory=list)
    ratio: list[float] = field(default_factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.5, 1.0])
    get_raw_meta_metrics: list[str] = field(default_factory=list)
    get_proc_meta_metrics: list[str] = field(default_factory=list)
    get_raw_meta_examples: int | None = None
    get_proc_meta_examples: int | None = None
    get_raw_images: int = 0
    get_token_labels: int = 0
    compat: str = "logan"            # whose metric definitions and slicing: logan (ours) | original (225fb67c)


@dataclass
class PromptConfig:
    text: str = "Describe this image concisely."


@dataclass
class GenerationConfig:
    num_gen_tokens: int = 32
    batch_size: int | str = "auto"           # images per generate() call, or "auto" (64 on a GPU, halved
                                             # while out of memory; 8 on the CPU)


@dataclass
class InferenceConfig:
    batch_size: int | str = "auto"           # samples per forward, or "auto" (largest that fits)
    max_batch_size: int = 64                 # upper bound for batch_size=auto
    compile: bool | str = "auto"             # torch.compile the transformer blocks and PyTorch's metric reduction
                                             # (auto: on a GPU, falling back to eager if compilation fails)
    metric_kernel: str = "auto"              # triton (LOGAN's divergences fused, GPU) | torch | auto
    attn_implementation: str | None = None   # sdpa | flash_attention_2 | eager (None: the loader's default)
    reuse_prefix: bool = True                # the prompt before the image runs once; forwards start at the image
    workers: int = 0                         # host threads for image decoding / noise (0: up to 8)
    prefetch: int = 2                        # host steps prepared ahead of the device (0: no thread)
    checkpoint_every: int = 256              # samples per saved chunk: a killed run resumes at the first
                                             # unfinished chunk of its std values


@dataclass
class SelectionConfig:
    rule: str = "min_gap"
    metric: str | None = None
    part: str | None = None
    k: float = 1.0


@dataclass
class JobConfig:
    job_type: str | None = None


@dataclass
class DemoConfig:
    n_members: int = 150
    n_nonmembers: int = 150
    epochs: int = 150
    image_size: int = 32
    learning_rate: float = 3e-3
    train_batch_size: int = 16
    batch_size: int = 32
    control: bool = True
    hidden: int = 96
    layers: int = 2
    std_sets: list[list[float]] | None = None


@dataclass
class PrepareConfig:
    name: str | None = None          # vlmia | llava-instruct | sharegpt4o (or: logan prepare <name> ...)
    source: str | None = None        # the downloaded dataset folder (or annotation file)
    images: str | None = None        # image folder (or zip): COCO train2017/ for llava-instruct
    subset: str | None = None        # vlmia: img_Flickr (default), ...; others: the annotation file
    copy_images: bool = False        # copy image files into OUT/images (bytes are always written)
    limit: int | None = None         # at most this many images per list


@dataclass
class RunConfig:
    path: PathConfig = field(default_factory=PathConfig)
    target_model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    img_metrics: MetricsConfig = field(default_factory=MetricsConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    job_meta_params: JobConfig = field(default_factory=JobConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build and validate a RunConfig from a plain (resolved) config dictionary."""
        cfg = _build(cls, raw, "")
        cfg.validate()
        return cfg

    @property
    def output_dir(self) -> Path:
        return Path(self.path.output_dir)

    def std_sets(self) -> list[list[float]]:
        """The tuning grid: the original's `data.augmentations.GaussianNoise.std` wins when given."""
        legacy = self.data.augmentations.GaussianNoise.std
        sets = [list(legacy)] if legacy else self.noise.std_sets
        return [[_std_value(s, "noise.std_sets") for s in group] for group in sets]

    def validate(self) -> None:
        """Check values that need no file or model; raise LoganError naming the key and the fix."""
        _check_ratio(self.data.n_nm_ratio)
        if self.data.target_set_size is not None and self.data.target_set_size < 2:
            raise LoganError(
                f"data.target_set_size={self.data.target_set_size} is too small: give at least 2 "
                "(one member and one non-member)."
            )
        for part in self.img_metrics.parts:
            if part not in PARTS:
                raise LoganError(
                    f"unknown part '{part}' in img_metrics.parts.{did_you_mean(part, PARTS)} "
                    f"Valid parts: {', '.join(PARTS)}."
                )
        if self.img_metrics.compat not in ("logan", "original"):
            raise LoganError(f"img_metrics.compat={self.img_metrics.compat} is not one of logan, original "
                             "(original: the original code's metric definitions, to reproduce its numbers).")
        if not self.img_metrics.parts:
            raise LoganError("img_metrics.parts is empty: name at least one of " + ", ".join(PARTS) + ".")
        if self.noise.quantize not in QUANTIZE:
            raise LoganError(f"noise.quantize={self.noise.quantize} is not one of {', '.join(QUANTIZE)}.")
        if self.noise.space not in SPACES:
            raise LoganError(f"noise.space={self.noise.space} is not one of {', '.join(SPACES)}.")
        if self.noise.draws < 1:
            raise LoganError(f"noise.draws={self.noise.draws} must be at least 1.")
        self.inference.batch_size = _batch_size(self.inference.batch_size, "inference.batch_size")
        self.generation.batch_size = _batch_size(self.generation.batch_size, "generation.batch_size")
        if self.inference.compile not in (True, False, "auto"):
            raise LoganError(f"inference.compile={self.inference.compile} is not one of true, false, auto.")
        if self.inference.metric_kernel not in ("auto", "triton", "torch"):
            raise LoganError(f"inference.metric_kernel={self.inference.metric_kernel} is not one of auto, triton, "
                             "torch.")
        if self.inference.checkpoint_every < 1:
            raise LoganError(f"inference.checkpoint_every={self.inference.checkpoint_every} must be at least 1 "
                             "(samples per saved chunk).")
        if self.inference.max_batch_size < 1 or self.inference.workers < 0 or self.inference.prefetch < 0:
            raise LoganError("inference.max_batch_size must be at least 1, inference.workers and "
                             "inference.prefetch at least 0.")
        for k in self.img_metrics.ratio:
            if not 0.0 <= float(k) <= 1.0:
                raise LoganError(f"img_metrics.ratio holds {k}: every Max-K% ratio must lie in [0, 1].")
        if not 0.0 <= self.selection.k <= 1.0:
            raise LoganError(f"selection.k={self.selection.k} must lie in [0, 1].")
        self.std_sets()


def _batch_size(value: Any, key: str) -> int | str:
    """A positive integer or "auto"."""
    if value == "auto":
        return value
    try:
        size = int(value)
        if isinstance(value, bool) or size != float(value) or size < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise LoganError(f"{key}={value} is neither a positive integer nor auto "
                         "(auto picks the largest that fits).")
    return size


def _std_value(value: Any, key: str) -> float:
    try:
        std = float(value)
    except (TypeError, ValueError):
        raise LoganError(f"{key} holds '{value}', which is not a number: give std values in 0-255 pixel units.")
    if not math.isfinite(std) or std < 0:
        raise LoganError(f"{key} holds {value}: a noise std must be a finite number >= 0.")
    return std


def parse_std_values(value: Any, key: str = "noise.std") -> list[float]:
    """A number or a list of numbers -> list of validated std values."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise LoganError(f"{key} is empty: give a number, a list, or the path of an optimal_std.json.")
    return [_std_value(v, key) for v in values]


def _check_ratio(ratio: float) -> None:
    if not 0.0 < float(ratio) < 1.0:
        raise LoganError(
            f"data.n_nm_ratio={ratio} must lie strictly between 0 and 1 "
            "(it is the fraction of non-members in the target set; 0.5 = half)."
        )


def _build(cls: type, raw: Any, prefix: str) -> Any:
    """Recursively build dataclass `cls` from a dict; unknown keys are one clear error."""
    if raw is None:
        return cls()
    if not isinstance(raw, dict):
        raise LoganError(f"config key '{prefix.rstrip('.')}' must be a group of keys, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise LoganError(
                f"unknown config key '{prefix}{key}'.{did_you_mean(key, names)} "
                f"Keys of '{prefix.rstrip('.') or 'the top level'}': {', '.join(sorted(names))}."
            )
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{prefix}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Light type coercion for scalars (YAML gives ints for floats and strings for paths)."""
    if value is None:
        return None
    base = hint
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if len(args) == 1 else hint
    try:
        if base is float:
            return float(value)
        if base is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is bool:
            if isinstance(value, str):
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise LoganError(f"config key '{key}' has the value {value!r}, which is not a valid {base.__name__}.")
    return value
