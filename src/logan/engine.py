"""The batched engine: (image, std) work through a model, per-token metrics reduced on the device.

For each batch of samples the clean pass runs once and is reused for every std of the set; every
noisy pass has exactly the clean pass's batch layout (same rows, same padding), so kernel numerics
cannot masquerade as divergence and std = 0 gives exactly 0. Only per-token scalars leave the device.

A sample may need two token sequences ("variants"): the generated description (`desp`, `inst_desp`)
and the data's own caption (`caption`). `img` and `inst` are read from whichever variant runs (the
text after them cannot change them in a causal model); an `img`-only run stops the sequence after
the image tokens and generates nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from logan.data.images import load_image
from logan.augment import N_AUGMENTATIONS, augment
from logan.metrics.pair import TokenPair
from logan.metrics.registry import TokenMetric, get_metric
from logan.models.base import Encoded, VLMAdapter, pad_batch
from logan.perturb import normalized_noise, perturb_pixels

log = logging.getLogger(__name__)

TEXT_PARTS = {"desp": "gen", "inst_desp": "gen", "caption": "cap"}


@dataclass(frozen=True)
class WorkItem:
    """One image to score, with the token ids that follow the instruction in each variant."""

    sample_id: str
    label: int
    description: tuple[int, ...] | None = None
    caption: tuple[int, ...] | None = None
    size: tuple[int, int] | None = None  # (width, height) of the original image


@dataclass
class EngineSettings:
    parts: list[str]
    metrics: list[str]
    instruction: str
    batch_size: int = 8
    draws: int = 1
    quantize: str = "none"
    space: str = "pixel"
    seed: int = 0
    row_chunk: int = 2048


@dataclass
class SampleResult:
    """Per-token values of one sample at one std: {(part, metric): values}, losses, perturbed image."""

    sample_id: str
    label: int
    tokens: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    losses: dict[str, tuple[float, float, int]] = field(default_factory=dict)
    image: np.ndarray | None = None


def variants_for(parts: list[str]) -> dict[str, list[str]]:
    """Which token sequence serves each part: {variant: parts}."""
    wanted = {TEXT_PARTS[p] for p in parts if p in TEXT_PARTS}
    base = "cap" if wanted == {"cap"} else "gen"
    plan: dict[str, list[str]] = {}
    for part in parts:
        plan.setdefault(TEXT_PARTS.get(part, base), []).append(part)
    return plan


class Engine:
    """Runs clean + noisy passes over batches of samples and yields per-sample per-token results."""

    def __init__(self, model: VLMAdapter, settings: EngineSettings) -> None:
        self.model = model
        self.settings = settings
        specs = [get_metric(name) for name in settings.metrics]
        self.by_need: dict[str, dict[str, TokenMetric]] = {
            need: {m.name: m.fn for m in specs if m.needs == need} for need in ("noise", "clean", "augment")}
        self.plan = variants_for(settings.parts)

    def encode(self, item: WorkItem, variant: str) -> Encoded:
        parts = self.plan[variant]
        instruction = self.settings.instruction
        if variant == "cap":
            return self.model.encode(instruction, list(item.caption or ()), image_size=item.size)
        needs_text = any(p != "img" for p in parts)
        continuation = list(item.description or ()) if {"desp", "inst_desp"} & set(parts) else None
        return self.model.encode(instruction, continuation, text_after_image=needs_text, image_size=item.size)

    def run(self, items: list[WorkItem], stds: list[float], save_images: set[str] | None = None,
            desc: str = "forward") -> Iterator[tuple[float, list[SampleResult]]]:
        """Yield (std, results of one batch) for every batch and std; samples run longest first."""
        order = sorted(items, key=lambda it: -max(len(self.encode(it, v).input_ids) for v in self.plan))
        batches = [order[i:i + self.settings.batch_size] for i in range(0, len(order), self.settings.batch_size)]
        for batch in tqdm(batches, desc=desc, unit="batch", leave=False):
            yield from self._run_batch(batch, stds, save_images or set())

    def _run_batch(self, batch: list[WorkItem], stds: list[float],
                   save_images: set[str]) -> Iterator[tuple[float, list[SampleResult]]]:
        loaded = [load_image(item.sample_id) for item in batch]
        images = [image for image, _ in loaded]
        keys = [key for _, key in loaded]
        layouts = {v: _Layout.build([self.encode(it, v) for it in batch], self.plan[v], self.model.pad_token_id)
                   for v in self.plan}
        clean_pixels = self.model.pixel_values([img.astype(np.float32) for img in images])
        clean = {v: layout.logits(self.model, clean_pixels) for v, layout in layouts.items()}
        fixed = self._std_independent(images, keys, layouts, clean)
        for std in stds:
            results = [SampleResult(it.sample_id, it.label) for it in batch]
            sums: dict[str, dict[str, torch.Tensor]] = {v: {} for v in layouts}
            for draw in range(self.settings.draws):
                pixels, noisy_images = self._noisy_pixels(images, keys, clean_pixels, std, draw)
                if draw == 0:
                    for res, img in zip(results, noisy_images):
                        if res.sample_id in save_images and img is not None:
                            res.image = np.clip(np.rint(img), 0, 255).astype(np.uint8)
                for variant, layout in layouts.items():
                    values = self._token_values(clean[variant], layout.logits(self.model, pixels), layout,
                                                {**self.by_need["noise"], _NLL: _noisy_nll})
                    _accumulate(sums[variant], values)
            for variant, layout in layouts.items():
                per_metric = {k: (v / self.settings.draws).cpu().numpy() for k, v in sums[variant].items()}
                per_metric.update(fixed[variant])
                layout.scatter(results, per_metric)
            yield std, results

    def _std_independent(self, images: list[np.ndarray], keys: list[int], layouts: dict[str, _Layout],
                         clean: dict[str, torch.Tensor]) -> dict[str, dict[str, np.ndarray]]:
        """Per-token values that do not depend on the std: clean-pass metrics and the augmentation KLs."""
        fixed: dict[str, dict[str, torch.Tensor]] = {
            v: self._token_values(clean[v], None, layout, {**self.by_need["clean"], f"{_NLL}_clean": _clean_nll})
            for v, layout in layouts.items()}
        if self.by_need["augment"]:
            sums: dict[str, dict[str, torch.Tensor]] = {v: {} for v in layouts}
            for index in range(N_AUGMENTATIONS):
                pixels = self.model.pixel_values([augment(img, index, seed=self.settings.seed, key=key)
                                                  for img, key in zip(images, keys)])
                for variant, layout in layouts.items():
                    values = self._token_values(clean[variant], layout.logits(self.model, pixels), layout,
                                                self.by_need["augment"])
                    _accumulate(sums[variant], values)
            for variant in layouts:
                fixed[variant].update({k: v / N_AUGMENTATIONS for k, v in sums[variant].items()})
        return {v: {k: t.cpu().numpy() for k, t in values.items()} for v, values in fixed.items()}

    def _noisy_pixels(self, images: list[np.ndarray], keys: list[int], clean_pixels: torch.Tensor,
                      std: float, draw: int) -> tuple[torch.Tensor, list[np.ndarray | None]]:
        s = self.settings
        if s.space == "normalized":
            channel_std = np.asarray(self.model.transform.image_std)
            tensor = clean_pixels["pixel_values"] if isinstance(clean_pixels, dict) else clean_pixels
            noise = torch.from_numpy(np.stack([
                normalized_noise(tuple(tensor.shape[1:]), std, channel_std, seed=s.seed, key=key, draw=draw)
                for key in keys]))
            if isinstance(clean_pixels, dict):
                return {**clean_pixels, "pixel_values": tensor + noise}, [None] * len(images)
            return tensor + noise, [None] * len(images)
        noisy = [perturb_pixels(img, std, seed=s.seed, key=key, draw=draw, quantize=s.quantize)
                 for img, key in zip(images, keys)]
        return self.model.pixel_values(noisy), noisy

    def _token_values(self, clean: torch.Tensor, other: torch.Tensor | None, layout: _Layout,
                      fns: dict[str, TokenMetric]) -> dict[str, torch.Tensor]:
        """Per-token values of `fns` on the valid positions (flattened), in row chunks to bound memory."""
        valid = layout.valid.to(clean.device)
        clean_rows = clean[valid]
        other_rows = other[valid] if other is not None else None
        targets = layout.targets.to(clean.device)[valid]
        targets = torch.where(targets < 0, clean_rows.argmax(-1), targets)
        out: dict[str, list[torch.Tensor]] = {name: [] for name in fns}
        for start in range(0, clean_rows.shape[0], self.settings.row_chunk):
            rows = slice(start, start + self.settings.row_chunk)
            pair = TokenPair(clean_rows[rows], other_rows[rows] if other_rows is not None else None, targets[rows])
            for name, fn in fns.items():
                out[name].append(fn(pair))
        return {k: torch.cat(v) for k, v in out.items()}


_NLL = "_nll"  # internal: per-token NLL of the targets, reported as the raw meta metric `losses`


def _clean_nll(pair: TokenPair) -> torch.Tensor:
    return -pair.target_logp


def _noisy_nll(pair: TokenPair) -> torch.Tensor:
    return -torch.log_softmax(pair.noisy, -1).gather(-1, pair.targets.unsqueeze(-1)).squeeze(-1)


def _accumulate(sums: dict[str, torch.Tensor], values: dict[str, torch.Tensor]) -> None:
    for name, value in values.items():
        sums[name] = sums[name] + value if name in sums else value


@dataclass
class _Layout:
    """A right-padded batch of one variant and where each part's tokens sit in the gathered span."""

    sequences: list[Encoded]
    parts: list[str]
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    positions: torch.Tensor            # [B, S] logit positions gathered (span per sample, padded)
    valid: torch.Tensor                # [B, S] bool
    targets: torch.Tensor              # [B, S] next-token ids (-1 = argmax of the clean logits)
    part_slices: list[dict[str, slice]]

    @classmethod
    def build(cls, sequences: list[Encoded], parts: list[str], pad_id: int) -> _Layout:
        ids, mask = pad_batch(sequences, pad_id, "right")
        spans, slices, target_rows = [], [], []
        for seq in sequences:
            located = {p: seq.part_positions(p) for p in parts}
            lo = min(int(pos[0]) for pos, _ in located.values() if len(pos)) if any(
                len(pos) for pos, _ in located.values()) else 0
            hi = max((int(pos[-1]) + 1 for pos, _ in located.values() if len(pos)), default=lo)
            span = np.arange(lo, hi)
            target = np.full(len(span), -1, dtype=np.int64)
            for pos, tgt in located.values():
                if tgt is not None and len(pos):
                    target[pos - lo] = tgt
            spans.append(span)
            target_rows.append(target)
            slices.append({p: slice(int(pos[0]) - lo, int(pos[-1]) + 1 - lo) if len(pos) else slice(0, 0)
                           for p, (pos, _) in located.items()})
        width = max(len(s) for s in spans)
        positions = torch.zeros((len(sequences), width), dtype=torch.long)
        valid = torch.zeros((len(sequences), width), dtype=torch.bool)
        targets = torch.full((len(sequences), width), -1, dtype=torch.long)
        for row, (span, target) in enumerate(zip(spans, target_rows)):
            positions[row, : len(span)] = torch.from_numpy(span)
            valid[row, : len(span)] = True
            targets[row, : len(span)] = torch.from_numpy(target)
        return cls(sequences, parts, ids, mask, positions, valid, targets, slices)

    def logits(self, model: VLMAdapter, pixels: torch.Tensor) -> torch.Tensor:
        return model.forward_logits(self.input_ids, self.attention_mask, pixels, self.positions)

    def scatter(self, results: list[SampleResult], per_metric: dict[str, np.ndarray]) -> None:
        """Split flattened per-token values back into per-sample, per-part arrays (NLLs become losses)."""
        counts = self.valid.sum(1).tolist()
        offsets = np.concatenate([[0], np.cumsum(counts)])
        clean_nll, noisy_nll = per_metric.pop(f"{_NLL}_clean"), per_metric.pop(_NLL)
        for row, res in enumerate(results):
            lo = offsets[row]
            for part, sl in self.part_slices[row].items():
                rows = slice(lo + sl.start, lo + sl.stop)
                for name, values in per_metric.items():
                    res.tokens[(part, name)] = values[rows].astype(np.float32)
                n = sl.stop - sl.start
                res.losses[part] = (float(clean_nll[rows].mean()) if n else float("nan"),
                                    float(noisy_nll[rows].mean()) if n else float("nan"), n)


