"""The narrow model interface every family implements: prompts in, per-token logits out.

An adapter encodes (instruction, optional continuation) around the image into token ids, turns float
pixels into the model's pixel tensor, and returns float32 logits over the real vocabulary at the
positions the engine asks for. Part slices come from the true lengths of each encoded sequence.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from logan.errors import LoganError
from logan.models.preprocess import ImageTransform

log = logging.getLogger(__name__)

SYSTEM_HUMAN = (
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)
SYSTEM_USER = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
# conv_mode -> (text before the image, text after it with {instruction})
TEMPLATES: dict[str, tuple[str, str]] = {
    "llava_v1": (SYSTEM_HUMAN + " USER: ", "\n{instruction} ASSISTANT:"),
    "vicuna_v1": (SYSTEM_USER + " USER: ", "\n{instruction} ASSISTANT:"),
    "llava_hf": ("USER: ", "\n{instruction} ASSISTANT:"),
    "plain": ("", ""),
}


@dataclass(frozen=True)
class Encoded:
    """One token sequence: [prefix][image tokens][instruction][continuation]."""

    input_ids: tuple[int, ...]
    image_start: int
    n_image: int
    inst_end: int

    @property
    def image_end(self) -> int:
        return self.image_start + self.n_image

    def part_positions(self, part: str, compat: str = "logan") -> tuple[np.ndarray, np.ndarray | None]:
        """Logit positions (rows) scored for `part` and the token id each row predicts (None for `img`,
        whose rows are scored against their own clean argmax; -1 for a row past the last token).

        `img`: the outputs at the image-token positions (they depend on the prefix and the image only).
        Text parts, LOGAN's convention (`compat="logan"`): every token j of the part is scored from the row
        before it, j-1, so a part's score is what all of its tokens cost (its first token is predicted from
        the previous part's last row). The original's (`compat="original"`): the part's own rows s..e-1,
        row t predicting token t+1; its per-token loop then drops each part's last row for every metric
        but the Renyi divergences and aug-KL (`metrics/original.py`).
        """
        if part == "img":
            return np.arange(self.image_start, self.image_end), None
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


class VLMAdapter(ABC):
    """A loaded vision-language model behind LOGAN's narrow interface."""

    device: torch.device
    dtype: torch.dtype
    transform: ImageTransform
    real_vocab: int
    n_image_tokens: int
    image_token_id: int
    pad_token_id: int
    eos_token_id: int | None
    bos_token_id: int | None
    conv_mode: str
    # False for families whose image positions attend to text after them (prefix-LM): then an img-only run
    # keeps the text after the image instead of stopping the sequence there.
    causal_image_prefix: bool = True

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Validate the model settings before anything is written (e.g. that the folder exists)."""

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text, without special tokens."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of generated token ids."""

    @abstractmethod
    def forward_logits(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       pixel_values: torch.Tensor, positions: torch.Tensor,
                       prefix: tuple[int, ...] = ()) -> torch.Tensor:
        """Logits [B, P, real_vocab] at `positions` [B, P] of a right-padded batch, in float32 or in the
        model's dtype (exact either way: the engine's metrics cast to float32 as they read them).

        `prefix`: the token ids every row starts with, before the image; a family that keeps their keys
        (`inference.reuse_prefix`, see models/prefix.py) forwards only what follows them, so `positions`
        then lie after it (padding entries may be 0)."""

    @abstractmethod
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, pixel_values: torch.Tensor,
                 max_new_tokens: int) -> list[list[int]]:
        """Greedy continuations (token ids, EOS excluded) of a left-padded batch."""

    def fingerprint(self) -> dict[str, Any]:
        """What identifies this model's outputs (recorded in the run folder)."""
        return {"adapter": type(self).__name__, "conv_mode": self.conv_mode, "real_vocab": self.real_vocab}

    def set_token_ids(self, tokenizer: Any, lm_head_rows: int, vocab_size: int | None) -> None:
        """BOS / EOS / pad ids from the tokenizer and the real vocabulary (the tokenizer's base vocabulary,
        or `target_model.vocab_size`, never more than the LM head's rows)."""
        self.real_vocab = min(vocab_size or tokenizer.vocab_size, lm_head_rows)
        self.bos_token_id, self.eos_token_id = tokenizer.bos_token_id, tokenizer.eos_token_id
        pad = tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_id or 0)

    def template(self) -> tuple[str, str]:
        """(text before the image, text after it with {instruction}) for this model's conv_mode."""
        if self.conv_mode not in TEMPLATES:
            raise LoganError(
                f"target_model.conv_mode={self.conv_mode} is unknown; use one of {', '.join(TEMPLATES)}."
            )
        return TEMPLATES[self.conv_mode]

    def image_tokens(self, image_size: tuple[int, int] | None = None) -> int:
        """Number of image positions for an image of (width, height); fixed unless a family overrides it."""
        return self.n_image_tokens

    def encode(self, instruction: str, continuation: list[int] | None = None, *,
               text_after_image: bool = True, image_size: tuple[int, int] | None = None) -> Encoded:
        """Chunk-wise tokenisation around the image, as the original LLaVA does (BOS on chunk 0 only)."""
        before, after = self.template()
        ids = ([self.bos_token_id] if self.bos_token_id is not None else []) + (
            self.tokenize(before) if before else [])
        image_start = len(ids)
        n_image = self.image_tokens(image_size)
        ids += [self.image_token_id] * n_image
        if text_after_image or not self.causal_image_prefix:
            text = after.format(instruction=instruction) if after else ""
            ids += self.tokenize(text) if text else []
        inst_end = len(ids)
        if text_after_image and continuation:
            ids += list(continuation)
        return Encoded(tuple(ids), image_start, n_image, inst_end)

    def pixel_values(self, images: list[np.ndarray]) -> torch.Tensor:
        """Float pixels (H x W x 3, 0-255) -> the model's normalised pixel tensor on its device."""
        batch = np.stack([self.transform(image) for image in images])
        return torch.from_numpy(batch)

    def to_model(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels to the model's device (without waiting, from pinned memory) and dtype (there)."""
        return pixels.to(self.device, non_blocking=True).to(self.dtype)

    def prepare_inference(self, compile: bool = False, attn_implementation: str | None = None,
                          reuse_prefix: bool = False) -> None:
        """Speed options (`inference.compile`, `inference.attn_implementation`, `inference.reuse_prefix`);
        a family without them ignores them."""


def pad_batch(sequences: list[Encoded], pad_id: int, side: str = "right") -> tuple[torch.Tensor, torch.Tensor]:
    """Pad token sequences to one length; returns (input_ids, attention_mask)."""
    length = max(len(s.input_ids) for s in sequences)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for row, seq in enumerate(sequences):
        n = len(seq.input_ids)
        cols = slice(0, n) if side == "right" else slice(length - n, length)
        ids[row, cols] = torch.tensor(seq.input_ids, dtype=torch.long)
        mask[row, cols] = 1
    return ids, mask


def right_padded(mask: torch.Tensor) -> bool:
    """Whether a host-side attention mask is right padding only (each row: ones, then zeros).

    Under causal attention no real position of such a batch attends to a pad (pads come after it), so
    the mask can be dropped: the real positions' outputs are the same, and attention runs as plain
    causal attention (SDPA's flash / cuDNN kernels, no mask tensor, no host-device sync)."""
    if mask.device.type != "cpu":
        return False
    lengths = mask.sum(1, keepdim=True)
    return bool(torch.equal(mask.bool(), torch.arange(mask.shape[1]).unsqueeze(0) < lengths))


def compile_repeated_blocks(model: torch.nn.Module, dynamic: bool | None = True) -> int:
    """`torch.compile` each block of every stack of identical blocks (transformer layers): one compiled
    graph serves every layer of a stack, so compilation takes seconds, not minutes. Returns the count.
    If compiling fails, every block runs eagerly (`EagerFallback`).

    `dynamic` (torch.compile's): with dynamic shapes, batches of another size or length (a run's last
    batch, text parts of other lengths) reuse the one compilation. With static ones (None) a run's last
    batch recompiled: 6.8 s on an H200 at LLaVA-7B's shape, for the same speed (68.1 vs 68.7 fwd/s;
    `bench_engine.py --compile-shapes`)."""
    stacks = [m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 1
              and len({type(block) for block in m}) == 1]
    inner = {id(m) for stack in stacks for block in stack for m in block.modules()}
    fallback = EagerFallback("the transformer blocks")
    count = 0
    for stack in stacks:
        if id(stack) in inner:
            continue
        for block in stack:
            # what `block.compile(dynamic=dynamic)` does, with the eager fallback around it
            block._compiled_call_impl = fallback.compile(block._call_impl, dynamic=dynamic)
            count += 1
    return count


class EagerFallback:
    """Callables compiled together (a model's blocks, a metric reduction): once compiling one of them
    fails (no working Triton or C++ compiler, an unsupported operator), all of them run eagerly, after
    one warning. This is what torch's `torch._dynamo.config.suppress_errors = True` gives, without that
    process-wide setting, which would outlive LOGAN's call in the caller's process."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.failed = False

    def compile(self, fn: Callable[..., Any], **options: Any) -> Callable[..., Any]:
        """`torch.compile(fn, **options)`, which calls `fn` itself once a compilation has failed."""
        compiled = torch.compile(fn, **options)
        dynamo_error = importlib.import_module("torch._dynamo.exc").TorchDynamoException

        def call(*args: Any, **kwargs: Any) -> Any:
            if not self.failed:
                try:
                    return compiled(*args, **kwargs)
                except dynamo_error as exc:
                    self.failed = True
                    cause = getattr(exc, "inner_exception", None) or exc  # a backend's own error
                    reason = (str(cause).strip().splitlines() or [""])[0]
                    log.warning("torch.compile failed for %s (%s: %s); running eagerly from now on "
                                "(inference.compile=false skips the attempt)", self.what, type(cause).__name__,
                                reason)
            return fn(*args, **kwargs)

        return call


@contextlib.contextmanager
def hf_progress_bars_off() -> Iterator[None]:
    """transformers' "Loading weights" bar off while a checkpoint loads (LOGAN's log says what loads),
    then transformers' and huggingface_hub's switches as the caller had them: both are process-wide."""
    from transformers.utils import logging as hf_logging

    hub = importlib.import_module("huggingface_hub.utils.tqdm").progress_bar_states
    was, states = hf_logging.is_progress_bar_enabled(), dict(hub)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()
        hub.clear()
        hub.update(states)


def resolve_device(name: str) -> torch.device:
    """`auto`: the GPU of this process (cuda:LOCAL_RANK under torchrun / accelerate), else the CPU."""
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        from logan.distributed import local_device_index

        index = local_device_index()
        return torch.device("cuda", index) if index is not None else torch.device("cuda")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LoganError(f"device={name} is not a device name; use auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LoganError(f"device={name} asks for a GPU, but torch sees none here; use device=cpu.")
    return device


def resolve_compile(setting: bool | str, device: torch.device) -> bool:
    """`inference.compile`: true / false, or auto = on a GPU. Wherever a compilation fails (no working
    Triton, an unsupported operator), execution falls back to eager with a warning (`EagerFallback`)."""
    if setting != "auto":
        return bool(setting)
    return device.type == "cuda"


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            # float16, as the original runs: bfloat16's 8-bit mantissa re-rounds every activation, which
            # puts a divergence floor (~3e-3 per token on LLaVA-7B) above what stds below ~2.6 cause.
            return torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if name not in table:
        raise LoganError(f"dtype={name} is unknown; use auto, float32, bfloat16 or float16.")
    return table[name]
