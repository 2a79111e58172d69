"""Typed run configuration: the one place where every key, its default and its meaning are defined.

These dataclasses are the schema Hydra composes against (registered in its ConfigStore by
`logan.compose`); the YAML files in `logan/conf/` hold only presets (model families). `logan <command>
--help` is generated from the `help` text of each field, so it cannot drift from the code.

`RunConfig.from_dict` turns a composed, resolved config into these dataclasses and validates the values
that can be checked before any file or model is touched.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Iterator
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any

from logan.errors import LoganError, did_you_mean

PARTS = ("img", "inst", "desp", "inst_desp", "caption")
ORIGINAL = "kept so the original's scripts run"

# the original's nine LOGAN divergences (the fused kernel's outputs, in its order)
LOGAN_DIVERGENCES = (
    "max_k_no_norn_kl_div",
    "max_k_renyi_05_kl_div",
    "max_k_renyi_1_kl_div",
    "max_k_renyi_2_kl_div",
    "max_k_renyi_inf_kl_div",
    "max_k_renyi_divergence_025",
    "max_k_renyi_divergence_05",
    "max_k_renyi_divergence_2",
    "max_k_renyi_divergence_4",
)
# the nine, then the VL-MIA baselines computed on the same forward passes
DEFAULT_METRICS = (
    *LOGAN_DIVERGENCES,
    "ppl",
    "mink",
    "mink_plus_plus",
    "max_prob_gap",
    "max_k_renyi_05_entro",
    "max_k_renyi_1_entro",
    "max_k_renyi_inf_entro",
    "mod_renyi_1_entro",
    "aug_kld",
)
# the original's noise grid (scripts/noise_level_tuning.sh), 0-255 pixel units, 4 sets of 8
DEFAULT_STD_SETS = (
    (0.005, 0.0078, 0.012, 0.019, 0.03, 0.046, 0.072, 0.11),
    (0.18, 0.28, 0.43, 0.67, 1.1, 1.6, 2.6, 4.0),
    (6.2, 9.8, 15.0, 24.0, 37.0, 58.0, 91.0, 140.0),
    (220.0, 340.0, 540.0, 840.0, 1300.0, 2100.0, 3200.0, 5000.0),
)

# defaults a command sets apart from the schema's, unless the caller gives the key (shown by its --help)
COMMAND_DEFAULTS: dict[str, dict[str, Any]] = {
    "demo": {"selection.split": "holdout"},  # its table reports AUCs on samples the std was not chosen on
    "compare": {"path.output_dir": "outputs/compare"},  # never a run folder's own default
}


def key(
    default: Any = MISSING,
    help: str = "",
    *,
    factory: Callable[[], Any] | None = None,
    choices: tuple[Any, ...] = (),
    path: bool = False,
    verbatim: bool = False,
    legacy: str = "",
) -> Any:
    """A config key: its default, a one-line explanation for `--help`, and how it is read.

    `choices`: the only values allowed (checked by `RunConfig.validate`). `verbatim`: the value is taken
    on the command line exactly as typed (free text: `a,b`, `#`, quotes and any letters work without
    quoting). `path`: a verbatim value naming a file or folder, where a leading `~` means home.
    `legacy`: why a key is kept (listed apart in `--help`)."""
    meta = {"help": help, "choices": choices, "verbatim": verbatim or path, "path": path, "legacy": legacy}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class PathConfig:
    """Where a run writes."""

    output_dir: str = key("outputs/logan", "the run folder; rerunning the same command resumes it", path=True)
    cache_dir: str | None = key(
        None,
        "Hugging Face cache folder for Hub models and datasets (null = HF_HUB_CACHE / "
        "HF_HOME, as huggingface_hub sets it)",
        path=True,
    )


@dataclass
class ModelConfig:
    """The model under attack: a family (`target_model=NAME` picks a preset) and its files."""

    name: str = key("llava-hf", "model family (adapter); `logan list models` shows them all")
    model_path: str | None = key(
        None,
        "the checkpoint: a local folder, a Hub id ORG/NAME or hf://ORG/NAME@REVISION "
        "(Hugging Face format, or the family's own)",
        path=True,
    )
    revision: str | None = key(
        None, "branch, tag or commit of a Hub model_path (null = main); the commit is recorded"
    )
    model_base: str | None = key(
        None, "base LLM of a projector-only LLaVA checkpoint (folder or Hub id)", path=True
    )
    ckpt: str | None = key(
        None,
        "MiniGPT-4: the projection checkpoint (pretrained_minigpt4*.pth; a file or "
        "hf://ORG/NAME@REVISION/FILE)",
        path=True,
    )
    conv_mode: str = key(
        "llava_v1",
        "prompt template around the image: llava_v1 | vicuna_v1 | llava_hf | plain "
        "(families add their own); chat_template = the processor's (hf-vlm); auto = the family's "
        "default",
    )
    trust_remote_code: bool = key(
        False,
        "hf-vlm / auto: run the checkpoint's own Python code (only for a folder you "
        "trust); recorded in the run fingerprint",
    )
    processor_kwargs: dict[str, Any] = key(
        help="hf-vlm: keyword arguments for the processor, one per key (e.g. "
        "target_model.processor_kwargs.do_pan_and_scan=true for Gemma 3)",
        factory=dict,
    )
    pad_to_square: bool | None = key(
        None, "null = as the image processor says; true = LLaVA-1.5's mean-colour square padding"
    )
    vocab_size: int | None = key(
        None, "real vocabulary every softmax is cut to; null = the tokenizer's base vocabulary"
    )
    device_map: str | None = key(None, "auto: spread a model too large for one GPU over this node's GPUs")
    vision_tower: str | None = key(
        None,
        "a CLIP folder or Hub id, when a checkpoint does not embed its vision tower "
        "(null: the checkpoint's mm_vision_tower)",
        path=True,
    )
    model_type: str | None = key(None, "family variant, e.g. MiniGPT-4's pretrain_llama2 | pretrain_vicuna0")
    llama_model: str | None = key(
        None, "MiniGPT-4: the LLM folder or Hub id (Llama-2-7b-chat or Vicuna v0)", path=True
    )
    vit_model: str | None = key(
        None, "MiniGPT-4: the EVA ViT-g weights (eva_vit_g.pth; a file or hf://.../FILE)", path=True
    )
    q_former_model: str | None = key(
        None, "MiniGPT-4 (Vicuna): the BLIP-2 Q-Former weights (a file or hf://.../FILE)", path=True
    )
    model: dict[str, Any] = key(
        help="the seed's MiniGPT-4 keys (arch, model_type, ckpt, image_size)", factory=dict, legacy=ORIGINAL
    )


@dataclass
class GaussianNoiseConfig:
    """The original's spelling of the noise settings."""

    use: bool = key(True, "must stay true: the Gaussian noise is the attack", legacy=ORIGINAL)
    mean: list[float] = key(
        help="must be [0.0]: LOGAN adds zero-mean noise", factory=lambda: [0.0], legacy=ORIGINAL
    )
    std: list[float] | None = key(
        None, "a list here = one std set (replaces noise.std_sets)", legacy=ORIGINAL
    )


