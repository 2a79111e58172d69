"""LLaVA-NeXT (anyres) against transformers' own processor and model, on a tiny model built offline."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from logan.api import run
from logan.config import ModelConfig
from logan.data.images import sample_id
from logan.data.synthetic import make_split, vocabulary
from logan.engine import Engine, EngineSettings, WorkItem
from logan.errors import LoganError
from logan.models.base import TEMPLATES
from logan.models.contract import ImageBatch, TokenBatch
from logan.models.llava_next import NEXT_TEMPLATES, LlavaNext
from logan.models.registry import check_model
from logan.models.tiny import _tokenizer

PINPOINTS = [[32, 64], [64, 32], [64, 64], [32, 96], [96, 32]]  # (height, width); tiles of 32, patches of 8
INSTRUCTION = "Describe this image concisely."
# LOGAN's divergences only: aug_kld's 256 x 256 crops change the image size, hence LLaVA-NeXT's token count
METRICS = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2", "max_k_renyi_inf_kl_div"]
UINT8_TOL = 0.02  # as in test_preprocess: uint8 rounding after PIL's resampling, in normalised units
# (height, width): square, wide, tall, extreme ratios, odd sizes, exactly a pinpoint, smaller than a tile
SIZES = [(32, 32), (40, 40), (24, 56), (56, 24), (33, 97), (97, 33), (64, 64), (100, 10), (10, 100), (31, 65),
         (32, 96), (20, 20)]


def build_tiny_llava_next(folder: Path, corpus: list[str]) -> Path:
    """A random tiny LlavaNextForConditionalGeneration (CLIP 32px/8px + Mistral) saved like a hub folder."""
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextImageProcessorPil

    texts = [*corpus, INSTRUCTION, *(t for pair in {**TEMPLATES, **NEXT_TEMPLATES}.values() for t in pair)]
    tok = _tokenizer(texts)
    text = {"model_type": "mistral", "vocab_size": len(tok), "hidden_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 64,
            "sliding_window": None, "max_position_embeddings": 512, "tie_word_embeddings": False,
            "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id}
    vision = {"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "hidden_size": 32,
              "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64, "projection_dim": 32}
    config = LlavaNextConfig(text_config=text, vision_config=vision, image_grid_pinpoints=PINPOINTS,
                             image_token_index=tok.convert_tokens_to_ids("<image>"), vision_feature_layer=-2,
                             vision_feature_select_strategy="default", image_seq_length=16,
                             pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    LlavaNextForConditionalGeneration(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        LlavaNextImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32},
                                   image_grid_pinpoints=PINPOINTS).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return build_tiny_llava_next(tmp_path_factory.mktemp("llava_next") / "tiny", vocabulary())


@pytest.fixture(scope="module")
def adapter(folder) -> LlavaNext:
    return LlavaNext(ModelConfig(name="llava-next", model_path=str(folder), conv_mode="mistral_instruct"),
                     torch.device("cpu"), torch.float32)


@pytest.fixture(scope="module")
def hf(folder):
    """transformers' own processor (PIL backend, uint8) and model for the same folder."""
    from transformers import (
        LlavaNextForConditionalGeneration,
        LlavaNextImageProcessorPil,
        LlavaNextProcessor,
        PreTrainedTokenizerFast,
    )

    processor = LlavaNextProcessor(image_processor=LlavaNextImageProcessorPil.from_pretrained(folder),
                                   tokenizer=PreTrainedTokenizerFast.from_pretrained(folder), patch_size=8,
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    return processor, LlavaNextForConditionalGeneration.from_pretrained(folder).eval()


def smooth_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Integer pixels that bicubic resampling does not push past 0 / 255 (uint8 PIL would clip there)."""
    return np.random.default_rng(seed).integers(40, 216, (h, w, 3), dtype=np.uint8)


def floats(images: list[np.ndarray]) -> list[np.ndarray]:
    return [image.astype(np.float32) for image in images]


def hf_inputs(processor, images: list[np.ndarray]) -> dict:
    prompt = "<s>[INST] <image>\n" + INSTRUCTION + " [/INST]"  # the model card's prompt, BOS spelled out
    return dict(processor(images=[Image.fromarray(im) for im in images], text=[prompt] * len(images),
                          padding=True, return_tensors="pt"))


def test_image_token_count_matches_processor_and_model(adapter, hf) -> None:
    processor, model = hf
    image_token = adapter.image_token_id
    counts = {}
    for h, w in SIZES:
        image = smooth_image(h, w)
        inputs = hf_inputs(processor, [image])
        counts[(h, w)] = adapter.image_tokens((w, h))
        assert counts[(h, w)] == int((inputs["input_ids"] == image_token).sum()), (h, w)
        encoded = adapter.encode(INSTRUCTION, image_size=(w, h))
        assert list(encoded.input_ids) == inputs["input_ids"][0].tolist()
        with torch.no_grad():  # the model's own feature count for this image
            features = model.model.get_image_features(inputs["pixel_values"], inputs["image_sizes"])
        assert features.pooler_output[0].shape[0] == counts[(h, w)], (h, w)
    assert len(set(counts.values())) > 5  # the count really follows the image size


@pytest.mark.parametrize("shape", SIZES)
def test_float_views_match_the_image_processor(adapter, hf, shape) -> None:
    image = smooth_image(*shape, seed=sum(shape))
    ref = hf_inputs(hf[0], [image])
    ours = adapter.image_batch(floats([image])).tensors
    assert ours["pixel_values"].dtype == torch.float32
    assert ours["pixel_values"].shape == ref["pixel_values"].shape
    assert ours["image_sizes"].tolist() == ref["image_sizes"].tolist() == [list(shape)]
    np.testing.assert_allclose(ours["pixel_values"].numpy(), ref["pixel_values"].numpy(), atol=UINT8_TOL)


def test_views_keep_sub_grey_level_changes(adapter) -> None:
    image = smooth_image(40, 24).astype(np.float32)
    clean = adapter.image_batch(floats([image])).tensors["pixel_values"]
    assert torch.equal(clean, adapter.image_batch(floats([image.copy()])).tensors["pixel_values"])
    nudged = adapter.image_batch(floats([image + 0.01])).tensors["pixel_values"]
    assert 0 < (nudged - clean).abs().max() < 0.001


def test_logits_match_hf_forward_on_a_mixed_size_batch(adapter, hf) -> None:
    processor, model = hf
    images = [smooth_image(24, 56, 1), smooth_image(56, 40, 2), smooth_image(32, 32, 3)]
    ref = hf_inputs(processor, images)
    with torch.no_grad():
        expected = model(**ref).logits[..., : adapter.real_vocab]
    assert model.lm_head.out_features > adapter.real_vocab  # <image> is cut from the vocabulary
    encoded = [adapter.encode(INSTRUCTION, image_size=(im.shape[1], im.shape[0])) for im in images]
    tokens = TokenBatch.build(encoded, adapter.pad_token_id)
    ids, mask = tokens.input_ids, tokens.attention_mask
    assert torch.equal(ids * mask, ref["input_ids"] * ref["attention_mask"])
    positions = torch.arange(ids.shape[1]).expand(len(images), -1)
    float_pixels = adapter.image_batch(floats(images))
    hf_pixels = ImageBatch({"pixel_values": ref["pixel_values"], "image_sizes": ref["image_sizes"]},
                           float_pixels.sizes)
    on_hf_pixels = adapter.forward_logits(tokens, hf_pixels, positions)
    on_float_pixels = adapter.forward_logits(tokens, float_pixels, positions)
    for row, seq in enumerate(encoded):
        n = len(seq.input_ids)  # image and text positions of this row
        torch.testing.assert_close(on_hf_pixels[row, :n], expected[row, :n], rtol=1e-5, atol=1e-5)
        # the float views differ from the uint8 ones by < 1 grey level: the logits barely move
        torch.testing.assert_close(on_float_pixels[row, :n], expected[row, :n], rtol=0, atol=0.05)
    # an image exactly one tile large is resampled nowhere: the float path is HF's to fp32 precision
    last = len(encoded[2].input_ids)
    torch.testing.assert_close(on_float_pixels[2, :last], expected[2, :last], rtol=1e-5, atol=1e-5)


def test_the_kept_prompt_gives_the_logits_of_whole_forwards(adapter, folder) -> None:
    """inference.reuse_prefix on a mixed-size batch (image token counts differ, the prompt before does not)."""
    kept = LlavaNext(ModelConfig(name="llava-next", model_path=str(folder), conv_mode="mistral_instruct"),
                     torch.device("cpu"), torch.float32)
    kept.prepare_inference(reuse_prefix=True)
    images = [smooth_image(24, 56, 1), smooth_image(56, 40, 2)]
    encoded = [adapter.encode(INSTRUCTION, image_size=(im.shape[1], im.shape[0])) for im in images]
    tokens = TokenBatch.build(encoded, adapter.pad_token_id)
    start = encoded[0].image_start
    positions = torch.arange(start, tokens.input_ids.shape[1]).expand(len(images), -1)
    pixels = adapter.image_batch(floats(images))
    want = adapter.forward_logits(tokens, pixels, positions)  # no kept prefix: whole forwards
    got = kept.forward_logits(tokens, pixels, positions)
    assert start > 0 and kept._kept.ids == encoded[0].input_ids[:start]
    for row, seq in enumerate(encoded):
        n = len(seq.input_ids) - start
        torch.testing.assert_close(got[row, :n], want[row, :n], rtol=1e-5, atol=1e-5)


def test_an_image_resized_after_encoding_is_one_clear_error(adapter) -> None:
    tokens = TokenBatch.build([adapter.encode(INSTRUCTION, image_size=(40, 24))], adapter.pad_token_id)
    pixels = adapter.image_batch(floats([smooth_image(256, 256)]))  # an image that changed size
    with pytest.raises(LoganError, match="a 256 x 256 image met a sequence laid out for 40 x 24"):
        pixels.check(tokens)


@pytest.mark.parametrize("space", ["pixel", "normalized"])
def test_engine_on_mixed_sizes_is_zero_at_zero_and_batch_invariant(adapter, tmp_path: Path, space: str) -> None:
    items = []
    for i, (h, w) in enumerate([(24, 56), (40, 40), (56, 24)]):
        path = tmp_path / f"{i}.png"
        Image.fromarray(smooth_image(h, w, i)).save(path)
        items.append(WorkItem(str(path), i % 2, size=(w, h)))

    def scores(batch_size: int) -> dict:
        engine = Engine(adapter, EngineSettings(parts=["img", "inst"], metrics=METRICS, instruction=INSTRUCTION,
                                                batch_size=batch_size, space=space))
        return {(std, r.sample_id, *key): v for std, results in engine.run(items, [0.0, 8.0])
                for r in results for key, v in r.tokens.items()}

    together, alone = scores(3), scores(1)
    assert together.keys() == alone.keys()
    for key, value in together.items():
        assert len(value) > 0
        if key[0] == 0.0:
            assert np.all(value == 0.0), key
        np.testing.assert_allclose(value, alone[key], rtol=2e-3, atol=1e-9)
    for item in items:
        assert len(together[(0.0, item.sample_id, "img", METRICS[0])]) == adapter.image_tokens(item.size)
        assert together[(8.0, item.sample_id, "img", METRICS[0])].mean() > 0


def test_generate_runs_on_a_mixed_size_batch(adapter) -> None:
    images = [smooth_image(24, 56), smooth_image(64, 32)]
    prompts = [adapter.encode(INSTRUCTION, image_size=(im.shape[1], im.shape[0])) for im in images]
    tokens = TokenBatch.build(prompts, adapter.pad_token_id, padding="left")
    out = adapter.generate(tokens, adapter.image_batch(floats(images)), 3)
    assert len(out) == 2 and all(len(o) <= 3 and all(t < adapter.real_vocab for t in o) for o in out)


def test_a_folder_of_another_family_is_one_clear_error(tmp_path: Path, folder: Path) -> None:
    other = tmp_path / "llava"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"model_type": "llava"}))
    wrong = r"holds a 'llava' model, not an HF-format LLaVA-NeXT \(model_type 'llava_next'\)"
    with pytest.raises(LoganError, match=wrong):
        check_model(ModelConfig(name="llava-next", model_path=str(other)))
    with pytest.raises(LoganError, match="not an HF-format LLaVA "):
        check_model(ModelConfig(name="llava-hf", model_path=str(folder)))
    with pytest.raises(LoganError, match="conv_mode=nope is unknown; use one of .*mistral_instruct"):
        check_model(ModelConfig(name="llava-next", model_path=str(folder), conv_mode="nope"))


def test_tune_end_to_end_with_two_image_sizes(adapter, folder: Path, tmp_path: Path) -> None:
    lists = make_split(tmp_path / "data", {"members": 4, "nonmembers": 4}, size=40, seed=3)
    sizes = {}
    for path in lists.values():  # every other image becomes 40 wide x 24 high: two sizes per batch
        for i, entry in enumerate(json.loads(path.read_text())):
            if i % 2:
                Image.open(entry["image"]).crop((0, 8, 40, 32)).save(entry["image"])
            sizes[sample_id(Path(entry["image"]).read_bytes())] = Image.open(entry["image"]).size  # by content
    out = tmp_path / "tune"
    run("tune", ["target_model=llava-next", f"target_model.model_path={folder}",
                 f"data.member_dataset={lists['members']}", f"data.nonmember_dataset={lists['nonmembers']}",
                 "data.target_set_size=8", "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]",
                 "noise.std_sets=[[0.0,4.0,64.0]]", "img_metrics.parts=[img,inst]",
                 f"img_metrics.metrics_to_use=[{','.join(METRICS)}]", "inference.batch_size=8", "device=cpu",
                 f"path.output_dir={out}"])
    optimal = json.loads((out / "optimal_std.json").read_text())
    assert optimal["optimal_std"] in (4.0, 64.0)
    for points in optimal["curves"].values():
        assert points[0]["std"] == 0.0 and points[0]["target_mean"] == 0.0 and points[0]["gap"] == 0.0
    zero = pd.read_parquet(out / "per_std" / "std_0.0" / "tokens.parquet")
    noisy = pd.read_parquet(out / "per_std" / "std_64.0" / "tokens.parquet")
    assert set(zero.part) == {"img", "inst"} and set(zero.sample_id) == set(sizes)
    assert all(np.all(np.asarray(v) == 0) for v in zero["values"])  # std 0: exactly zero, every token
    kl = noisy[noisy.metric == "max_k_no_norn_kl_div"]
    assert len(kl) == 16 and all(np.asarray(v).mean() > 0 for v in kl["values"])
    assert len(set(sizes.values())) == 2
    for row in zero[zero.part == "img"].itertuples():  # every image got its own number of image tokens
        assert len(row.values) == adapter.image_tokens(sizes[row.sample_id])


def test_scores_as_recorded(folder: Path, tmp_path: Path) -> None:
    """The typed model contract changed nothing LLaVA-NeXT computes (tests/family_scores.py)."""
    from family_scores import record_or_compare

    def load(reuse: bool) -> LlavaNext:
        model = LlavaNext(ModelConfig(name="llava-next", model_path=str(folder), conv_mode="mistral_instruct"),
                          torch.device("cpu"), torch.float32)
        model.prepare_inference(reuse_prefix=reuse)
        return model

    record_or_compare("llava_next", load, tmp_path)
