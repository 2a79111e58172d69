"""MiniGPT-4 from format-exact tiny files: EVA ViT and Q-Former in LAVIS names, a Llama folder with a
sentencepiece tokenizer.model, and `pretrained_minigpt4*.pth` training checkpoints.

The reference forward below is written from MiniGPT-4's own modules (eva_vit.py, Qformer.py, minigpt4.py)
on the raw LAVIS tensors, so it shares no key map with the adapter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from logan.config import ModelConfig
from logan.errors import LoganError
from logan.models.contract import TokenBatch
from logan.models.minigpt4 import IMAGE_SENTINEL, SYSTEM, MiniGPT4, _resolve, image_token_count

IMAGE, PATCH, VIT_WIDTH, VIT_MLP, VIT_LAYERS = 32, 4, 176, 64, 2   # 2 EVA heads of 88; 64 patches
QF_WIDTH, QF_MLP, QF_LAYERS, QUERIES = 128, 96, 4, 6              # 2 BERT heads of 64; cross-attention 0, 2
LLM_HIDDEN = 32
INSTRUCTION = "Describe this image in detail."
CPU = torch.device("cpu")


@dataclass
class Files:
    root: Path
    vit: Path
    qformer: Path
    llm: Path
    ckpt: dict[str, Path]

    def cfg(self, variant: str = "pretrain_llama2", **changes) -> ModelConfig:
        keys = {"name": "minigpt-4", "model_type": variant, "ckpt": str(self.ckpt[variant]),
                "llama_model": str(self.llm), "vit_model": str(self.vit), "conv_mode": "auto",
                "q_former_model": str(self.qformer) if variant == "pretrain_vicuna0" else None,
                "vocab_size": 32000, "model": {"arch": "minigpt4", "image_size": IMAGE}}
        return ModelConfig(**{**keys, **changes})


def _randn(*shape: int, scale: float = 0.02) -> torch.Tensor:
    return torch.randn(*shape) * scale


def _norm(prefix: str, width: int) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": 1 + _randn(width, scale=0.1), f"{prefix}.bias": _randn(width, scale=0.1)}


def _linear(prefix: str, out: int, inp: int, scale: float = 0.05) -> dict[str, torch.Tensor]:
    return {f"{prefix}.weight": _randn(out, inp, scale=scale), f"{prefix}.bias": _randn(out, scale=scale)}


def eva_state() -> dict[str, torch.Tensor]:
    """eva_vit_g.pth's layout (bare VisionTransformer names, fp16), at tiny size."""
    w = VIT_WIDTH
    positions = 1 + (IMAGE // PATCH) ** 2
    sd = {"cls_token": _randn(1, 1, w, scale=0.5), "pos_embed": _randn(1, positions, w, scale=0.5),
          "patch_embed.proj.weight": _randn(w, 3, PATCH, PATCH, scale=0.1),
          "patch_embed.proj.bias": _randn(w)}
    for i in range(VIT_LAYERS):
        b = f"blocks.{i}."
        sd |= _norm(b + "norm1", w) | _norm(b + "norm2", w)
        sd |= {b + "attn.qkv.weight": _randn(3 * w, w, scale=0.05), b + "attn.q_bias": _randn(w, scale=0.1),
               b + "attn.v_bias": _randn(w, scale=0.1)}
        sd |= _linear(b + "attn.proj", w, w) | _linear(b + "mlp.fc1", VIT_MLP, w)
        sd |= _linear(b + "mlp.fc2", w, VIT_MLP)
    return {k: v.half() for k, v in sd.items()}


def blip2_state() -> dict[str, torch.Tensor]:
    """blip2_pretrained_flant5xxl.pth's 'model' (LAVIS names), with the parts MiniGPT-4 drops."""
    h, q = QF_WIDTH, "Qformer.bert."
    sd = {"query_tokens": _randn(1, QUERIES, h, scale=0.5), "t5_proj.weight": _randn(24, h),
          "t5_proj.bias": _randn(24), q + "embeddings.position_ids": torch.arange(8)[None]}
    sd |= _norm(q + "embeddings.LayerNorm", h) | _norm("ln_vision", VIT_WIDTH)
    for i in range(QF_LAYERS):
        b = f"{q}encoder.layer.{i}."
        kinds = ["attention"] + (["crossattention"] if i % 2 == 0 else [])
        for kind in kinds:
            width = VIT_WIDTH if kind == "crossattention" else h
            sd |= _linear(f"{b}{kind}.self.query", h, h) | _linear(f"{b}{kind}.self.key", h, width)
            sd |= _linear(f"{b}{kind}.self.value", h, width) | _linear(f"{b}{kind}.output.dense", h, h)
            sd |= _norm(f"{b}{kind}.output.LayerNorm", h)
        sd |= _linear(b + "intermediate_query.dense", QF_MLP, h)
        sd |= _linear(b + "output_query.dense", h, QF_MLP)
        sd |= _norm(b + "output_query.LayerNorm", h)
        sd |= _linear(b + "intermediate.dense", QF_MLP, h)  # text branch: MiniGPT-4 drops it
    return sd


def checkpoint(features: int) -> dict:
    """pretrained_minigpt4*.pth as LAVIS's runner saves it: only llama_proj is trainable."""
    model = {"llama_proj.weight": _randn(LLM_HIDDEN, features, scale=0.2),
             "llama_proj.bias": _randn(LLM_HIDDEN)}
    optimizer = {"state": {0: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(3)}},
                 "param_groups": [{"lr": 1e-4}]}
    return {"model": model, "optimizer": optimizer, "config": {"model": {"arch": "minigpt4"}},
            "scaler": None, "epoch": 4}


