"""Original-format LLaVA-1.5 (liuhaotian layout) assembled on transformers, on tiny format-exact checkpoints.

The tests write what a download holds, with the real key names and file layouts: a full checkpoint
(config.json with mm_* keys, sharded .bin + index or sharded safetensors + index, tokenizer.model), a
projector-only pretrain folder (mm_projector.bin + config.json) with a base Llama folder, and CLIP
towers (a full CLIPModel folder in the legacy `vision_model.*` layout, or a CLIPVisionModel folder). The
tokenizer is a SentencePiece byte-fallback BPE trained here. Parity is against a hand-written forward of
the original LLaVA: CLIP hidden_states[-2][:, 1:] -> Linear-GELU-Linear -> spliced into Llama's embeddings.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from logan.api import run
from logan.compose import compose
from logan.config import ModelConfig
from logan.data.synthetic import make_split, vocabulary
from logan.errors import LoganError
from logan.models.base import TEMPLATES
from logan.models.contract import ImageBatch, TokenBatch
from logan.models.llava_original import image_token_count
from logan.models.preprocess import ImageTransform
from logan.models.registry import check_model, load_model

spm = pytest.importorskip("sentencepiece")
transformers = pytest.importorskip("transformers")

FULL = "llava-v1.5-7b"
PRETRAIN = "llava-v1.5-mlp2x-336px-pretrain-vicuna-7b-v1.5"
INSTRUCTION = "Describe this image concisely."
IMAGE, PATCH, CLIP_HIDDEN = 16, 4, 24          # a tiny tower: (16/4)^2 = 16 image tokens
N_IMAGE = (IMAGE // PATCH) ** 2
LLAMA = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 4, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "hidden_act": "silu",
         "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False,
         "rope_theta": 10000.0, "initializer_range": 0.2}
CLIP = {"image_size": IMAGE, "patch_size": PATCH, "hidden_size": CLIP_HIDDEN, "intermediate_size": 48,
        "num_hidden_layers": 3, "num_attention_heads": 4, "projection_dim": 16, "hidden_act": "quick_gelu",
        "initializer_range": 0.2}
MM = {"mm_vision_tower": "openai/clip-vit-large-patch14-336", "mm_hidden_size": CLIP_HIDDEN,
      "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
      "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "mm_patch_merge_type": "flat",
      "image_aspect_ratio": "pad", "tokenizer_model_max_length": 2048, "tokenizer_padding_side": "right"}
CLIP_TEXT = {"hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32,
             "vocab_size": 40, "bos_token_id": 0, "eos_token_id": 1, "pad_token_id": 1}
CAPTION = "a small red circle on the left on a blue background."
TOKENIZER_CONFIG = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                    "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<unk>",
                    "legacy": False, "model_max_length": 2048, "padding_side": "right"}


# ---------------------------------------------------------------------------------------------- writers
def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))


def write_shards(folder: Path, state: dict[str, torch.Tensor], n: int, fmt: str) -> None:
    """HF-style shards + index: pytorch_model-0000X-of-0000N.bin or model-0000X-of-0000N.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    keys = list(state)
    weight_map = {}
    for i in range(n):
        part = {k: state[k].clone().contiguous() for k in keys[i::n]}
        if fmt == "bin":
            name = f"pytorch_model-{i + 1:05d}-of-{n:05d}.bin"
            torch.save(part, folder / name)
        else:
            name = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
            save_file(part, folder / name, metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    index = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
    size = sum(t.numel() * t.element_size() for t in state.values())
    write_json(folder / index, {"metadata": {"total_size": size}, "weight_map": weight_map})


def write_tokenizer(folder: Path, model: bytes) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(model)
    write_json(folder / "tokenizer_config.json", TOKENIZER_CONFIG)


class Tiny:
    """One set of tiny tensors and the folders written from them."""

    def __init__(self, root: Path, sp_model: bytes) -> None:
        from transformers import CLIPConfig, CLIPModel, LlamaConfig, LlamaForCausalLM

        self.root, self.sp_model = root, sp_model
        self.sp = spm.SentencePieceProcessor(model_proto=sp_model)
        self.vocab = self.sp.get_piece_size()
        self.llama = {**LLAMA, "vocab_size": self.vocab}
        torch.manual_seed(0)
        self.llm = LlamaForCausalLM(LlamaConfig(**self.llama)).state_dict()
        clip = CLIPModel(CLIPConfig(vision_config=CLIP, text_config=CLIP_TEXT, projection_dim=16))
        self.clip_full = clip.state_dict()    # vision_model.*, text_model.*, projections, logit_scale
        self.tower = {k[len("vision_model."):]: v for k, v in self.clip_full.items()
                      if k.startswith("vision_model.")}
        gen = torch.Generator().manual_seed(1)
        self.projector = {
            "model.mm_projector.0.weight": torch.randn(32, CLIP_HIDDEN, generator=gen) * 0.3,
            "model.mm_projector.0.bias": torch.randn(32, generator=gen) * 0.1,
            "model.mm_projector.2.weight": torch.randn(32, 32, generator=gen) * 0.3,
            "model.mm_projector.2.bias": torch.randn(32, generator=gen) * 0.1,
        }
        self.clip_dir = self.write_clip(root / "clip-vit", self.clip_full)

    def llava_config(self, **changes) -> dict:
        return {"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava", **self.llama, **MM,
                "torch_dtype": "float32", "transformers_version": "4.31.0", "use_mm_proj": True, **changes}

    def write_clip(self, folder: Path, state: dict[str, torch.Tensor]) -> Path:
        """openai/clip-vit-large-patch14-336 layout: a full CLIPModel config and pytorch_model.bin."""
        from transformers import CLIPConfig

        config = CLIPConfig(vision_config=CLIP, text_config=CLIP_TEXT, projection_dim=16)
        write_json(folder / "config.json", config.to_dict())
        old_buffer = {"vision_model.embeddings.position_ids": torch.arange(N_IMAGE + 1)[None]}  # older files
        torch.save({**state, **old_buffer}, folder / "pytorch_model.bin")
        transform = ImageTransform(shortest_edge=IMAGE, crop_hw=(IMAGE, IMAGE))
        write_json(folder / "preprocessor_config.json", transform.to_config())
        return folder

    def write_full(self, name: str, fmt: str = "bin", embed_tower: bool = False,
                   projector: dict | None = None, **config) -> Path:
        folder = self.root / name
        state = {**self.llm, **(projector or self.projector)}
        if fmt == "bin":  # checkpoints of transformers 4.31 could still carry the rotary buffer
            state["model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(4)
        if embed_tower:
            embedded = "model.vision_tower.vision_tower.vision_model."
            state.update({embedded + k: v for k, v in self.tower.items()})
        write_shards(folder, state, 2 if fmt == "bin" else 3, fmt)
        write_json(folder / "config.json", self.llava_config(**config))
        write_tokenizer(folder, self.sp_model)
        return folder


@pytest.fixture(scope="module")
def sp_model() -> bytes:
    corpus = [text.replace("\n", " ") for pair in TEMPLATES.values() for text in pair if text]
    corpus = (corpus + vocabulary() + [INSTRUCTION, CAPTION]) * 8
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(  # Llama-like: byte-fallback BPE, identity normalisation, dummy prefix
        sentence_iterator=iter(corpus), model_writer=out, model_type="bpe", vocab_size=320,
        byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, normalization_rule_name="identity",
        remove_extra_whitespaces=False, split_digits=True, allow_whitespace_only_pieces=True,
        hard_vocab_limit=False, character_coverage=1.0, num_threads=1, minloglevel=2)
    return out.getvalue()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, sp_model) -> Tiny:
    return Tiny(tmp_path_factory.mktemp("llava_original"), sp_model)


@pytest.fixture(scope="module")
def full_bin(tiny) -> Path:
    return tiny.write_full("llava-v1.5-7b-bin", "bin")


def settings(name: str, **values) -> ModelConfig:
    """The target_model group as the packaged YAML gives it, plus overrides."""
    group = compose([f"target_model={name}"])["target_model"]
    return ModelConfig(**{**group, **values})


def load(cfg: ModelConfig):
    return load_model(cfg, torch.device("cpu"), torch.float32)


# ------------------------------------------------------------------------------------------- reference
def reference_logits(tiny: Tiny, llm: dict, tower: dict, projector: dict, ids: list[int], image_start: int,
                     pixels: torch.Tensor) -> torch.Tensor:
    """The original LLaVA forward, by hand from the raw tensors."""
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    clip = CLIPVisionModel(CLIPVisionConfig(**CLIP)).eval()
    clip.load_state_dict(tower, strict=True)
    lm = LlamaForCausalLM(LlamaConfig(**tiny.llama)).eval()
    lm.load_state_dict(llm, strict=True)
    p = {k[len("model.mm_projector."):]: v.float() for k, v in projector.items()}
    with torch.no_grad():
        feats = clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]
        if "weight" in p:  # mm_projector_type=linear
            feats = F.linear(feats, p["weight"], p["bias"])
        else:  # mlp2x_gelu: Linear, GELU, Linear
            feats = F.linear(F.gelu(F.linear(feats, p["0.weight"], p["0.bias"])), p["2.weight"], p["2.bias"])
        text = torch.tensor([[i if i < tiny.vocab else 0 for i in ids]])
        embeds = lm.model.embed_tokens(text)
        embeds[0, image_start:image_start + feats.shape[1]] = feats[0]
        return lm(inputs_embeds=embeds).logits[0]