@dataclass
class AugmentationsConfig:
    """The original's augmentation settings (only Gaussian noise)."""

    GaussianNoise: GaussianNoiseConfig = field(default_factory=GaussianNoiseConfig)


@dataclass
class DataConfig:
    """Member / non-member data, the target set sampled from it and the reference set."""

    member_dataset: str | None = key(
        None,
        'members: a JSON list [{"image": path, "label": 1}] (sampled) or a saved Parquet set (reloaded)',
        path=True,
    )
    nonmember_dataset: str | None = key(
        None, "non-members: a JSON list (label 0) or a saved Parquet set", path=True
    )
    dataset: str | None = key(
        None,
        "classify: a saved target set (OUT/datasets/target_dataset.parquet), a labelled "
        "pool, or images of unknown membership: a JSON list without labels or a folder (all "
        "classified)",
        path=True,
    )
    target_set_size: int = key(300, "members + non-members sampled into the target set")
    n_nm_ratio: float = key(0.5, "fraction of the target set that are non-members")
    reference_datasets_list: Any = key(
        help="reference set (known non-members): [] = the target non-members; a "
        "path; or a list of paths (a mixture); classify at an optimal_std.json: "
        "[] = that tuning run's reference set",
        factory=list,
    )
    reference_set_sample_distribution: list[float] | None = key(
        None, "with several reference paths: their proportions, summing to 1.0"
    )
    reference_set_size: int | None = key(
        None, "null = data.target_set_size (or all the pool holds, if fewer)"
    )
    save_datasets: bool = key(
        True,
        "must stay true: the sets are always saved (select, classify and resume read them)",
        legacy=ORIGINAL,
    )
    shard_id: int = key(0, "SLURM job arrays: this job's shard (data.shard_id=$SLURM_ARRAY_TASK_ID)")
    num_shards: int = key(1, "... of this many; the last shard to finish merges (or: logan merge)")
    augmentations: AugmentationsConfig = field(default_factory=AugmentationsConfig)

    @property
    def reference_paths(self) -> list[str]:
        """`reference_datasets_list` as a list of entries (the original also accepts one path as a string)."""
        from logan.data.sources import is_dataset_source

        value = self.reference_datasets_list
        paths = [str(value)] if isinstance(value, (str, Path)) else [str(p) for p in value or []]
        return [p if is_dataset_source(p) else str(Path(p).expanduser()) for p in paths]


