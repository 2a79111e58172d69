"""Any decoder-only Hugging Face VLM: `AutoModelForImageTextToText` + its processor, image tokens in the
decoder's sequence (Qwen2-VL, Qwen2.5-VL, Idefics3 / SmolVLM, Gemma 3, LLaVA-OneVision, InternVL, ...).

    logan tune target_model=hf-vlm target_model.model_path=/models/Qwen2-VL-7B-Instruct \
        data.member_dataset=M.json data.nonmember_dataset=N.json path.output_dir=OUT
    logan tune target_model=auto target_model.model_path=/models/gemma-3-4b-it ...

`target_model=auto` reads config.json's model_type and takes the dedicated adapter where one exists
(llava -> llava-hf, llava_next -> llava-next, an original liuhaotian folder -> llava-v1.5-7b), this one
otherwise. Models whose image never enters the decoder's sequence (encoder-decoder models; cross-attention
models such as mllama) are refused: `img` scores the outputs at the image-token positions, and they have
none. A checkpoint's own Python code runs only with `target_model.trust_remote_code=true`.

Everything family-specific comes from the checkpoint's processor:
- the prompt is its chat template (the instruction as the user turn after the image, generation prompt
  on); the token layout is what the processor makes of that prompt for an image of the given size (cached
  per size: the number of image tokens may follow the size, as for tiles, dynamic resolution, pan-and-scan);
- `img` is where `input_ids == image_token_id` (gaps allowed), `inst` the tokens after the last image token
  up to the end of the prompt, `desp` the continuation, as for LLaVA; token-aligned outputs of the
  processor (`token_type_ids`, `mm_token_type_ids`) go to the model as side inputs, and families with
  3-D rotary positions (`get_rope_index`: Qwen2-VL, Qwen2.5-VL) get them computed once per sequence on
  the host;
- pixels go through the family's own image processor, made to run in float (`float_image_processor`):
  noise below one grey level survives and std 0 is exactly the clean image. Processors are loaded with
  their PIL backend and without their video processor, so neither torchvision nor video code is needed
  and the pixels are the same on every machine.
At load, LOGAN's forward (gathered positions, LM head, real vocabulary) is compared once with the model's
own on one image; a model whose logits differ (a post-head scaling LOGAN does not apply) is refused.
"""

from __future__ import annotations

import inspect
import json
import logging
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.contract import PIXELS, Encoded, ImageInput, Size, TokenBatch, Traits, collate
from logan.models.hf import POSITIONS, HFAdapter, load_checked
from logan.models.preprocess import float_image_processor
from logan.models.registry import get_model_factory, register_model

if TYPE_CHECKING:
    from transformers import ProcessorMixin

log = logging.getLogger(__name__)

CHAT_TEMPLATE = "chat_template"  # conv_mode: the processor's chat template
# image features reach the text decoder through cross-attention layers, not as positions of its sequence
CROSS_ATTENTION = {"mllama": "Llama 3.2 Vision", "idefics": "IDEFICS (v1)", "blip": "BLIP"}
PREFIX_LM = {"paligemma"}  # image and prompt attend to each other: the image rows see the text after them
DEDICATED = {"llava": "llava-hf", "llava_next": "llava-next"}  # model_type -> the family's own adapter
SIDE_KEYS = ("input_ids", "attention_mask")  # token-aligned processor outputs that are not side inputs
CHECK_SIZE = (64, 48)  # (width, height) of the image the load-time checks run on
LOGIT_TOLERANCE = {torch.float32: 1e-3, torch.float16: 5e-2, torch.bfloat16: 1e-1}  # x max |logit|, + 1e-3


def model_folder(cfg: ModelConfig) -> Path:
    if not cfg.model_path:
        raise LoganError("target_model.model_path is not set: give the folder of a Hugging Face model.")
    folder = Path(cfg.model_path).expanduser()
    if not (folder / "config.json").is_file():
        raise LoganError(
            f"target_model.model_path={folder} is not a Hugging Face model folder (no config.json there)."
        )
    return folder


