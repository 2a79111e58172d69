"""hf-vlm and target_model=auto on six tiny Hugging Face VLM families (tests/hf_families.py): Qwen2-VL,
Qwen2.5-VL, Idefics3, Gemma 3, LLaVA-OneVision and InternVL, each with its real processor class."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from logan.config import ModelConfig
from logan.engine import Engine, EngineSettings, WorkItem
from logan.errors import LoganError
from logan.metrics.registry import all_metrics
from logan.models.contract import TokenBatch
from logan.models.hf_vlm import HFVLM
from logan.models.registry import check_model, load_model

FAMILIES = ["qwen2_vl", "qwen2_5_vl", "idefics3", "gemma3", "llava_onevision", "internvl"]
INSTRUCTION = "Describe this image concisely."
SIZES = [(64, 64), (90, 60), (60, 130), (200, 120), (48, 96), (120, 80), (70, 70), (150, 50)]  # (width, height)
PARTS = ["img", "inst", "desp", "inst_desp", "caption"]
CPU = torch.device("cpu")
CANCELLING = {"max_prob_gap", "mink_plus_plus"}  # differences of log-probabilities


def hf_vlm(folder: Path, **changes) -> HFVLM:
    return load_model(ModelConfig(**{"name": "hf-vlm", "model_path": str(folder), "conv_mode": "chat_template",
                                     **changes}), CPU, torch.float32)


@pytest.fixture(scope="module")
def adapters(hf_vlms) -> dict[str, HFVLM]:
    return {name: hf_vlm(folder) for name, folder in hf_vlms.items()}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[tuple[str, tuple[int, int]]]:
    """Eight PNGs of eight sizes: smooth enough that resampling stays inside 0-255."""
    folder = tmp_path_factory.mktemp("hf_vlm_images")
    out = []
    for i, (w, h) in enumerate(SIZES):
        path = folder / f"{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(40, 216, (h, w, 3), dtype=np.uint8)).save(path)
        out.append((str(path), (w, h)))
    return out


def work_items(model: HFVLM, images) -> list[WorkItem]:
    words = model.tokenize("a red circle on a blue background") * 4  # a few tokens, whatever the BPE merged
    return [WorkItem(path, i % 2, description=tuple(words[: 3 + i % 3]), caption=tuple(words[i % 2: 4]), size=size)
            for i, (path, size) in enumerate(images)]


def scores(model, items, stds, batch_size, parts=PARTS, metrics=None, **settings) -> dict:
    metrics = metrics or sorted(n for n, spec in all_metrics().items() if spec.fn.__module__.startswith("logan."))
    engine = Engine(model, EngineSettings(parts=parts, metrics=metrics, instruction=INSTRUCTION, batch_size=batch_size,
                                          **settings))
    return {(std, r.sample_id, *key): v for std, results in engine.run(items, stds) for r in results
            for key, v in r.tokens.items()}


@pytest.mark.parametrize("family", FAMILIES)
def test_every_part_and_metric_exact_zero_at_std_zero_and_batch_invariant(adapters, images, family) -> None:
    """std 0 gives exactly 0; every metric of every part is finite; batches of 8 score as batches of 1 (float32,
    1e-5 relative; 2e-6 absolute for the two metrics that cancel); aug_kld runs on families whose image-token count
    follows the size (augmentations keep it)."""
    model = adapters[family]
    items = work_items(model, images)
    eight, one = scores(model, items, [0.0, 64.0], 8), scores(model, items, [0.0, 64.0], 1)
    assert eight.keys() == one.keys() and {k[2] for k in eight} == set(PARTS)
    for key, values in eight.items():
        assert len(values) and np.isfinite(values).all(), key
        if key[0] == 0.0 and all_metrics()[key[-1]].needs == "noise":
            assert np.all(values == 0), key
        # these two subtract log-probabilities of size 1-10, whose float32 resolution is ~5e-7: near 0 the
        # values keep that absolute error (another batch shape, another GEMM blocking)
        atol = 2e-6 if key[-1] in CANCELLING else 1e-9
        np.testing.assert_allclose(values, one[key], rtol=1e-5, atol=atol, err_msg=str(key))
    kl = [eight[(64.0, it.sample_id, "img", "max_k_no_norn_kl_div")].mean() for it in items]
    assert min(kl) > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_layout_and_image_positions_are_the_processors(adapters, family) -> None:
    """The encoded ids are what the processor makes of the chat prompt and the real image; img is its image-token
    mask (and its token-type ids where it gives them), whatever the number of image tokens per size."""
    model = adapters[family]
    counts = set()
    for i, (w, h) in enumerate(SIZES[:4]):
        image = np.random.default_rng(i).integers(0, 256, (h, w, 3), dtype=np.uint8)
        prompt = model.prompt(INSTRUCTION)
        bos = model.tokenizer.bos_token
        out = model.processor(images=[[image.astype(np.float32)]], text=[prompt], return_tensors="pt",
                              input_data_format="channels_last", add_special_tokens=not (bos and prompt.startswith(bos)))
        encoded = model.encode(INSTRUCTION, image_size=(w, h))
        ids = out["input_ids"][0].numpy()
        assert list(encoded.input_ids) == ids.tolist()
        mask = np.flatnonzero(ids == model.image_token_id)
        np.testing.assert_array_equal(encoded.part_positions("img")[0], mask)
        for key in ("mm_token_type_ids", "token_type_ids"):
            if key in out:
                np.testing.assert_array_equal(np.flatnonzero(out[key][0].numpy() == 1), mask)
        assert encoded.inst_end == len(ids) and encoded.part_positions("inst")[0][0] == mask[-1]
        counts.add(len(mask))
    assert len(counts) > 1 or family == "gemma3"  # Gemma 3: 16 tokens at any size (no pan-and-scan)


@pytest.mark.parametrize("family", FAMILIES)
def test_float_pixels_are_the_processors_and_keep_sub_grey_noise(adapters, images, family) -> None:
    """The float image processor gives the processor's own uint8 pixels up to its rounding, moves with noise of
    0.01 grey levels, and gives the clean image's tensors at std 0."""
    model = adapters[family]
    base = type(model.processor.image_processor).__mro__[1]  # the family's PIL class under the float wrapper
    plain = base(**model.processor.image_processor.to_dict())
    for path, _ in images[:3]:
        pixels = np.asarray(Image.open(path).convert("RGB"))
        ours = model.image_input(pixels.astype(np.float32)).tensors["pixel_values"]
        theirs = plain(images=[pixels], return_tensors="pt", **{k: v for k, v in model.images_kwargs.items()
                                                               if k != "input_data_format"})["pixel_values"]
        assert ours.shape == theirs.shape
        assert float((ours - theirs).abs().float().mean()) < 0.01  # normalised units: < 1 grey level on average
        again = model.image_input(pixels.astype(np.float32)).tensors["pixel_values"]
        nudged = model.image_input(pixels.astype(np.float32) + 0.01).tensors["pixel_values"]
        assert torch.equal(ours, again) and 0 < float((nudged - ours).abs().max()) < 1e-3