@dataclass
class NoiseConfig:
    """Gaussian noise in 0-255 pixel units, as the original."""

    std_sets: list[list[Any]] = key(
        help="tune: the std values, in sets (default: the original's 32 in 4 sets)",
        factory=lambda: [list(s) for s in DEFAULT_STD_SETS],
    )
    std: Any = key(
        None,
        "classify: a number, a list, or a tuning run's optimal_std.json (then its model, parts "
        "and prompt are used too)",
    )
    per_part: bool = key(
        False, "classify at an optimal_std.json: score each part at the std its own tuning curve selected"
    )
    quantize: str = key(
        "none",
        "none (float pixels) | round | floor (the original's uint8 floor)",
        choices=("none", "round", "floor"),
    )
    space: str = key(
        "pixel",
        "pixel (before the model's preprocessing) | normalized (on the pixel tensor)",
        choices=("pixel", "normalized"),
    )
    draws: int = key(1, "noise draws per (sample, std); per-token divergences are averaged over draws")


@dataclass
class MetricsConfig:
    """What is scored: parts of the sequence, metrics, Max-K% ratios, and what raw values are kept."""

    parts: list[str] = key(
        help="slices scored: img | inst | desp | inst_desp | caption",
        factory=lambda: ["img", "inst", "desp", "inst_desp"],
    )
    metrics_to_use: list[str] = key(
        help="metrics (`logan list metrics`): LOGAN's nine divergences, then VL-MIA's baselines",
        factory=lambda: list(DEFAULT_METRICS),
    )
    ratio: list[float] = key(
        help="the Max-K% list (K = 0: the single extreme token)",
        factory=lambda: [0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
    )
    get_raw_meta_metrics: list[str] = key(
        help="raw values saved per std: [losses] (clean and noisy NLL)", factory=lambda: ["losses"]
    )
    get_proc_meta_metrics: list[str] = key(
        help="per-token values saved (<metric>_tkn_vals; every metric used needs its entry)",
        factory=lambda: [f"{m}_tkn_vals" for m in DEFAULT_METRICS],
    )
    get_raw_meta_examples: int | None = key(
        None, "losses of the first x members and x non-members; null = all"
    )
    get_proc_meta_examples: int | None = key(
        None, "per-token values of the first x members and x non-members; null = all"
    )
    get_raw_images: int = key(0, "perturbed PNGs of the first x members and x non-members at every std")
    get_token_labels: int = key(
        0, "must stay 0: token labels are not saved (tokens.parquet has per-token values)", legacy=ORIGINAL
    )
    compat: str = key(
        "logan",
        "whose metric definitions and slicing: logan (LOGAN's; README, \"Metric "
        "conventions\") | original (the original code's at 225fb67c, to reproduce its numbers)",
        choices=("logan", "original"),
    )


@dataclass
class PromptConfig:
    """The instruction after the image."""

    text: str = key(
        "Describe this image concisely.", "the instruction (the original's prompt)", verbatim=True
    )


@dataclass
class GenerationConfig:
    """Descriptions (`desp`): generated once per image, greedily, from the clean image."""

    num_gen_tokens: int = key(32, "description length in tokens")
    batch_size: int | str = key(
        "auto", "images per generate() call; auto: 64 on a GPU (halved while out of memory), 8 on the CPU"
    )


@dataclass
class InferenceConfig:
    """How forward passes run (speed only: results do not depend on these)."""

    batch_size: int | str = key(
        "auto",
        "samples per forward; auto: the largest power of two up to max_batch_size that fits (16 on the CPU)",
    )
    max_batch_size: int = key(64, "upper bound for batch_size=auto")
    compile: bool | str = key(
        "auto",
        "torch.compile the transformer blocks: true | false | auto (on a GPU; eager if compilation fails)",
    )
    metric_kernel: str = key(
        "auto",
        "triton (LOGAN's divergences fused, GPU) | torch | auto (triton where it runs)",
        choices=("auto", "triton", "torch"),
    )
    attn_implementation: str | None = key(
        None, "sdpa | flash_attention_2 | eager; null keeps the loader's default"
    )
    reuse_prefix: bool = key(
        True, "the prompt before the image runs once per run; forwards start at the image"
    )
    workers: int = key(0, "host threads for image decoding, noise and preprocessing (0: up to 8)")
    prefetch: int = key(2, "host steps prepared ahead of the device (0: no background thread)")
    checkpoint_every: int = key(
        256, "samples per saved chunk: a killed run resumes at its first unfinished chunk"
    )
    threads: int = key(
        0,
        "torch CPU threads while the command runs, restored after (0: as the process has them; "
        "1 avoids spinning threads beside other busy processes)",
    )


@dataclass
class SelectionConfig:
    """How the optimal std is chosen from the tuning curves."""

    rule: str = key(
        "max_tune_auc",
        "max_tune_auc (the std whose target-vs-reference AUC is highest; README, "
        "\"Optimal std\", has the measured comparison) | min_gap (the curve's minimum, as the original's "
        "README describes it; its code has no selection) | max_abs_gap",
        choices=("max_tune_auc", "min_gap", "max_abs_gap"),
    )
    metric: str | None = key(None, "metric of the curve; null = the first of img_metrics.metrics_to_use")
    part: str | None = key(None, "part of the curve; null = the first of img_metrics.parts")
    k: float = key(
        1.0,
        "Max-K% ratio of the per-sample value on the curve (1.0 = mean over tokens); also the K "
        "of classify's tables",
    )
    split: str = key(
        "none",
        "none: choose the std on the whole target set | holdout: on a selection part, and "
        "classify reports AUCs on the rest only | crossfit: on each of two folds, and classify scores "
        "each sample at the other fold's std (stratified by label, seeded by `seed`)",
        choices=("none", "holdout", "crossfit"),
    )
    fraction: float = key(
        0.5, "holdout / crossfit: the share of each label's target samples in the selection part (fold 0)"
    )


@dataclass
class VerdictConfig:
    """classify's per-image verdicts: each target image's p-value against the reference set's scores."""

    fpr: float = key(
        0.01,
        "false positive rate of the member verdict: an image is called member when its p-value "
        "against the reference set (known non-members) is at most this",
    )
    metric: str | None = key(
        None,
        "metric of the verdicts; null = the tuning run's selection metric (else "
        "selection.metric, else the first noise-dependent metric of img_metrics.metrics_to_use)",
    )
    part: str | None = key(
        None,
        "part of the verdicts; null = the part the std was selected on (else "
        "selection.part, else the first of img_metrics.parts)",
    )


@dataclass
class ReportConfig:
    """What classify draws after scoring (metrics.json and scores.parquet always hold every row)."""

    plots: str = key(
        "selected",
        "ROC + histogram plots of the best LOGAN metric per part: selected (one pair, at the "
        "selected std; given several std values, at the best row's) | every_std (a pair per std) | none",
        choices=("selected", "every_std", "none"),
    )


@dataclass
class JobConfig:
    """The original's job switch."""

    job_type: str | None = key(
        None, "hyperparam_tuning (= logan tune) | evaluation (= logan classify)", legacy=ORIGINAL
    )


@dataclass
class DemoConfig:
    """`logan demo`: a tiny LLaVA trained on known members, attacked end to end."""

    n_members: int = key(150, "synthetic captioned scenes the tiny LLaVA is trained on")
    n_nonmembers: int = key(150, "scenes from the same generator, never seen in training")
    epochs: int = key(150, "training epochs (enough to memorise the members' captions)")
    image_size: int = key(32, "the tiny model's image side (scenes are rendered at twice this)")
    learning_rate: float = key(3e-3, "training learning rate")
    train_batch_size: int = key(16, "training batch size")
    batch_size: int = key(32, "inference and generation batch size of the attack runs")
    control: bool = key(True, "also attack an untrained copy (its AUCs should be near 0.5)")
    hidden: int = key(96, "tiny LLaVA width (language model)")
    layers: int = key(2, "language-model layers")
    std_sets: list[list[Any]] | None = key(None, "null = noise.std_sets")
    threads: int = key(
        1,
        "torch CPU threads of the demo (training and attacks), restored after: one thread has no "
        "partner to spin-wait for (benchmarks/README.md)",
    )


@dataclass
class PrepareConfig:
    """`logan prepare NAME`: convert a downloaded dataset to LOGAN's JSON lists (nothing is downloaded)."""

    name: str | None = key(None, "vlmia | llava-instruct | sharegpt4o")
    source: str | None = key(None, "the downloaded folder (or annotation file)", path=True)
    images: str | None = key(None, "image folder or zip (llava-instruct: COCO's train2017/)", path=True)
    subset: str | None = key(
        None,
        "vlmia: img_Flickr (default) | img_Flickr_2k | img_Flickr_10k | img_dalle; "
        "others: the annotation file",
    )
    copy_images: bool = key(False, "also copy image files into OUT/images")
    limit: int | None = key(None, "at most this many images per list (null = all)")


@dataclass
class CompareConfig:
    """`logan compare RUN RUN ...`: finished runs side by side."""

    runs: list[str] = key(
        help="the run folders (tune, select, classify or demo); on the command line simply `logan "
        "compare RUN RUN ...`",
        factory=list,
    )
    metric: str | None = key(
        None, "metric of the overlaid ROC curves (null = the first run's selection metric)"
    )


@dataclass
class RunConfig:
    """Everything a LOGAN command reads."""

    path: PathConfig = field(default_factory=PathConfig)
    target_model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    img_metrics: MetricsConfig = field(default_factory=MetricsConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    verdict: VerdictConfig = field(default_factory=VerdictConfig)
    report: ReportConfig = field(default_factory=ReportConfig)
    job_meta_params: JobConfig = field(default_factory=JobConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    seed: int = key(0, "seeds target / reference sampling and every noise draw")
    device: str = key("auto", "auto | cpu | cuda | cuda:N")
    dtype: str = key(
        "auto",
        "auto (float16 on a GPU, as the original; float32 on the CPU) | float32 | bfloat16 | float16",
        choices=("auto", "float32", "fp32", "bfloat16", "bf16", "float16", "fp16"),
    )
    tracking: str = key(
        "none",
        "also log metrics, tuning curves and plots to an experiment tracker: none | "
        "tensorboard (OUT/tensorboard) | wandb (WANDB_MODE, WANDB_PROJECT respected); its package must "
        "be installed",
        choices=("none", "tensorboard", "wandb"),
    )
    # written by the run, not a setting: every model path setting made local (`logan.models.hub`), with the
    # Hub commit of each; recorded in config.json
    resolved: dict[str, Any] = field(default_factory=dict, metadata={"internal": True})

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RunConfig:
        """Build and validate a RunConfig from a plain (resolved) config dictionary."""
        cfg = _build(cls, raw, "")
        cfg.validate()
        return cfg

    @property
    def output_dir(self) -> Path:
        return Path(self.path.output_dir).expanduser()

    def std_sets(self) -> list[list[float]]:
        """The tuning grid: the original's `data.augmentations.GaussianNoise.std` wins when given."""
        legacy = self.data.augmentations.GaussianNoise.std
        sets = [list(legacy)] if legacy else self.noise.std_sets
        if not isinstance(sets, (list, tuple)) or not all(isinstance(g, (list, tuple)) for g in sets):
            raise LoganError(
                f"noise.std_sets={sets} must be a list of lists of std values, e.g. [[0.5,2.6],[4.0]]."
            )
        grid = [[_std_value(s, "noise.std_sets") for s in group] for group in sets]
        if not any(grid):
            raise LoganError(
                f"noise.std_sets={sets} holds no std value: give at least one, e.g. "
                "noise.std_sets=[[0.5,2.6,4.0]] (the default is the original's 32 values in 4 sets)."
            )
        return grid

    def validate(self) -> None:
        """Check values that need no file or model; raise LoganError naming the key and the fix."""
        for name, value, spec in walk(self):
            if spec.metadata.get("choices") and value not in spec.metadata["choices"]:
                raise LoganError(
                    f"{name}={value} is not one of {', '.join(map(str, spec.metadata['choices']))}."
                )
        _expand_home(self)
        _check_original_keys(self)
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
        if not self.img_metrics.parts:
            raise LoganError("img_metrics.parts is empty: name at least one of " + ", ".join(PARTS) + ".")
        if self.noise.draws < 1:
            raise LoganError(f"noise.draws={self.noise.draws} must be at least 1.")
        self.inference.batch_size = _batch_size(self.inference.batch_size, "inference.batch_size")
        self.generation.batch_size = _batch_size(self.generation.batch_size, "generation.batch_size")
        if self.inference.compile not in (True, False, "auto"):
            raise LoganError(f"inference.compile={self.inference.compile} is not one of true, false, auto.")
        if self.inference.checkpoint_every < 1:
            raise LoganError(
                f"inference.checkpoint_every={self.inference.checkpoint_every} must be at least 1 "
                "(samples per saved chunk)."
            )
        if self.inference.max_batch_size < 1 or self.inference.workers < 0 or self.inference.prefetch < 0:
            raise LoganError(
                "inference.max_batch_size must be at least 1, inference.workers and "
                "inference.prefetch at least 0."
            )
        if self.inference.threads < 0 or self.demo.threads < 0:
            raise LoganError(
                "inference.threads and demo.threads must be at least 0 (0: torch's threads as they are)."
            )
        m = self.img_metrics
        if not m.ratio:
            raise LoganError(
                "img_metrics.ratio is empty: give the Max-K% ratios, e.g. [0.0,0.1,1.0] "
                "(K = 1.0: the mean over tokens)."
            )
        for k in m.ratio:
            if not 0.0 <= float(k) <= 1.0:
                raise LoganError(f"img_metrics.ratio holds {k}: every Max-K% ratio must lie in [0, 1].")
        m.parts, m.metrics_to_use = list(dict.fromkeys(m.parts)), list(dict.fromkeys(m.metrics_to_use))
        m.ratio = list(dict.fromkeys(m.ratio))
        if self.seed < 0:
            raise LoganError(f"seed={self.seed} must be a non-negative integer.")
        if {"desp", "inst_desp"} & set(m.parts) and self.generation.num_gen_tokens < 1:
            raise LoganError(
                f"generation.num_gen_tokens={self.generation.num_gen_tokens}: the parts desp / inst_desp "
                "need a description of at least 1 token; raise it or drop those parts."
            )
        if self.data.reference_set_size is not None and self.data.reference_set_size < 1:
            raise LoganError(
                f"data.reference_set_size={self.data.reference_set_size} must be at least 1 "
                "(null: as many as data.target_set_size)."
            )
        if not 0.0 <= self.selection.k <= 1.0:
            raise LoganError(f"selection.k={self.selection.k} must lie in [0, 1].")
        if not 0.0 < self.verdict.fpr < 1.0:
            raise LoganError(
                f"verdict.fpr={self.verdict.fpr} must lie strictly between 0 and 1 (e.g. 0.01: at most 1 "
                "% of non-members called member)."
            )
        if not 0.0 < self.selection.fraction < 1.0:
            raise LoganError(
                f"selection.fraction={self.selection.fraction} must lie strictly between 0 and 1 (the "
                "selection part's share of the target set)."
            )
        self.std_sets()


def walk(obj: Any, prefix: str = "") -> Iterator[tuple[str, Any, dataclasses.Field]]:
    """(dotted key, value, field) of every leaf key of a config dataclass instance, or of a dataclass
    (then the values are the defaults)."""
    cls = obj if isinstance(obj, type) else type(obj)
    hints = typing.get_type_hints(cls)
    for spec in dataclasses.fields(cls):
        if spec.metadata.get("internal"):
            continue
        name, hint = f"{prefix}{spec.name}", hints[spec.name]
        value = (
            hint
            if isinstance(obj, type) and dataclasses.is_dataclass(hint)
            else (_default(spec) if isinstance(obj, type) else getattr(obj, spec.name))
        )
        if dataclasses.is_dataclass(hint):
            yield from walk(value, name + ".")
        else:
            yield name, value, spec


def _expand_home(obj: Any) -> None:
    """A leading `~` in a path key means the user's home, as in a shell."""
    for spec in dataclasses.fields(obj):
        value = getattr(obj, spec.name)
        if dataclasses.is_dataclass(value):
            _expand_home(value)
        elif spec.metadata.get("path") and isinstance(value, str) and value.startswith("~"):
            setattr(obj, spec.name, str(Path(value).expanduser()))


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not MISSING:
        return spec.default
    assert spec.default_factory is not MISSING, f"{spec.name} has no default"
    return spec.default_factory()


def _check_original_keys(cfg: RunConfig) -> None:
    """Keys kept for the original's scripts work as they did there, or are refused: never silently ignored."""
    noise = cfg.data.augmentations.GaussianNoise
    if not noise.use:
        raise LoganError(
            "data.augmentations.GaussianNoise.use=false would attack without noise: LOGAN's attack "
            "is the Gaussian noise; leave it true (the clean-pass baselines are computed anyway)."
        )
    if noise.mean and any(float(m) != 0 for m in noise.mean):
        raise LoganError("data.augmentations.GaussianNoise.mean must be 0: LOGAN adds zero-mean noise.")
    if not cfg.data.save_datasets:
        raise LoganError(
            "data.save_datasets=false is not supported: the target and reference sets are always saved "
            "under OUT/datasets (select, classify and resumed runs read them); drop the key."
        )
    if cfg.img_metrics.get_token_labels:
        raise LoganError(
            "img_metrics.get_token_labels is not supported: per-token values are saved in "
            "per_std/*/tokens.parquet (img_metrics.get_proc_meta_examples); drop the key."
        )


def _batch_size(value: Any, key: str) -> int | str:
    """A positive integer or "auto"."""
    if value == "auto":
        return value
    try:
        size = int(value)
        if isinstance(value, bool) or size != float(value) or size < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise LoganError(
            f"{key}={value} is neither a positive integer nor auto (auto picks the largest that fits)."
        )
    return size


def _std_value(value: Any, key: str) -> float:
    try:
        std = float(value)
    except (TypeError, ValueError):
        raise LoganError(
            f"{key} holds '{value}', which is not a number: give std values in 0-255 pixel units."
        )
    if not math.isfinite(std) or std < 0:
        raise LoganError(f"{key} holds {value}: a noise std must be a finite number >= 0.")
    return std


def is_number(text: str) -> bool:
    """Whether a string reads as a number (`noise.std=2.6` vs `noise.std=runs/tune/optimal_std.json`)."""
    try:
        float(text)
    except ValueError:
        return False
    return True


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
    for name, value in raw.items():
        if name not in names:
            raise LoganError(
                f"unknown config key '{prefix}{name}'.{did_you_mean(name, names)} "
                f"Keys of '{prefix.rstrip('.') or 'the top level'}': {', '.join(sorted(names))}."
            )
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, f"{prefix}{name}.")  # type: ignore[arg-type]
        else:
            kwargs[name] = _coerce(value, hint, f"{prefix}{name}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Light type coercion for scalars (YAML gives ints for floats and strings for paths)."""
    if value is None:
        return None
    base = hint
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        base = args[0] if len(args) == 1 else hint
    if isinstance(value, Path) and base is str:
        return str(value)
    try:
        if base is float:
            return float(value)
        if base is int and not isinstance(value, bool):
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        if base is bool:
            if isinstance(value, str):
                if value.lower() not in ("1", "true", "yes", "0", "false", "no"):
                    raise ValueError
                return value.lower() in ("1", "true", "yes")
            return bool(value)
        if base is str:
            return str(value)
    except (TypeError, ValueError):
        raise LoganError(
            f"config key '{name}' has the value {value!r}, which is not a valid {base.__name__}."
        )
    return value