def read_config(cfg: ModelConfig) -> Any:
    """The folder's transformers config (config.json only, no weights), or one error."""
    from transformers import AutoConfig

    folder = model_folder(cfg)
    try:
        return AutoConfig.from_pretrained(folder, trust_remote_code=cfg.trust_remote_code)
    except ValueError as error:
        if "trust_remote_code" in str(error):
            raise LoganError(
                f"{folder} needs its own Python code to load; if you trust it, set "
                "target_model.trust_remote_code=true."
            ) from None
        raise LoganError(
            f"transformers cannot read {folder / 'config.json'}: {str(error).splitlines()[0]}"
        ) from None


def image_outside_sequence(config: Any) -> str | None:
    """Why `img` has no meaning for a model (its transformers config), or None when its image tokens sit in
    the decoder's sequence. Flags as transformers fills them in (a BLIP-2 with a T5 text model does not
    write is_encoder_decoder into config.json: it is the T5 default)."""
    text = config.get_text_config(decoder=True)
    if getattr(config, "is_encoder_decoder", False) or getattr(text, "is_encoder_decoder", False):
        return (
            "an encoder-decoder model: the image is read by the encoder and the decoder's sequence never "
            "holds it"
        )
    if (
        config.model_type in CROSS_ATTENTION
        or getattr(text, "cross_attention_layers", None)
        or getattr(text, "add_cross_attention", False)
    ):
        return (
            "a cross-attention model: the decoder attends to the image from separate layers and no position "
            "of its sequence holds it"
        )
    return None


def auto_family(cfg: ModelConfig) -> str:
    """The adapter `target_model=auto` takes for a folder: its model_type's dedicated one, else hf-vlm."""
    raw = json.loads((model_folder(cfg) / "config.json").read_text())
    if "mm_vision_tower" in raw and "text_config" not in raw:
        return "llava-v1.5-7b"  # an original liuhaotian checkpoint
    return DEDICATED.get(raw.get("model_type"), "hf-vlm")


def processor_class(folder: Path, model_type: str) -> type[ProcessorMixin] | None:
    """The transformers processor class the folder names (or its model_type's), None if not in transformers."""
    import transformers
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        path = folder / name
        found = json.loads(path.read_text()).get("processor_class") if path.is_file() else None
        if found:
            return getattr(transformers, found, None)
    found = PROCESSOR_MAPPING_NAMES.get(model_type)
    return getattr(transformers, found, None) if found else None


def image_only(processor_cls: type[ProcessorMixin]) -> type[ProcessorMixin]:
    """`processor_cls` without its video processor (video processors need torchvision; LOGAN reads images)."""
    if "video_processor" not in processor_cls.get_attributes():
        return processor_cls

    base: Any = processor_cls  # a class known at run time only

    class ImageOnly(base):
        @classmethod
        def get_attributes(cls) -> list[str]:
            return [a for a in processor_cls.get_attributes() if a != "video_processor"]

    ImageOnly.__name__ = ImageOnly.__qualname__ = processor_cls.__name__
    return ImageOnly


def load_processor(folder: Path, model_type: str, trust_remote_code: bool) -> Any:
    """The folder's processor with its PIL image processor (the same pixels with or without torchvision)."""
    from transformers import AutoProcessor

    cls = processor_class(folder, model_type)
    problem: Exception | None = None
    if cls is not None:
        plain = image_only(cls)
        extra: dict[str, Any] = {"video_processor": None} if plain is not cls else {}
        choices: tuple[dict[str, Any], ...] = ({"backend": "pil"}, {})
        for options in choices:  # the PIL image processor wherever the family has one
            try:
                return plain.from_pretrained(folder, **options, **extra)
            except (ImportError, ValueError, KeyError, TypeError, AttributeError) as error:
                problem = problem or error
    try:
        return AutoProcessor.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as error:  # noqa: BLE001 - one user-facing line
        problem = problem or error
    if "torchvision" in str(problem).lower():
        raise LoganError(
            f"the image processor of {folder} exists only for torchvision; install a torchvision "
            "that matches your torch."
        ) from None
    raise LoganError(f"cannot load the processor of {folder}: {str(problem).splitlines()[0]}") from None