@pytest.mark.parametrize("family", ["qwen2_vl", "internvl", "idefics3"])
def test_the_kept_prefix_scores_as_whole_forwards(hf_vlms, adapters, images, family) -> None:
    """inference.reuse_prefix: M-RoPE positions sliced after the prefix (Qwen2-VL), plain decoders otherwise."""
    kept = hf_vlm(hf_vlms[family])
    kept.prepare_inference(reuse_prefix=True)
    items = work_items(kept, images)[:4]
    parts = ["img", "inst", "desp"]
    metrics = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2"]
    want = scores(adapters[family], items, [0.0, 64.0], 4, parts, metrics)
    got = scores(kept, items, [0.0, 64.0], 4, parts, metrics)
    assert kept._kept is not None and len(kept._kept.ids) == kept.encode(INSTRUCTION, image_size=SIZES[0]).image_start
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-4, atol=1e-9, err_msg=str(key))


def test_the_kept_prefix_is_off_where_it_cannot_be_kept(hf_vlms, caplog) -> None:
    model = hf_vlm(hf_vlms["gemma3"])
    with caplog.at_level("INFO"):
        model.prepare_inference(reuse_prefix=True)
    assert model._kept is None and "reuse_prefix is off" in caplog.text and "token_type_ids" in caplog.text