def build_llm(folder: Path) -> None:
    """A Llama folder as Vicuna v0 ships it: weights, config.json, tokenizer.model (sentencepiece)."""
    import sentencepiece as spm
    from transformers import LlamaConfig, LlamaForCausalLM

    from logan.data.synthetic import vocabulary

    folder.mkdir(parents=True)
    prompts = f"<Img></Img> {INSTRUCTION} [INST] [/INST] ###Human: ###Assistant:"
    lines = [SYSTEM, prompts, " ".join(vocabulary())] * 20
    (folder / "corpus.txt").write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(folder / "corpus.txt"), model_prefix=str(folder / "tokenizer"), model_type="bpe",
        vocab_size=400, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        normalization_rule_name="identity", remove_extra_whitespaces=False, hard_vocab_limit=False)
    (folder / "corpus.txt").unlink()
    (folder / "tokenizer.vocab").unlink()
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    vocab = spm.SentencePieceProcessor(model_file=str(folder / "tokenizer.model")).get_piece_size()
    config = LlamaConfig(vocab_size=vocab, hidden_size=LLM_HIDDEN, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=4, intermediate_size=64, max_position_embeddings=512,
                         bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
    LlamaForCausalLM(config).save_pretrained(folder)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Files:
    root = tmp_path_factory.mktemp("minigpt4")
    torch.manual_seed(0)
    torch.save(eva_state(), root / "eva_vit_g.pth")
    torch.save({"model": blip2_state(), "epoch": 9}, root / "blip2_pretrained_flant5xxl.pth")
    torch.save(checkpoint(4 * VIT_WIDTH), root / "pretrained_minigpt4_llama2_7b.pth")
    torch.save(checkpoint(QF_WIDTH), root / "pretrained_minigpt4_7b.pth")
    build_llm(root / "llm")
    return Files(root, root / "eva_vit_g.pth", root / "blip2_pretrained_flant5xxl.pth", root / "llm",
                 {"pretrain_llama2": root / "pretrained_minigpt4_llama2_7b.pth",
                  "pretrain_vicuna0": root / "pretrained_minigpt4_7b.pth"})


@pytest.fixture(scope="module")
def adapters(files: Files) -> dict[str, MiniGPT4]:
    return {t: MiniGPT4(files.cfg(t), CPU, torch.float32) for t in ("pretrain_llama2", "pretrain_vicuna0")}


# ---- reference: MiniGPT-4's forward on the LAVIS tensors --------------------------------------------------


def _ln(x: torch.Tensor, sd: dict, prefix: str, eps: float) -> torch.Tensor:
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps)


def _lin(x: torch.Tensor, sd: dict, prefix: str) -> torch.Tensor:
    return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    q, k, v = (t.reshape(t.shape[0], t.shape[1], heads, -1).transpose(1, 2) for t in (q, k, v))
    weights = (q * q.shape[-1] ** -0.5 @ k.transpose(-2, -1)).softmax(-1)
    return (weights @ v).transpose(1, 2).reshape(q.shape[0], -1, heads * q.shape[-1])