@register_model("hf-vlm")
class HFVLM(HFAdapter):
    """Any decoder-only HF image-text-to-text model; the prompt from the processor's chat template."""

    default_conv_mode = CHAT_TEMPLATE
    image_names: set[str]  # the image tensors the model's forward takes (its parameter names)

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        config = read_config(cfg)
        why = image_outside_sequence(config)
        if why:
            raise LoganError(
                f"{cfg.model_path} holds a '{config.model_type}' model, {why}: LOGAN's img part (the "
                "outputs at the image tokens) has no meaning there."
            )
        if cls.resolve_conv_mode(cfg.conv_mode) != CHAT_TEMPLATE:
            raise LoganError(
                f"target_model.conv_mode={cfg.conv_mode} is a fixed template of the original checkpoints; "
                f"hf-vlm renders the processor's chat template: use conv_mode={CHAT_TEMPLATE} or auto."
            )

    def __init__(self, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> None:
        from transformers import AutoModelForImageTextToText

        self.check(cfg)
        folder, config = model_folder(cfg), read_config(cfg)
        self.model, device = load_checked(
            AutoModelForImageTextToText,
            folder,
            cfg,
            device,
            dtype,
            config.model_type,
            trust_remote_code=cfg.trust_remote_code,
        )
        self.path, self.device, self.dtype, self.conv_mode = folder, device, dtype, CHAT_TEMPLATE
        self.processor = load_processor(folder, config.model_type, cfg.trust_remote_code)
        self.processor.image_processor = float_image_processor(self.processor.image_processor)
        self.tokenizer = self.processor.tokenizer
        self.model_type, self.processor_kwargs = config.model_type, dict(cfg.processor_kwargs or {})
        self.image_token_id = self._image_token_id()
        merged = self.processor._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs)[
            "images_kwargs"
        ]
        self.images_kwargs = {
            **{k: v for k, v in merged.items() if k != "return_tensors"},
            **self.processor_kwargs,
            "input_data_format": "channels_last",
        }
        self.image_names = set(inspect.signature(self.model.model.forward).parameters)
        rope = getattr(self.model.model, "get_rope_index", None)
        self._rope = (
            rope if rope is not None and "mm_token_type_ids" in inspect.signature(rope).parameters else None
        )
        rows = self.model.lm_head.out_features
        self.real_vocab = min(cfg.vocab_size or len(self.tokenizer), rows)  # len(): added special tokens too
        self.bos_token_id, self.eos_token_id = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        self._stops = self._stop_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else (self.eos_token_id or 0)
        self._encode_cached = lru_cache(maxsize=8192)(self._encode)
        self._layout = lru_cache(maxsize=1024)(self._layout_of)
        self.traits = self._traits()
        self._verify()
        log.info(
            "loaded %s (%s via hf-vlm, %s, %s): vocabulary %d of %d rows; %s",
            folder,
            self.model_type,
            device,
            str(dtype).replace("torch.", ""),
            self.real_vocab,
            rows,
            self.traits,
        )

    def fingerprint(self) -> dict:
        return {
            **super().fingerprint(),
            "model_type": self.model_type,
            "image_processor": type(self.processor.image_processor).__name__,
            "processor_kwargs": self.processor_kwargs,
        }

    def _image_token_id(self) -> int:
        config = self.model.config
        for name in ("image_token_id", "image_token_index"):
            if getattr(config, name, None) is not None:
                return int(getattr(config, name))
        token = getattr(self.processor, "image_token_id", None)
        if token is None:
            raise LoganError(
                f"{self.path}: neither the config nor the processor names an image token; LOGAN "
                "cannot tell which positions hold the image."
            )
        return int(token)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        return self._stops

    def _stop_ids(self) -> tuple[int, ...]:
        """EOS and the end-of-turn ids the checkpoint's generation config stops at."""
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        configured = configured if isinstance(configured, list) else [configured]
        return tuple(dict.fromkeys(i for i in [self.eos_token_id, *configured] if i is not None))

    def _traits(self) -> Traits:
        """What the engine may do with this family, from its config and what its processor makes."""
        text = self.model.config.get_text_config(decoder=True)
        _, _, side, _ = self._layout(self.prompt("Describe."), CHECK_SIZE)
        pixels = self.image_input(np.zeros((CHECK_SIZE[1], CHECK_SIZE[0], 3), np.float32)).tensors[PIXELS]
        reasons = []
        if self.language_model() is None:
            reasons.append("its language model is not model.model.language_model or .text_model")
        if "token_type_ids" in side:
            reasons.append("its image blocks attend both ways (token_type_ids)")
        if any(kind != "full_attention" for kind in getattr(text, "layer_types", None) or []):
            reasons.append("it has sliding-window attention layers")
        if self.model_type in PREFIX_LM:
            reasons.append("image and prompt attend to each other")
        self._no_prefix_reason = "; ".join(reasons)
        channels = -3 if pixels.ndim >= 3 and pixels.shape[-3] == 3 else None
        return Traits(
            causal_image=self.model_type not in PREFIX_LM,
            keeps_prefix=not reasons,
            fixed_image_tokens=False,
            channel_axis=channels,
        )

    @property
    def image_std(self) -> np.ndarray:
        return np.asarray(self.processor.image_processor.image_std, dtype=np.float32).reshape(-1)

    def prompt(self, instruction: str) -> str:
        """The chat template's rendering of one user turn: the image, then the instruction."""
        template = self.processor.chat_template or self.tokenizer.chat_template
        if not template:
            raise LoganError(f"{self.path} has no chat template: LOGAN cannot build its prompt.")
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": instruction}]}]
        return self.tokenizer.apply_chat_template(
            messages, chat_template=template, add_generation_prompt=True, tokenize=False
        )

    def _layout_of(self, prompt: str, size: Size) -> tuple[tuple[int, ...], tuple[int, ...], dict, Any]:
        """(ids, image positions, token-aligned side inputs, image_grid_thw) the processor makes of `prompt`
        and an image of `size` (the layout depends on the size only, so a blank image stands in)."""
        width, height = size
        bos = self.tokenizer.bos_token
        out = self.processor(
            images=[[np.zeros((height, width, 3), np.float32)]],
            text=[prompt],
            return_tensors="pt",
            add_special_tokens=not (bos and prompt.startswith(bos)),  # the template has it
            input_data_format="channels_last",
            **self.processor_kwargs,
        )
        ids = tuple(out["input_ids"][0].tolist())
        image = tuple(int(i) for i in np.flatnonzero(np.asarray(ids) == self.image_token_id))
        if not image:
            raise LoganError(
                f"the processor of {self.path} put no image token ({self.image_token_id}) into the prompt "
                f"{prompt!r}; its chat template does not place the image."
            )
        side = {
            k: tuple(v[0].tolist())
            for k, v in out.items()
            if k not in SIDE_KEYS
            and isinstance(v, torch.Tensor)
            and v.shape == out["input_ids"].shape
            and k in self.image_names
        }
        return ids, image, side, out.get("image_grid_thw")

    def encode(
        self,
        instruction: str,
        continuation: list[int] | None = None,
        *,
        text_after_image: bool = True,
        image_size: Size | None = None,
    ) -> Encoded:
        if image_size is None:
            raise LoganError("hf-vlm lays out each image by its size: pass image_size=(width, height).")
        return self._encode_cached(
            instruction, tuple(continuation or ()), text_after_image, tuple(image_size)
        )

    def _encode(
        self, instruction: str, continuation: tuple[int, ...], text_after_image: bool, size: Size
    ) -> Encoded:
        ids, image, side, grid = self._layout(self.prompt(instruction), size)
        end = len(ids) if text_after_image or not self.traits.causal_image else image[-1] + 1
        extra = continuation if text_after_image else ()
        ids, side = ids[:end] + extra, {k: v[:end] + (0,) * len(extra) for k, v in side.items()}
        if self._rope is not None and "mm_token_type_ids" in side:  # 3-D rotary positions, once per sequence
            positions, _ = self._rope(
                input_ids=torch.tensor([ids]),
                mm_token_type_ids=torch.tensor([side["mm_token_type_ids"]]),
                image_grid_thw=grid,
            )
            side[POSITIONS] = tuple(tuple(row) for row in positions[:, 0].tolist())
        return Encoded(ids, image, end, side, size)

    def image_input(self, pixels: np.ndarray) -> ImageInput:
        out = self.processor.image_processor(images=[pixels], return_tensors="pt", **self.images_kwargs)
        tensors = {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}
        return ImageInput(tensors, (pixels.shape[1], pixels.shape[0]))

    def _verify(self) -> None:
        """Float input moves the pixels (nothing rounds it away), and LOGAN's forward gives the model's own
        logits on one image (nothing after the LM head is missed)."""
        width, height = CHECK_SIZE
        grey = np.broadcast_to(
            np.linspace(60, 190, width, dtype=np.float32)[None, :, None], (height, width, 3)
        ).copy()
        moved: torch.Tensor | float
        try:
            moved = (
                (self.image_input(grey + 0.25).tensors[PIXELS] - self.image_input(grey).tensors[PIXELS])
                .abs()
                .max()
            )
        except ValueError as error:
            moved, problem = 0.0, str(error).splitlines()[0]
        else:
            problem = "it rounds to whole grey levels"
        if not float(moved) > 0:
            raise LoganError(
                f"the image processor of {self.path} ({type(self.processor.image_processor).__name__}) "
                f"does not take float pixels ({problem}): LOGAN's noise below one grey level would be "
                "lost; this family is not supported."
            )
        prompt = self.prompt("Describe this image.")
        encoded = self.encode("Describe this image.", image_size=CHECK_SIZE)
        images = collate([self.image_input(grey)])
        positions = torch.arange(len(encoded.input_ids))[None]
        bos = self.tokenizer.bos_token
        inputs = self.processor(
            images=[[grey]],
            text=[prompt],
            return_tensors="pt",
            input_data_format="channels_last",
            add_special_tokens=not (bos and prompt.startswith(bos)),
            **self.processor_kwargs,
        )
        names = set(inspect.signature(self.model.forward).parameters)
        with torch.inference_mode():
            theirs = self.model(
                **{
                    k: v.to(self.device, self.dtype) if v.is_floating_point() else v.to(self.device)
                    for k, v in inputs.items()
                    if k in names
                },
                use_cache=False,
            ).logits
        theirs = theirs[..., : self.real_vocab].float().cpu()
        allowed = LOGIT_TOLERANCE.get(self.dtype, 1e-1) * float(theirs.abs().max()) + 1e-3
        # some families soft-cap their logits as their text config says (Gemma 2), some never do (Gemma 3)
        cap = getattr(self.model.config.get_text_config(decoder=True), "final_logit_softcapping", None)
        errors = []
        for candidate in dict.fromkeys([None, cap]):
            self.logit_softcap = candidate
            ours = self.forward_logits(TokenBatch.build([encoded], self.pad_token_id), images, positions)
            errors.append(float((ours.float().cpu() - theirs).abs().max()))
            if errors[-1] <= allowed:
                return
        raise LoganError(
            f"{self.path}: LOGAN's forward differs from the model's own by {min(errors):.3g} in the logits "
            f"(allowed {allowed:.3g}); this '{self.model_type}' model scales or post-processes its logits "
            "in a way hf-vlm does not reproduce."
        )


@register_model("auto")
class AutoVLM(HFVLM):
    """Any Hugging Face model folder: the dedicated adapter of its model_type, hf-vlm otherwise."""

    @classmethod
    def check(cls, cfg: ModelConfig) -> None:
        get_model_factory(auto_family(cfg)).check(cfg)

    def __new__(cls, cfg: ModelConfig, device: torch.device, dtype: torch.dtype) -> Any:
        # an instance of another class (the dedicated adapter): Python does not call AutoVLM.__init__ on it
        name = auto_family(cfg)
        log.info("target_model=auto: adapter %s for %s", name, cfg.model_path)
        return get_model_factory(name)(cfg, device, dtype)