@pytest.mark.parametrize("family", FAMILIES)
def test_generate_left_padded_mixed_sizes(adapters, family) -> None:
    model = adapters[family]
    pixels = [np.random.default_rng(i).uniform(0, 255, (h, w, 3)).astype(np.float32) for i, (w, h) in
              enumerate(SIZES[:3])]
    prompts = [model.encode(INSTRUCTION, image_size=(p.shape[1], p.shape[0])) for p in pixels]
    out = model.generate(TokenBatch.build(prompts, model.pad_token_id, "left"), model.image_batch(pixels), 4)
    assert len(out) == 3 and all(len(ids) <= 4 and all(0 <= t < model.real_vocab for t in ids) for ids in out)


def test_the_real_vocabulary_is_the_tokenizers_length(adapters) -> None:
    """Qwen2's special tokens lie above its base vocabulary: len(tokenizer) keeps <|im_end|>, the LM head's
    padding rows are cut."""
    model = adapters["qwen2_vl"]
    assert model.real_vocab == len(model.tokenizer) > model.tokenizer.vocab_size
    assert model.model.lm_head.out_features > model.real_vocab
    assert model.tokenizer.convert_tokens_to_ids("<|im_end|>") < model.real_vocab
    encoded = model.encode(INSTRUCTION, image_size=SIZES[0])
    logits = model.forward_logits(TokenBatch.build([encoded], model.pad_token_id),
                                  model.image_batch([np.zeros((64, 64, 3), np.float32)]), torch.tensor([[0, 1]]))
    assert logits.shape == (1, 2, model.real_vocab)


def test_normalized_space_where_pixels_keep_their_channels(adapters, images) -> None:
    gemma = adapters["gemma3"]
    values = scores(gemma, work_items(gemma, images)[:2], [0.0, 8.0], 2, ["img"], ["max_k_no_norn_kl_div"],
                    space="normalized")
    assert all(np.all(v == 0) for k, v in values.items() if k[0] == 0.0)
    assert all(v.mean() > 0 for k, v in values.items() if k[0] == 8.0)
    with pytest.raises(LoganError, match="noise.space=normalized .* flattens its pixels into patches"):
        Engine(adapters["qwen2_vl"], EngineSettings(parts=["img"], metrics=["max_k_no_norn_kl_div"], instruction="x",
                                                    space="normalized"))


def test_llava_hf_through_hf_vlm_scores_as_its_dedicated_adapter(world, tmp_path) -> None:
    from hf_families import llava

    from logan.models.llava_hf import LlavaHF

    folder = llava(tmp_path / "llava", world.model)
    dedicated = LlavaHF(ModelConfig(model_path=str(folder), conv_mode="llava_hf"), CPU, torch.float32)
    generic = hf_vlm(folder, vocab_size=dedicated.real_vocab)  # the base vocabulary, as llava-hf cuts it
    entries = json.loads(world.members.read_text())[:3] + json.loads(world.nonmembers.read_text())[:3]
    words = dedicated.tokenize("a small red circle .")
    items = [WorkItem(e["image"], e["label"], description=tuple(words[: 2 + i % 3]),
                      caption=tuple(dedicated.tokenize(e["caption"]))) for i, e in enumerate(entries)]
    assert generic.encode(INSTRUCTION, [5], image_size=(40, 40)).input_ids == dedicated.encode(INSTRUCTION, [5]).input_ids
    want, got = scores(dedicated, items, [0.0, 16.0], 3), scores(generic, items, [0.0, 16.0], 3)
    assert want.keys() == got.keys()
    for key in want:
        # pixels: float32 through two preprocessing paths; summation order (thread count) moves values by up to 3e-7
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, atol=1e-6, err_msg=str(key))


