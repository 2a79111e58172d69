"""The typed boundary between a model family and the engine: what an adapter gives for one sample and
what the engine hands back for a batch. Nothing here depends on the family.

Per sample an adapter gives
- `Encoded`: the token ids, where the image tokens sit (sorted; gaps allowed: Idefics3's row tags,
  Gemma 3's pan-and-scan crops), the end of the prompt, token-aligned side inputs (Gemma 3's
  `token_type_ids`, Qwen2-VL's 3-D `position_ids`) and the image size the layout was made for;
- `ImageInput`: the model's pixel tensors of one image (dim 0 = this image's rows: 1, or its patches,
  tiles or crops), made on a host worker thread from float pixels.

The engine batches them with `TokenBatch.build` (right padding for scoring, left for generation) and
`collate` (the family-independent rule below), and the adapter's `forward_logits(tokens, images,
positions)` returns logits at the gathered positions. `Traits` say what the engine may do with a family.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
import torch.nn.functional as F

from logan.errors import LoganError

PIXELS = "pixel_values"  # the tensor normalized-space noise goes into (every family's name for it)
Size = tuple[int, int]  # (width, height) of an image


@dataclass(frozen=True)
class Traits:
    """What the engine may do with a family (declared by its adapter, never sniffed)."""

    causal_image: bool = True  # image rows depend on nothing after them: img-only runs stop there
    keeps_prefix: bool = False  # inference.reuse_prefix can keep the prompt before the image
    fixed_image_tokens: bool = True  # False: the layout follows the image size (encode needs it)
    channel_axis: int | None = -3  # axis of `pixel_values` holding the colour channels (normalized-space
    # noise); None: the family patchifies its pixels (space=normalized refused)


@dataclass(frozen=True)
class Encoded:
    """One token sequence: [prefix][image block][instruction + generation prompt][continuation]."""

    input_ids: tuple[int, ...]
    image_positions: tuple[int, ...]  # img is scored here: sorted, may have gaps
    inst_end: int  # end of the prompt
    side: Mapping[str, tuple] = field(default_factory=dict)  # token-aligned model inputs, token axis last
    image_size: Size | None = None  # the size the layout was made for (None: any size)

    @property
    def image_start(self) -> int:
        return self.image_positions[0]

    @property
    def image_end(self) -> int:
        return self.image_positions[-1] + 1

    @property
    def n_image(self) -> int:
        return len(self.image_positions)

    @property
    def prefix(self) -> tuple[int, ...]:
        """The ids before the first image token."""
        return self.input_ids[: self.image_start]

    def part_positions(self, part: str, compat: str = "logan") -> tuple[np.ndarray, np.ndarray | None]:
        """Logit positions (rows) scored for `part` and the token id each row predicts (None for `img`,
        whose rows are scored against their own clean argmax; -1 for a row past the last token).

        `img`: the outputs at the image-token positions (they depend on the prefix and the image only).
        Text parts, LOGAN's convention (`compat="logan"`): every token j of the part is scored from the row
        before it, j-1, so a part's score is what all of its tokens cost (its first token is predicted from
        the previous part's last row). The original's (`compat="original"`): the part's own rows s..e-1,
        row t predicting token t+1; its per-token loop then drops each part's last row for every metric
        but the Renyi divergences and aug-KL (`metrics/original.py`). Tokens inside an image block that are
        not image tokens (row tags, begin/end-of-image markers) belong to no part.
        """
        if part == "img":
            return np.asarray(self.image_positions, dtype=np.int64), None
        spans = {
            "inst": (self.image_end, self.inst_end),
            "desp": (self.inst_end, len(self.input_ids)),
            "caption": (self.inst_end, len(self.input_ids)),
            "inst_desp": (self.image_end, len(self.input_ids)),
        }
        start, end = spans[part]
        ids = np.asarray(self.input_ids, dtype=np.int64)
        if compat == "original":
            rows = np.arange(start, end)
            return rows, np.append(ids, -1)[rows + 1]
        tokens = np.arange(start, end)
        return tokens - 1, ids[tokens]


@dataclass(frozen=True)
class TokenBatch:
    """Padded token sequences and their side inputs (host tensors until `to`)."""

    input_ids: torch.Tensor  # [B, S]
    attention_mask: torch.Tensor  # [B, S]; stays on the host (adapters read the padding from it)
    side: Mapping[str, torch.Tensor]  # [B, ..., S], padded with 0
    prefix: tuple[int, ...]  # the ids before the image when every row has the same, else ()
    sizes: tuple[Size | None, ...]  # each row's Encoded.image_size

    @classmethod
    def build(cls, sequences: Sequence[Encoded], pad_id: int, padding: str = "right") -> TokenBatch:
        length = max(len(s.input_ids) for s in sequences)
        ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(sequences), length), dtype=torch.long)
        first = sequences[0]
        side = {
            k: torch.zeros((len(sequences), *np.shape(v)[:-1], length), dtype=torch.long)
            for k, v in first.side.items()
        }
        for row, seq in enumerate(sequences):
            n = len(seq.input_ids)
            cols = slice(0, n) if padding == "right" else slice(length - n, length)
            ids[row, cols] = torch.tensor(seq.input_ids, dtype=torch.long)
            mask[row, cols] = 1
            for key, values in seq.side.items():
                side[key][row, ..., cols] = torch.tensor(values, dtype=torch.long)
        prefix = first.prefix
        if padding != "right" or any(seq.prefix != prefix for seq in sequences):
            prefix = ()
        return cls(ids, mask, side, prefix, tuple(s.image_size for s in sequences))

    def to(self, device: torch.device) -> TokenBatch:
        """The ids and side inputs on `device` (copied without waiting, from pinned memory); the mask stays."""
        if device.type == "cpu":
            return self
        return replace(
            self,
            input_ids=pinned(self.input_ids).to(device, non_blocking=True),
            side={k: pinned(v).to(device, non_blocking=True) for k, v in self.side.items()},
            attention_mask=pinned(self.attention_mask),
        )


@dataclass(frozen=True)
class ImageInput:
    """The model's pixel tensors of one image (host, float32 pixels), dim 0 = this image's rows."""

    tensors: Mapping[str, torch.Tensor]
    size: Size  # (width, height) of the image they were made from

    def plus(self, noise: np.ndarray) -> ImageInput:
        """A copy with `noise` (the shape of `pixel_values`) added to `pixel_values`."""
        return ImageInput({**self.tensors, PIXELS: self.tensors[PIXELS] + torch.from_numpy(noise)}, self.size)


@dataclass(frozen=True)
class ImageBatch:
    """The model's image keyword arguments for a batch (host; pinned where CUDA is available)."""

    tensors: Mapping[str, torch.Tensor]
    sizes: tuple[Size, ...]

    def to(
        self, device: torch.device, dtype: torch.dtype, names: set[str] | None = None
    ) -> dict[str, torch.Tensor]:
        """The tensors (those in `names`, if given) on `device`; floating ones in `dtype`."""
        return {
            k: v.to(device, non_blocking=True).to(dtype) if v.is_floating_point() else v.to(device)
            for k, v in self.tensors.items()
            if names is None or k in names
        }

    def check(self, tokens: TokenBatch) -> None:
        """Each image has the size its sequence was laid out for (the image-token count may follow it)."""
        for laid_out, size in zip(tokens.sizes, self.sizes):
            if laid_out is not None and laid_out != size:
                raise LoganError(
                    f"a {size[0]} x {size[1]} image met a sequence laid out for {laid_out[0]} x {laid_out[1]}: this "
                    "family's number of image tokens follows the image size, so an image may not change size "
                    "after its prompt is built; keep the image size (LOGAN's noise and augmentations do)."
                )


