"""The narrow model interface every family implements: prompts in, per-token logits out.

An adapter encodes (instruction, optional continuation) around the image into an `Encoded` sequence,
turns one image's float pixels into an `ImageInput`, and returns logits over the real vocabulary at the
positions the engine asks for, for a `TokenBatch` and the `ImageBatch` that `collate` made of the images
(the typed contract: models/contract.py). The engine has no family branches; `Traits` say what it may do.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from logan.errors import LoganError
from logan.models.contract import PIXELS, Encoded, ImageBatch, ImageInput, Size, TokenBatch, Traits, collate
from logan.models.preprocess import ImageTransform

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from logan.config import ModelConfig

__all__ = ["Encoded", "ImageBatch", "ImageInput", "TokenBatch", "Traits", "VLMAdapter"]

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
AUTO = "auto"  # conv_mode: the family's own default (default_conv_mode)


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
    traits: Traits = Traits()
    default_conv_mode = "llava_v1"  # what conv_mode=auto means for this family

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        """Load the model `cfg` describes onto `device` in `dtype` (how the registry builds every adapter)."""

    @classmethod
    def check(cls, cfg: Any) -> None:
        """Validate the model settings before anything is written (e.g. that the folder exists)."""

    @classmethod
    def resolve_conv_mode(cls, conv_mode: str | None) -> str:
        """`target_model.conv_mode`, with `auto` (or unset) replaced by this family's default."""
        return cls.default_conv_mode if conv_mode in (None, AUTO) else conv_mode

    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Token ids of plain text, without special tokens."""

    @abstractmethod
    def decode(self, ids: list[int]) -> str:
        """Text of generated token ids."""

    @abstractmethod
    def forward_logits(self, tokens: TokenBatch, images: ImageBatch, positions: torch.Tensor) -> torch.Tensor:
        """Logits [B, P, real_vocab] at `positions` [B, P] of a right-padded batch, in float32 or in the
        model's dtype (exact either way: the engine's metrics cast to float32 as they read them).

        `tokens.prefix`: the token ids every row starts with, before the image; a family that keeps their
        keys (`inference.reuse_prefix`, see models/prefix.py) forwards only what follows them."""

    @abstractmethod
    def generate(self, tokens: TokenBatch, images: ImageBatch, max_new_tokens: int) -> list[list[int]]:
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

    def image_tokens(self, image_size: Size | None = None) -> int:
        """Number of image positions for an image of (width, height); fixed unless a family overrides it."""
        return self.n_image_tokens

    def layout_size(self, image_size: Size | None) -> Size | None:
        """The image size an encoded layout depends on: None for a fixed number of image tokens."""
        return None

    def encode(
        self,
        instruction: str,
        continuation: list[int] | None = None,
        *,
        text_after_image: bool = True,
        image_size: Size | None = None,
    ) -> Encoded:
        """Chunk-wise tokenisation around the image, as the original LLaVA does (BOS on chunk 0 only)."""
        before, after = self.template()
        ids = ([self.bos_token_id] if self.bos_token_id is not None else []) + (
            self.tokenize(before) if before else []
        )
        image_start = len(ids)
        n_image = self.image_tokens(image_size)
        ids += [self.image_token_id] * n_image
        if text_after_image or not self.traits.causal_image:
            text = after.format(instruction=instruction) if after else ""
            ids += self.tokenize(text) if text else []
        inst_end = len(ids)
        if text_after_image and continuation:
            ids += list(continuation)
        return Encoded(
            tuple(ids),
            tuple(range(image_start, image_start + n_image)),
            inst_end,
            image_size=self.layout_size(image_size),
        )

    def image_input(self, pixels: np.ndarray) -> ImageInput:
        """One image's float pixels (H x W x 3, 0-255) -> the model's pixel tensors (called on host threads)."""
        chw = torch.from_numpy(self.transform(pixels))
        return ImageInput({PIXELS: chw.unsqueeze(0)}, (pixels.shape[1], pixels.shape[0]))

    def image_batch(self, images: list[np.ndarray]) -> ImageBatch:
        """The batch of these float images (H x W x 3, 0-255), as the engine makes it."""
        return collate([self.image_input(image) for image in images])

    @property
    def image_std(self) -> np.ndarray:
        """Per-channel std of the pixel normalisation (normalized-space noise is scaled by it)."""
        return np.asarray(self.transform.image_std, dtype=np.float32)

    def prepare_inference(
        self, compile: bool = False, attn_implementation: str | None = None, reuse_prefix: bool = False
    ) -> None:
        """Speed options (`inference.compile`, `inference.attn_implementation`, `inference.reuse_prefix`);
        a family without them ignores them."""


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
    stacks = [
        m
        for m in model.modules()
        if isinstance(m, torch.nn.ModuleList) and len(m) > 1 and len({type(block) for block in m}) == 1
    ]
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
                    log.warning(
                        "torch.compile failed for %s (%s: %s); running eagerly from now on "
                        "(inference.compile=false skips the attempt)",
                        self.what,
                        type(cause).__name__,
                        reason,
                    )
            return fn(*args, **kwargs)

        return call


def token_id(tokenizer: PreTrainedTokenizerBase, token: str) -> int:
    """The id of one token of the tokenizer's vocabulary."""
    found = tokenizer.convert_tokens_to_ids(token)
    if isinstance(found, int):
        return found
    raise ValueError(f"the tokenizer has no id for {token!r}")


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
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise LoganError(f"dtype={name} is unknown; use auto, float32, bfloat16 or float16.")
    return table[name]