def test_auto_takes_the_dedicated_adapter_where_one_exists(world, hf_vlms, tmp_path) -> None:
    from logan.models.hf_vlm import auto_family
    from logan.models.llava_hf import LlavaHF

    llava = load_model(ModelConfig(name="auto", model_path=str(world.model), conv_mode="auto"), CPU, torch.float32)
    assert type(llava) is LlavaHF and llava.conv_mode == "llava_v1"
    qwen = load_model(ModelConfig(name="auto", model_path=str(hf_vlms["qwen2_vl"]), conv_mode="auto"), CPU,
                      torch.float32)
    assert type(qwen) is HFVLM and qwen.conv_mode == "chat_template"
    original = tmp_path / "liuhaotian"
    original.mkdir()
    (original / "config.json").write_text(json.dumps({"model_type": "llava", "mm_vision_tower": "clip"}))
    next_ = tmp_path / "next"
    next_.mkdir()
    (next_ / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    assert [auto_family(ModelConfig(name="auto", model_path=str(f))) for f in (original, next_)] == [
        "llava-v1.5-7b", "llava-next"]


@pytest.mark.parametrize("config,why", [
    ({"model_type": "mllama"}, "a cross-attention model"),
    ({"model_type": "blip-2", "text_config": {"model_type": "t5"}}, "an encoder-decoder model"),
    ({"model_type": "florence2"}, "an encoder-decoder model"),
])
def test_models_without_image_tokens_in_the_decoder_are_refused(tmp_path, config, why) -> None:
    from transformers import AutoConfig

    AutoConfig.for_model(**config).save_pretrained(tmp_path)
    with pytest.raises(LoganError, match=f"{why}.*img part .* has no meaning there"):
        check_model(ModelConfig(name="hf-vlm", model_path=str(tmp_path), conv_mode="chat_template"))
    with pytest.raises(LoganError, match=why):
        check_model(ModelConfig(name="auto", model_path=str(tmp_path), conv_mode="auto"))


def test_remote_code_runs_only_when_trusted_and_is_recorded(hf_vlms, tmp_path) -> None:
    from logan.config import RunConfig
    from logan.pipeline.common import fingerprint

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "my_vlm",
                                                      "auto_map": {"AutoConfig": "configuration_my.MyConfig"}}))
    with pytest.raises(LoganError, match="needs its own Python code .* target_model.trust_remote_code=true"):
        check_model(ModelConfig(name="hf-vlm", model_path=str(tmp_path), conv_mode="chat_template"))
    assert fingerprint(RunConfig.from_dict({"target_model": {"trust_remote_code": True}}))["trust_remote_code"] is True
    with pytest.raises(LoganError, match="conv_mode=llava_v1 is a fixed template"):
        check_model(ModelConfig(name="hf-vlm", model_path=str(hf_vlms["qwen2_vl"]), conv_mode="llava_v1"))


@pytest.mark.parametrize("family", FAMILIES)
def test_tune_select_classify_through_the_cli(world, hf_vlms, tmp_path, capsys, family) -> None:
    """`logan tune target_model=auto` on the family's folder (descriptions generated, three std values), then
    select and classify at its optimal std: every part, all 18 default metrics, finite AUCs."""
    from logan.cli import main

    model = [f"target_model.model_path={hf_vlms[family]}"]
    data = [f"data.member_dataset={world.members}", f"data.nonmember_dataset={world.nonmembers}",
            "data.target_set_size=8", "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]"]
    tune = tmp_path / "tune"
    assert main(["tune", "target_model=auto", *model, *data, "noise.std_sets=[[0.0,16.0,128.0]]",
                 "img_metrics.parts=[img,inst,desp,inst_desp]", "generation.num_gen_tokens=4",
                 "inference.batch_size=4", "device=cpu", f"path.output_dir={tune}"]) == 0
    optimal = json.loads((tune / "optimal_std.json").read_text())
    assert optimal["optimal_std"] in (16.0, 128.0)
    assert json.loads((tune / "run_fingerprint.json").read_text())["fingerprint"]["trust_remote_code"] is False
    assert main(["select", f"path.output_dir={tune}"]) == 0
    out = tmp_path / "classify"
    assert main(["classify", f"noise.std={tune / 'optimal_std.json'}", f"path.output_dir={out}"]) == 0
    rows = json.loads((out / "metrics.json").read_text())
    assert {r["part"] for r in rows} == {"img", "inst", "desp", "inst_desp"}
    assert all(np.isfinite(r["auc"]) for r in rows) and len({r["metric"] for r in rows}) == 18