def reference_vit(sd: dict, pixels: torch.Tensor) -> torch.Tensor:
    """eva_vit.py VisionTransformer.forward (no final norm)."""
    x = F.conv2d(pixels, sd["patch_embed.proj.weight"], sd["patch_embed.proj.bias"], stride=PATCH)
    x = torch.cat([sd["cls_token"].expand(len(pixels), -1, -1), x.flatten(2).transpose(1, 2)], 1)
    x = x + sd["pos_embed"]
    for i in range(VIT_LAYERS):
        b = f"blocks.{i}."
        y = _ln(x, sd, b + "norm1", 1e-6)
        q_bias, v_bias = sd[b + "attn.q_bias"], sd[b + "attn.v_bias"]
        bias = torch.cat([q_bias, torch.zeros_like(v_bias), v_bias])
        q, k, v = F.linear(y, sd[b + "attn.qkv.weight"], bias).chunk(3, dim=-1)
        x = x + _lin(_attend(q, k, v, VIT_WIDTH // 88), sd, b + "attn.proj")
        x = x + _lin(F.gelu(_lin(_ln(x, sd, b + "norm2", 1e-6), sd, b + "mlp.fc1")), sd, b + "mlp.fc2")
    return x


def reference_qformer(sd: dict, image: torch.Tensor) -> torch.Tensor:
    """Qformer.py BertModel with query_embeds only (LayerNorm on the queries, query FFN)."""
    heads, q = QF_WIDTH // 64, "Qformer.bert."
    x = _ln(sd["query_tokens"].expand(len(image), -1, -1), sd, q + "embeddings.LayerNorm", 1e-12)

    def block(x: torch.Tensor, context: torch.Tensor, p: str) -> torch.Tensor:
        out = _attend(_lin(x, sd, p + "self.query"), _lin(context, sd, p + "self.key"),
                      _lin(context, sd, p + "self.value"), heads)
        return _ln(_lin(out, sd, p + "output.dense") + x, sd, p + "output.LayerNorm", 1e-12)

    for i in range(QF_LAYERS):
        b = f"{q}encoder.layer.{i}."
        x = block(x, x, b + "attention.")
        if i % 2 == 0:
            x = block(x, image, b + "crossattention.")
        y = _lin(F.gelu(_lin(x, sd, b + "intermediate_query.dense")), sd, b + "output_query.dense")
        x = _ln(y + x, sd, b + "output_query.LayerNorm", 1e-12)
    return x


def reference_image_embeds(files: Files, model_type: str, pixels: torch.Tensor) -> torch.Tensor:
    """minigpt4.py encode_img: ln_vision(ViT) -> Q-Former | [:, 1:] grouped 4 to 1 -> llama_proj."""
    vit = {k: v.float() for k, v in torch.load(files.vit, weights_only=True).items()}
    proj = torch.load(files.ckpt[model_type], weights_only=True)["model"]
    features = reference_vit(vit, pixels)
    if model_type == "pretrain_vicuna0":
        blip2 = torch.load(files.qformer, weights_only=True)["model"]
        features = reference_qformer(blip2, _ln(features, blip2, "ln_vision", 1e-5))
    else:
        features = F.layer_norm(features, features.shape[-1:], eps=1e-5)[:, 1:]  # fresh ln_vision
        features = features.reshape(len(pixels), -1, 4 * VIT_WIDTH)
    return _lin(features, proj, "llama_proj")


def _images(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.uniform(0, 255, (40 + 8 * i, 36, 3)).astype(np.float32) for i in range(n)]


# ---- tests ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_type", ["pretrain_llama2", "pretrain_vicuna0"])
def test_logits_equal_minigpt4_forward_on_the_same_tensors(files, adapters, model_type):
    from transformers import LlamaForCausalLM

    model = adapters[model_type]
    sequences = [model.encode(INSTRUCTION, [7, 8, 9, 10]), model.encode(INSTRUCTION, [11])]
    tokens = TokenBatch.build(sequences, model.pad_token_id, "right")
    images = model.image_batch(_images(2))
    positions = torch.stack([torch.arange(tokens.input_ids.shape[1] - 1)] * 2)
    got = model.forward_logits(tokens, images, positions)
    pixels = images.tensors["pixel_values"]

    llm = LlamaForCausalLM.from_pretrained(files.llm).eval()
    with torch.no_grad():
        image = reference_image_embeds(files, model_type, pixels)
        for row, seq in enumerate(sequences):
            s, n = seq.image_start, seq.n_image
            text_ids = list(seq.input_ids[:s]) + list(seq.input_ids[s + n:])
            text = llm.get_input_embeddings()(torch.tensor([text_ids]))
            embeds = torch.cat([text[:, :s], image[row:row + 1], text[:, s:]], 1)
            want = llm(inputs_embeds=embeds).logits[0, :-1]
            length = len(seq.input_ids) - 1
            torch.testing.assert_close(got[row, :length], want[:length], atol=2e-5, rtol=1e-4)
    assert got.dtype == torch.float32 and got.shape[-1] == model.real_vocab == llm.config.vocab_size


@pytest.mark.parametrize("model_type", ["pretrain_llama2", "pretrain_vicuna0"])
def test_the_kept_prompt_gives_the_logits_of_whole_forwards(files, adapters, model_type):
    """inference.reuse_prefix: the text before the image runs once; right-padded forwards (a 4D padding
    mask in the LLM, widened by the kept columns) start at the image with the same logits."""
    kept = MiniGPT4(files.cfg(model_type), CPU, torch.float32)
    kept.prepare_inference(reuse_prefix=True)
    sequences = [kept.encode(INSTRUCTION, [7, 8, 9, 10]), kept.encode(INSTRUCTION, [11])]
    tokens = TokenBatch.build(sequences, kept.pad_token_id, "right")
    start = sequences[0].image_start
    prefix = sequences[0].input_ids[:start]
    positions = torch.stack([torch.arange(start, tokens.input_ids.shape[1] - 1)] * 2)
    images = kept.image_batch(_images(2))
    want = adapters[model_type].forward_logits(tokens, images, positions)  # no kept prefix: whole forwards
    got = kept.forward_logits(tokens, images, positions)
    assert start > 1 and kept._kept.ids == prefix
    for row, seq in enumerate(sequences):
        length = len(seq.input_ids) - 1 - start
        torch.testing.assert_close(got[row, :length], want[row, :length], atol=1e-5, rtol=1e-5)


def test_generate_is_greedy_batch_independent_and_matches_the_logits(adapters):
    model = adapters["pretrain_llama2"]
    prompts = [model.encode(INSTRUCTION), model.encode("What is it?")]
    images = _images(2, seed=3)
    batched = model.generate(TokenBatch.build(prompts, model.pad_token_id, "left"), model.image_batch(images), 5)
    for row, prompt in enumerate(prompts):
        one = TokenBatch.build([prompt], model.pad_token_id, "left")
        assert model.generate(one, model.image_batch(images[row:row + 1]), 5)[0] == batched[row]
        last = torch.tensor([[len(prompt.input_ids) - 1]])
        logits = model.forward_logits(one, model.image_batch(images[row:row + 1]), last)
        logits = logits.clone()
        logits[..., model.bos_token_id] = -torch.inf  # generation never picks BOS (or padding)
        assert batched[row][0] == int(logits.argmax(-1))


def test_image_token_counts():
    assert image_token_count(224, 14) == 64                     # pretrain_llama2: 256 patches, 4 to 1
    assert image_token_count(224, 14, num_query_tokens=32) == 32  # pretrain_vicuna0: the Q-Former's queries
    assert image_token_count(IMAGE, PATCH) == 16
    with pytest.raises(LoganError, match="grouped 4 to 1"):
        image_token_count(42, 14)


def test_tiny_variants_have_their_own_counts_and_geometry(adapters):
    assert adapters["pretrain_llama2"].n_image_tokens == 16
    assert adapters["pretrain_vicuna0"].n_image_tokens == QUERIES
    for model in adapters.values():
        assert model.transform.resize_hw == (IMAGE, IMAGE) and model.transform.crop_hw is None
        assert model.image_batch(_images(1)).tensors["pixel_values"].shape == (1, 3, IMAGE, IMAGE)


@pytest.mark.parametrize("model_type,before,after", [
    ("pretrain_llama2", [SYSTEM, "<s>", "[INST] <Img>"], f"</Img> {INSTRUCTION} [/INST] "),
    ("pretrain_vicuna0", [SYSTEM + "###Human: <Img>"], f"</Img> {INSTRUCTION}###Assistant: "),
])
def test_prompt_is_tokenised_per_segment_like_minigpt4(files, adapters, model_type, before, after):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(files.llm / "tokenizer.model"))
    model = adapters[model_type]
    n = model.n_image_tokens
    # transformers 4.30's slow LlamaTokenizer: BOS on segment 0 only, each piece between specials on its own
    head = [1] + [t for piece in before for t in ([1] if piece == "<s>" else sp.encode(piece))]
    inst = sp.encode(after)
    enc = model.encode(INSTRUCTION, [5, 6, 7])
    assert list(enc.input_ids) == head + [IMAGE_SENTINEL] * n + inst + [5, 6, 7]
    img, target = enc.part_positions("img")
    assert target is None and list(img) == list(range(len(head), len(head) + n))
    positions, targets = enc.part_positions("inst")
    assert list(positions) == list(range(len(head) + n - 1, len(head) + n - 1 + len(inst)))
    assert list(targets) == inst
    positions, targets = enc.part_positions("desp")
    assert list(targets) == [5, 6, 7] and positions[0] == len(head) + n + len(inst) - 1
    assert model.decode(sp.encode("a red circle")) == "a red circle"


QF_LAYER = "Qformer.bert.encoder.layer."
BROKEN = [  # (variant, component, key, what goes there: None removes the key)
    ("pretrain_llama2", "vit_model", "blocks.1.attn.v_bias", None),                         # missing
    ("pretrain_llama2", "vit_model", "blocks.0.attn.gate", torch.ones(2)),                  # unexpected
    ("pretrain_llama2", "vit_model", "blocks.1.mlp.fc2.weight", torch.ones(VIT_WIDTH, 3)),  # wrong shape
    ("pretrain_vicuna0", "q_former_model", QF_LAYER + "2.crossattention.self.key.bias", None),
    ("pretrain_vicuna0", "q_former_model", QF_LAYER + "1.attention.self.gate", torch.ones(2)),
    ("pretrain_vicuna0", "q_former_model", "ln_vision.weight", None),
    ("pretrain_vicuna0", "q_former_model", "ln_vision.bias", torch.ones(5)),
    ("pretrain_llama2", "ckpt", "llama_proj.bias", None),
    ("pretrain_llama2", "ckpt", "llama_model.lora_A.weight", torch.ones(2)),
    ("pretrain_llama2", "ckpt", "llama_proj.bias", torch.ones(3)),
]


@pytest.mark.parametrize("model_type,component,key,value", BROKEN)
def test_broken_files_are_one_clear_error_naming_file_and_key(files, tmp_path, model_type, component, key,
                                                              value):
    cfg = files.cfg(model_type)
    path = Path(getattr(cfg, component))
    obj = torch.load(path, weights_only=True)
    tensors = obj.get("model", obj)
    if value is None:
        tensors.pop(key)
    else:
        tensors[key] = value
    broken = tmp_path / path.name
    torch.save(obj, broken)
    setattr(cfg, component, str(broken))
    with pytest.raises(LoganError) as error:
        MiniGPT4(cfg, CPU, torch.float32)
    assert str(broken) in str(error.value) and f"'{key}'" in str(error.value)


def test_checkpoint_of_the_other_variant_is_named(files):
    cfg = files.cfg("pretrain_llama2", ckpt=str(files.ckpt["pretrain_vicuna0"]))
    with pytest.raises(LoganError, match="llama_proj.weight.*is it a pretrain_vicuna0 checkpoint"):
        MiniGPT4(cfg, CPU, torch.float32)


def test_llm_folder_missing_a_weight_is_named(files, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "llm"
    shutil.copytree(files.llm, folder)
    weights = load_file(folder / "model.safetensors")
    weights.pop("model.layers.1.mlp.up_proj.weight")
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(LoganError, match=rf"{folder}: missing key 'model.layers.1.mlp.up_proj.weight'"):
        MiniGPT4(files.cfg(llama_model=str(folder)), CPU, torch.float32)


class Opaque:
    """Stands for the optimizer/config objects a training checkpoint may pickle."""


def test_pickled_objects_are_refused_with_the_way_out(files, tmp_path):
    path = tmp_path / "pretrained_minigpt4_llama2_7b.pth"
    torch.save({**torch.load(files.ckpt["pretrain_llama2"], weights_only=True), "config": Opaque()}, path)
    with pytest.raises(LoganError, match=r"does not unpickle.*weights_only=False.*torch\.save\(\{'model'"):
        MiniGPT4(files.cfg(ckpt=str(path)), CPU, torch.float32)


@pytest.mark.parametrize("changes,message", [
    ({"vit_model": "/nowhere/eva.pth"}, r"target_model\.vit_model=/nowhere/eva\.pth is not a file"),
    ({"llama_model": "/nowhere/llama"}, r"target_model\.llama_model=/nowhere/llama is not a folder"),
    ({"ckpt": None}, r"target_model\.ckpt is not set"),
    ({"q_former_model": None}, r"target_model\.q_former_model is not set.*pretrain_vicuna0"),
    ({"model_type": "pretrain_vicuna1"}, r"pretrain_vicuna1 is not a MiniGPT-4 variant"),
    ({"conv_mode": "llava_v1"}, r"conv_mode=llava_v1 is not a MiniGPT-4 template"),
    ({"model": {"arch": "minigpt_v2"}}, r"arch=minigpt_v2"),
    ({"model": {"ckpt_path": "x"}}, r"target_model\.model\.ckpt_path is not a MiniGPT-4 setting"),
])
def test_check_validates_paths_and_settings_before_loading(files, changes, message):
    with pytest.raises(LoganError, match=message):
        MiniGPT4.check(files.cfg("pretrain_vicuna0", **changes))


def test_check_rejects_a_q_former_for_llama2_and_a_wrong_image_size(files):
    with pytest.raises(LoganError, match="pretrain_llama2 has no Q-Former"):
        MiniGPT4.check(files.cfg(q_former_model=str(files.qformer)))
    with pytest.raises(LoganError, match=r"image_size=224.*'pos_embed'.*32 px"):
        MiniGPT4(files.cfg(model={"image_size": 224}), CPU, torch.float32)


def test_seed_nested_keys_are_aliases_and_flat_keys_win(files):
    nested = {"arch": "minigpt4", "model_type": "pretrain_vicuna0", "image_size": IMAGE,
              "ckpt": str(files.ckpt["pretrain_vicuna0"])}
    resolved = _resolve(files.cfg("pretrain_vicuna0", model_type=None, ckpt=None, model=nested))
    assert resolved.model_type == "pretrain_vicuna0" and resolved.conv_mode == "minigpt4_vicuna0"
    assert resolved.ckpt == files.ckpt["pretrain_vicuna0"] and resolved.q_former_model == files.qformer
    flat = _resolve(files.cfg("pretrain_llama2", model={**nested, "model_type": "pretrain_vicuna0"}))
    assert flat.model_type == "pretrain_llama2" and flat.ckpt == files.ckpt["pretrain_llama2"]


def test_tune_end_to_end_on_tiny_minigpt4(world, files, tmp_path):
    from logan.api import run

    out = tmp_path / "tune"
    run("tune", [
        "target_model=minigpt-4", f"target_model.ckpt={files.ckpt['pretrain_llama2']}",
        f"target_model.llama_model={files.llm}", f"target_model.vit_model={files.vit}",
        "target_model.model_type=pretrain_llama2", f"target_model.model.image_size={IMAGE}",
        f"data.member_dataset={world.members}", f"data.nonmember_dataset={world.nonmembers}",
        "data.target_set_size=8", "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]",
        "noise.std_sets=[[0.0,2.0,20.0]]", "img_metrics.parts=[img,inst]", "inference.batch_size=4",
        "device=cpu", "dtype=float32", f"path.output_dir={out}",
    ])
    optimal = json.loads((out / "optimal_std.json").read_text())
    assert optimal["optimal_std"] in (2.0, 20.0)
    for std in (0.0, 2.0, 20.0):
        assert (out / "per_std" / f"std_{std!r}" / "done.json").exists()


@pytest.mark.parametrize("model_type", ["pretrain_llama2", "pretrain_vicuna0"])
def test_scores_as_recorded(files, tmp_path, model_type):
    """The typed model contract changed nothing MiniGPT-4 computes (tests/family_scores.py)."""
    from family_scores import record_or_compare

    def load(reuse: bool) -> MiniGPT4:
        model = MiniGPT4(files.cfg(model_type), CPU, torch.float32)
        model.prepare_inference(reuse_prefix=reuse)
        return model

    record_or_compare(f"minigpt4_{model_type}", load, tmp_path)