def adapter_logits(model, encoded, pixels: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(len(encoded.input_ids))[None]
    images = ImageBatch({"pixel_values": pixels}, ((0, 0),))
    return model.forward_logits(TokenBatch.build([encoded], model.pad_token_id), images, positions)[0]



def original_tokens(sp, before: str, after: str) -> list[int]:
    """llava.mm_utils.tokenizer_image_token: each chunk tokenised alone, BOS on the first chunk only."""
    chunks = [sp.encode(chunk) for chunk in (before + "<image>" + after).split("<image>")]
    return [1] + chunks[0] + [-200] + chunks[1]


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (8, IMAGE, 3)).astype(np.float32)  # 8 high, 16 wide: padded to a square


# ---------------------------------------------------------------------------------------------- tests
def test_full_checkpoint_parity_bin_shards(tiny, full_bin, image) -> None:
    model = load(settings(FULL, model_path=str(full_bin), vision_tower=str(tiny.clip_dir)))
    assert model.real_vocab == tiny.vocab and model.image_token_id == tiny.vocab
    assert model.model.lm_head.out_features == -(-(tiny.vocab + 2) // 64) * 64
    assert model.tokenizer.convert_tokens_to_ids(["<image>", "<pad>"]) == [tiny.vocab, tiny.vocab + 1]
    continuation = tiny.sp.encode("a small red circle")
    encoded = model.encode(INSTRUCTION, continuation)
    pixels = model.image_batch([image]).tensors["pixel_values"]
    got = adapter_logits(model, encoded, pixels)
    want = reference_logits(tiny, tiny.llm, tiny.tower, tiny.projector, list(encoded.input_ids),
                            encoded.image_start, pixels)
    assert got.shape == (len(encoded.input_ids), tiny.vocab)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # mean-colour padding (image_aspect_ratio=pad): the 4 rows above the 8-row image are the fill colour
    mean, std = np.array(model.transform.image_mean), np.array(model.transform.image_std)
    fill = (np.array([int(m * 255) for m in mean]) / 255 - mean) / std
    np.testing.assert_allclose(pixels[0, :, :4, :].numpy(),
                               np.broadcast_to(fill[:, None, None], (3, 4, IMAGE)), atol=1e-5)
    generated = model.generate(TokenBatch.build([model.encode(INSTRUCTION)], model.pad_token_id, "left"),
                               model.image_batch([image]), 3)
    assert len(generated[0]) <= 3 and all(0 <= t < tiny.vocab for t in generated[0])


def test_safetensors_shards_with_embedded_tower(tiny, image) -> None:
    """The embedded tower wins over the CLIP folder's weights (here made different on purpose)."""
    folder = tiny.write_full("llava-v1.5-7b-st", "safetensors", embed_tower=True)
    other = {k: v + 0.5 if v.is_floating_point() else v for k, v in tiny.clip_full.items()}
    clip_dir = tiny.write_clip(tiny.root / "clip-other", other)
    model = load(settings(FULL, model_path=str(folder), vision_tower=str(clip_dir)))
    encoded = model.encode(INSTRUCTION)
    pixels = model.image_batch([image]).tensors["pixel_values"]
    want = reference_logits(tiny, tiny.llm, tiny.tower, tiny.projector, list(encoded.input_ids),
                            encoded.image_start, pixels)
    torch.testing.assert_close(adapter_logits(model, encoded, pixels), want, rtol=1e-5, atol=1e-5)


def test_linear_projector(tiny, image) -> None:
    gen = torch.Generator().manual_seed(2)
    projector = {"model.mm_projector.weight": torch.randn(32, CLIP_HIDDEN, generator=gen) * 0.3,
                 "model.mm_projector.bias": torch.randn(32, generator=gen) * 0.1}
    folder = tiny.write_full("llava-linear", "bin", projector=projector, mm_projector_type="linear")
    model = load(settings(FULL, model_path=str(folder), vision_tower=str(tiny.clip_dir)))
    encoded = model.encode(INSTRUCTION)
    pixels = model.image_batch([image]).tensors["pixel_values"]
    want = reference_logits(tiny, tiny.llm, tiny.tower, projector, list(encoded.input_ids),
                            encoded.image_start, pixels)
    torch.testing.assert_close(adapter_logits(model, encoded, pixels), want, rtol=1e-5, atol=1e-5)


def test_image_tokens_and_part_slices_follow_the_original_tokenisation(tiny, full_bin) -> None:
    assert image_token_count(336, 14) == 576 and image_token_count(336, 14, "full") == 577
    model = load(settings(FULL, model_path=str(full_bin), vision_tower=str(tiny.clip_dir)))
    assert model.n_image_tokens == model.image_tokens((640, 480)) == N_IMAGE
    description = tiny.sp.encode("a large blue ring")
    encoded = model.encode(INSTRUCTION, description)
    before, after = TEMPLATES["llava_v1"]
    original = original_tokens(tiny.sp, before, after.format(instruction=INSTRUCTION))
    split = original.index(-200)
    ids = list(encoded.input_ids)
    assert ids[:encoded.image_start] == original[:split]
    assert ids[encoded.image_start:encoded.image_end] == [model.image_token_id] * N_IMAGE
    assert ids[encoded.image_end:encoded.inst_end] == original[split + 1:]
    # the chunk after the image starts with SentencePiece's dummy prefix, then the newline byte
    assert tiny.sp.id_to_piece(ids[encoded.image_end:encoded.image_end + 2]) == ["▁", "<0x0A>"]
    inst = original[split + 1:]
    expected = {"inst": inst, "desp": description, "inst_desp": inst + description}
    starts = {"inst": encoded.image_end, "desp": encoded.inst_end, "inst_desp": encoded.image_end}
    for part, tokens in expected.items():
        positions, targets = encoded.part_positions(part)
        assert list(targets) == tokens, part
        assert list(positions + 1) == list(range(starts[part], starts[part] + len(tokens))), part
    positions, targets = encoded.part_positions("img")
    assert targets is None and [ids[p] for p in positions] == [model.image_token_id] * N_IMAGE
    assert model.decode(description) == "a large blue ring"


def corrupt(tiny: Tiny, source: Path, name: str, shard: int, edit) -> Path:
    folder = tiny.root / name
    shutil.copytree(source, folder)
    path = folder / f"pytorch_model-{shard:05d}-of-00002.bin"
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    return folder


def test_checkpoint_errors_name_file_and_key(tiny, full_bin) -> None:
    shard1 = torch.load(full_bin / "pytorch_model-00001-of-00002.bin", weights_only=True)
    key = next(k for k in shard1 if k.startswith("model.layers.1."))
    cases = {
        "missing": (lambda s: s.pop(key), key, "missing"),
        "unexpected": (lambda s: s.__setitem__("model.layers.9.mlp.up_proj.weight", torch.zeros(64, 32)),
                       "model.layers.9.mlp.up_proj.weight", "unexpected"),
        "shape": (lambda s: s.__setitem__(key, torch.zeros(3, 3)), key, "shape"),
    }
    for name, (edit, bad, word) in cases.items():
        folder = corrupt(tiny, full_bin, f"broken-{name}", 1, edit)
        with pytest.raises(LoganError) as error:
            load(settings(FULL, model_path=str(folder), vision_tower=str(tiny.clip_dir)))
        message = str(error.value)
        assert "pytorch_model-00001-of-00002.bin" in message and bad in message and word in message, message
    # a missing projector key in a projector-only checkpoint, and a missing key in the CLIP folder
    mm = tiny.root / "pretrain-missing"
    mm.mkdir()
    torch.save({k: v for k, v in tiny.projector.items() if not k.endswith("2.bias")}, mm / "mm_projector.bin")
    write_json(mm / "config.json", tiny.llava_config())
    base = write_base(tiny, "base-for-errors")
    with pytest.raises(LoganError, match=r"mm_projector\.bin: key 'model\.mm_projector\.2\.bias' is missing"):
        load(settings(PRETRAIN, model_path=str(mm), model_base=str(base), vision_tower=str(tiny.clip_dir)))
    dropped = "vision_model.post_layernorm.bias"
    clip = tiny.write_clip(tiny.root / "clip-missing",
                           {k: v for k, v in tiny.clip_full.items() if k != dropped})
    with pytest.raises(LoganError, match=r"pytorch_model\.bin: key 'vision_model\.post_layernorm\.bias' "
                                         r"is missing"):
        load(settings(FULL, model_path=str(full_bin), vision_tower=str(clip)))


def test_vision_tower_paths_are_checked_before_loading(tiny, full_bin) -> None:
    missing = tiny.root / "no-such-clip"
    with pytest.raises(LoganError, match=r"target_model\.vision_tower=.*no-such-clip is not a local folder"):
        check_model(settings(FULL, model_path=str(full_bin), vision_tower=str(missing)))
    # the default is config.json's mm_vision_tower, a hub name here: one error saying what to set
    with pytest.raises(LoganError, match=r"config\.json names the vision tower "
                                         r"'openai/clip-vit-large-patch14-336'.*"
                                         r"set target_model\.vision_tower=CLIP_DIR"):
        check_model(settings(FULL, model_path=str(full_bin)))
    local = tiny.write_full("llava-local-tower", "bin", mm_vision_tower=str(tiny.clip_dir))
    check_model(settings(FULL, model_path=str(local)))
    with pytest.raises(LoganError, match="no config.json"):
        check_model(settings(FULL, model_path=str(tiny.root), vision_tower=str(tiny.clip_dir)))
    with pytest.raises(LoganError, match=r"lmsys/vicuna-7b-v1\.5 is not a local folder"):
        check_model(settings(PRETRAIN, model_path=str(write_pretrain(tiny, "pretrain-check")),
                             vision_tower=str(tiny.clip_dir)))


def write_base(tiny: Tiny, name: str) -> Path:
    """A base LLM folder as vicuna-7b-v1.5 ships (HF LlamaForCausalLM, here saved by transformers)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = tiny.root / name
    llm = LlamaForCausalLM(LlamaConfig(**tiny.llama))
    llm.load_state_dict(tiny.llm)
    llm.save_pretrained(folder)
    write_tokenizer(folder, tiny.sp_model)
    return folder


def write_pretrain(tiny: Tiny, name: str) -> Path:
    folder = tiny.root / name
    folder.mkdir()
    torch.save({k: v.to(torch.bfloat16) for k, v in tiny.projector.items()}, folder / "mm_projector.bin")
    config = tiny.llava_config(image_aspect_ratio="square", tune_mm_mlp_adapter=True)  # pretraining's
    write_json(folder / "config.json", config)
    return folder


def test_projector_only_checkpoint_on_base_llm(tiny, image) -> None:
    from transformers import CLIPVisionConfig, CLIPVisionModel

    clip_dir = tiny.root / "clip-vision-only"
    tower = CLIPVisionModel(CLIPVisionConfig(**CLIP))
    tower.load_state_dict(tiny.tower)
    tower.save_pretrained(clip_dir)  # flat CLIPVisionModel layout of transformers >= 5.6
    transform = ImageTransform(IMAGE, crop_hw=(IMAGE, IMAGE))
    write_json(clip_dir / "preprocessor_config.json", transform.to_config())
    cfg = settings(PRETRAIN, model_path=str(write_pretrain(tiny, "pretrain")),
                   model_base=str(write_base(tiny, "vicuna")), vision_tower=str(clip_dir))
    model = load(cfg)
    assert model.conv_mode == "plain" and not model.transform.pad_to_square  # image_aspect_ratio=square
    caption = tiny.sp.encode(CAPTION)
    encoded = model.encode("ignored in plain", caption)
    assert list(encoded.input_ids) == [1] + [model.image_token_id] * N_IMAGE + caption
    pixels = model.image_batch([image]).tensors["pixel_values"]
    projector = {k: v.to(torch.bfloat16) for k, v in tiny.projector.items()}
    want = reference_logits(tiny, tiny.llm, tiny.tower, projector, list(encoded.input_ids), 1, pixels)
    torch.testing.assert_close(adapter_logits(model, encoded, pixels), want, rtol=1e-5, atol=1e-5)
    assert model.fingerprint()["model_base"].endswith("vicuna")


def test_tune_end_to_end_on_the_original_format(tiny, full_bin, tmp_path) -> None:
    lists = make_split(tmp_path / "data", {"members": 4, "nonmembers": 4}, size=20, seed=3)
    out = tmp_path / "tune"
    run("tune", [f"target_model={FULL}", f"target_model.model_path={full_bin}",
                 f"target_model.vision_tower={tiny.clip_dir}", f"data.member_dataset={lists['members']}",
                 f"data.nonmember_dataset={lists['nonmembers']}", "data.target_set_size=8",
                 "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]", "noise.std_sets=[[0.0,4.0]]",
                 "img_metrics.parts=[img,inst]", "generation.num_gen_tokens=2", "inference.batch_size=4",
                 "device=cpu", "dtype=float32", f"path.output_dir={out}"])
    optimal = json.loads((out / "optimal_std.json").read_text())
    assert optimal["optimal_std"] == 4.0
    assert (out / "per_std" / "std_4.0" / "done.json").exists()


@pytest.mark.parametrize("variant", ["full", "pretrain"])
def test_scores_as_recorded(tiny, full_bin, tmp_path, variant) -> None:
    """The typed model contract changed nothing the original-format loaders compute (tests/family_scores.py)."""
    from family_scores import record_or_compare

    if variant == "full":
        cfg = settings(FULL, model_path=str(full_bin), vision_tower=str(tiny.clip_dir))
    else:
        cfg = settings(PRETRAIN, model_path=str(write_pretrain(tiny, "pretrain-recorded")),
                       model_base=str(write_base(tiny, "vicuna-recorded")), vision_tower=str(tiny.clip_dir))

    def load(reuse: bool):
        model = load_model(cfg, torch.device("cpu"), torch.float32)
        model.prepare_inference(reuse_prefix=reuse)
        return model

    record_or_compare(f"llava_original_{variant}", load, tmp_path)