def test_auto_by_hub_id_resolves_through_the_cache_and_records_the_commit(world, hf_vlms, hub_cache, tmp_path,
                                                                           caplog) -> None:
    """`logan tune target_model=auto target_model.model_path=ORG/NAME`: the tiny Qwen2-VL folder as a snapshot of
    a Hub repository in the cache (offline) is found by its id, scored through hf-vlm, and its commit recorded."""
    from hub_fakes import add_snapshot, fake_commit, folder_files

    from logan.cli import main

    caplog.set_level("INFO")  # as the CLI's own logging setup has it (pytest's handler keeps basicConfig out)
    repo, commit = "tiny-org/tiny-qwen2-vl", fake_commit("qwen2-vl")
    snapshot = add_snapshot(hub_cache, repo, folder_files(hf_vlms["qwen2_vl"]), commit)
    out = tmp_path / "tune"
    assert main(["tune", "target_model=auto", f"target_model.model_path={repo}", f"path.output_dir={out}",
                 f"data.member_dataset={world.members}", f"data.nonmember_dataset={world.nonmembers}",
                 "data.target_set_size=4", "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]",
                 "noise.std_sets=[[0.0,16.0]]", "img_metrics.parts=[img,inst]", "inference.batch_size=4",
                 "device=cpu"]) == 0
    record = json.loads((out / "config.json").read_text())["resolved"]["target_model.model_path"]
    assert record["commit"] == commit and record["uri"] == f"hf://{repo}@{commit}" and record["path"] == str(snapshot)
    fingerprint = json.loads((out / "run_fingerprint.json").read_text())["fingerprint"]
    assert fingerprint["target_model"] == "auto" and fingerprint["model_path"] == f"hf://{repo}@{commit}"
    assert json.loads((out / "provenance.json").read_text())["models"]["target_model.model_path"]["commit"] == commit
    assert f"target_model=auto: adapter hf-vlm for {snapshot}" in (out / "logan.log").read_text()
    scores = pd.read_parquet(out / "per_std" / "std_16.0" / "scores.parquet")
    assert set(scores.part) == {"img", "inst"} and len(set(scores.sample_id)) == 4 and np.isfinite(scores.value).all()


def test_logits_the_model_post_processes_are_refused_at_load(hf_vlms, adapters) -> None:
    """LOGAN's forward is compared with the model's own on one image when it loads: a model that changes its
    logits after the LM head in a way hf-vlm does not reproduce is refused (a tanh soft-cap it finds itself)."""
    gemma = adapters["gemma3"]
    assert gemma.model.config.text_config.final_logit_softcapping == 30.0 and gemma.logit_softcap is None
    model = hf_vlm(hf_vlms["internvl"])
    model.model.register_forward_hook(lambda module, args, out: out.__setitem__("logits", out["logits"] * 2))
    with pytest.raises(LoganError, match="LOGAN's forward differs from the model's own by .* in the logits"):
        model._verify()


def test_gemma3_pan_and_scan_crops_are_image_tokens(hf_vlms, images) -> None:
    """target_model.processor_kwargs reach the processor: Gemma 3's pan-and-scan adds a 16-token block per crop,
    and the crops are scored like the image (exactly 0 at std 0, the same in any batch)."""
    from logan.compose import compose

    keys = ["target_model=hf-vlm", "target_model.processor_kwargs.do_pan_and_scan=true",
            "target_model.processor_kwargs.pan_and_scan_min_crop_size=32"]
    kwargs = compose(keys)["target_model"]["processor_kwargs"]
    model = hf_vlm(hf_vlms["gemma3"], processor_kwargs=kwargs)
    items = work_items(model, images)[:4]  # 64 x 64, 90 x 60, 60 x 130, 200 x 120
    counts = [model.encode(INSTRUCTION, image_size=it.size).n_image for it in items]
    assert counts[0] == 16 and max(counts) > 16
    metrics = ["max_k_no_norn_kl_div", "ppl"]
    together, alone = (scores(model, items, [0.0, 64.0], size, ["img", "inst"], metrics) for size in (4, 1))
    for item, count in zip(items, counts):
        assert len(together[(64.0, item.sample_id, "img", "max_k_no_norn_kl_div")]) == count
        assert np.all(together[(0.0, item.sample_id, "img", "max_k_no_norn_kl_div")] == 0)
    for key, values in together.items():
        np.testing.assert_allclose(values, alone[key], rtol=1e-5, atol=1e-9, err_msg=str(key))