def collate(images: Sequence[ImageInput]) -> ImageBatch:
    """The batch the family's own processor would make of these images, from their per-image tensors:
    tensors whose dim 0 is 1 for every image and whose dim 1 counts views ([1, views, ...]: LLaVA-NeXT,
    OneVision, Idefics3) are zero-padded along dim 1 to the longest, then concatenated; every other
    layout ([rows_i, ...]: Qwen2-VL's patches, InternVL's tiles, Gemma 3's crops) is concatenated."""
    tensors = {}
    for key in images[0].tensors:
        parts = [image.tensors[key] for image in images]
        if (
            parts[0].ndim > 2
            and all(p.shape[0] == 1 for p in parts)
            and len({p.shape[2:] for p in parts}) == 1
        ):
            views = max(p.shape[1] for p in parts)
            parts = [F.pad(p, (0, 0) * (p.ndim - 2) + (0, views - p.shape[1])) for p in parts]
        tensors[key] = pinned(torch.cat(parts, 0))
    return ImageBatch(tensors, tuple(image.size for image in images))


def pinned(tensor: torch.Tensor) -> torch.Tensor:
    """A page-locked copy for CUDA (its copy to the device does not wait for the device)."""
    return tensor.pin_memory() if torch.cuda.is_available() and not tensor.is_pinned() else tensor
