"""The engine's speed machinery keeps its numbers: prefetch, batch_size=auto, the dropped padding mask,
torch.compile, and the divergence noise floor of batch layouts."""

from __future__ import annotations

import json
import logging
import threading
import time

import numpy as np
import pytest
import torch

from logan.config import ModelConfig, RunConfig
from logan.engine import Engine, EngineSettings, WorkItem, auto_batch_size
from logan.errors import LoganError
from logan.metrics import all_metrics
from logan.models.base import right_padded
from logan.models.contract import TokenBatch
from logan.models.llava_hf import LlavaHF
from logan.prefetch import Prefetch

METRICS = sorted(n for n, spec in all_metrics().items() if spec.needs == "noise")
SMALLEST_DEFAULT_STD = 0.005  # the first value of conf/noise/default.yaml's grid


@pytest.fixture(scope="module")
def items(world, model) -> list[WorkItem]:
    entries = json.loads(world.members.read_text())[:4] + json.loads(world.nonmembers.read_text())[:4]
    # descriptions of different lengths: batches need padding
    return [WorkItem(e["image"], e["label"], description=tuple(model.tokenize("a small red circle ." * (1 + i % 3))))
            for i, e in enumerate(entries)]


def scores(model, items, stds, parts=("img", "desp"), metrics=METRICS, **settings) -> dict:
    engine = Engine(model, EngineSettings(parts=list(parts), metrics=list(metrics),
                                          instruction="Describe this image concisely.", **settings))
    out = {}
    for std, results in engine.run(items, stds):
        for res in results:
            for key, values in res.tokens.items():
                out[(std, res.sample_id, *key)] = values
            out[(std, res.sample_id, "losses")] = np.array([v for loss in res.losses.values() for v in loss[:2]])
    return out


def test_prefetch_yields_the_same_items_in_order_and_stays_bounded() -> None:
    made = []

    def source():
        for i in range(50):
            made.append(i)
            yield i

    with Prefetch(source(), depth=3) as stream:
        got = []
        for item in stream:
            time.sleep(0.001)
            assert len(made) - len(got) <= 3 + 2  # queued + being handed over + being made
            got.append(item)
    assert got == list(range(50))
    assert list(Prefetch(iter(range(7)), depth=0)) == list(range(7))


def test_prefetch_raises_the_producers_error_at_its_item_and_stops_early() -> None:
    def failing():
        yield 1
        yield 2
        raise ValueError("broken image")

    stream = Prefetch(failing(), depth=2)
    assert next(stream) == 1 and next(stream) == 2
    with pytest.raises(ValueError, match="broken image"):
        next(stream)

    made = []

    def endless():
        i = 0
        while True:
            made.append(i)
            yield i
            i += 1

    with Prefetch(endless(), depth=2) as stream:
        assert next(stream) == 0
    count = len(made)
    time.sleep(0.1)
    assert len(made) == count <= 5  # the producer stopped with the consumer
    assert not [t for t in threading.enumerate() if t.name == "logan-prefetch"]


def test_auto_batch_size_halves_until_it_fits() -> None:
    tried = []

    def trial(size: int) -> None:
        tried.append(size)
        if size > 12:
            raise torch.OutOfMemoryError("CUDA out of memory")

    assert auto_batch_size(trial, 64) == 8
    assert tried == [64, 32, 16, 8]
    assert auto_batch_size(trial, 5) == 5

    def never(size: int) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(LoganError, match="even at inference.batch_size=1"):
        auto_batch_size(never, 4)


def test_batch_size_auto_config_and_cpu_default(model, items) -> None:
    assert RunConfig.from_dict({"inference": {"batch_size": "auto"}}).inference.batch_size == "auto"
    assert RunConfig.from_dict({"inference": {"batch_size": "16"}}).inference.batch_size == 16
    for bad in ("big", 0):
        with pytest.raises(LoganError, match="inference.batch_size"):
            RunConfig.from_dict({"inference": {"batch_size": bad}})

    def engine(batch_size: int | str) -> Engine:
        return Engine(model, EngineSettings(parts=["img", "desp"], metrics=METRICS, instruction="Describe.",
                                            batch_size=batch_size))

    assert engine("auto").batch_size(items) == len(items) == 8  # all of a small run in one batch
    assert engine("auto").batch_size(items * 3) == 16           # at most 16 on the CPU
    assert [len(b) for b in engine("auto").batches(items)] == [8]
    assert [len(b) for b in engine(3).batches(items)] == [3, 3, 2]  # another layout, with a ragged last batch
    auto = scores(model, items, [8.0], batch_size="auto")
    fixed = scores(model, items, [8.0], batch_size=3)
    assert auto.keys() == fixed.keys() and len(auto) == len(items) * (2 * len(METRICS) + 1)
    assert all(v.mean() > 0 for k, v in auto.items() if k[-1] == "max_k_no_norn_kl_div")  # not a zeros-vs-zeros match
    for key in auto:
        # measured on the CPU: a batch of 8 vs 3 moves values by at most 1.2e-7 relative plus 1e-9 absolute
        # (float32 rounding of tokens whose divergence is ~1e-6); another sample's noise or rows differ by O(1)
        np.testing.assert_allclose(fixed[key], auto[key], rtol=1e-5, atol=1e-8, err_msg=str(key))


def test_prefetch_and_host_threads_do_not_change_scores(model, items) -> None:
    stds = [0.0, 3.0, 40.0]
    inline = scores(model, items, stds, batch_size=3, prefetch=0, workers=1)
    threaded = scores(model, items, stds, batch_size=3, prefetch=4, workers=4)
    expected = {(std, it.sample_id, part, metric) for std in stds for it in items for part in ("img", "desp")
                for metric in METRICS} | {(std, it.sample_id, "losses") for std in stds for it in items}
    assert inline.keys() == threaded.keys() == expected
    for key in inline:  # the same batches in the same order: bit for bit, whichever thread made the inputs
        np.testing.assert_array_equal(inline[key], threaded[key], err_msg=str(key))
    zero = [v for k, v in inline.items() if k[0] == 0.0 and k[2] != "losses"]
    assert len(zero) == len(items) * 2 * len(METRICS) and all(v.size and np.all(v == 0) for v in zero)
    assert all(v.mean() > 0 for k, v in inline.items() if k[0] == 40.0 and k[-1] == "max_k_no_norn_kl_div")


def test_right_padding_mask_is_dropped_without_changing_logits(model, items) -> None:
    encoded = [Engine(model, EngineSettings(parts=["desp"], metrics=METRICS, instruction="Describe.")).encode(it, "gen")
               for it in items[:3]]
    tokens = TokenBatch.build(encoded, model.pad_token_id, "right")
    ids, mask = tokens.input_ids, tokens.attention_mask
    assert right_padded(mask) and not bool(mask.all())
    assert not right_padded(TokenBatch.build(encoded, model.pad_token_id, "left").attention_mask)
    from logan.data.images import load_image

    images = model.image_batch([load_image(it.sample_id)[0].astype(np.float32) for it in items[:3]])
    positions = torch.arange(ids.shape[1]).expand(len(encoded), -1)
    ours = model.forward_logits(tokens, images, positions)
    with torch.no_grad():
        masked = model.model(input_ids=ids, attention_mask=mask, **images.tensors).logits[..., : model.real_vocab]
    for row, seq in enumerate(encoded):
        n = len(seq.input_ids)
        torch.testing.assert_close(ours[row, :n], masked[row, :n], rtol=1e-5, atol=1e-5)


def test_noise_floor_of_batch_layouts_is_far_below_the_smallest_std(model, items) -> None:
    engine = Engine(model, EngineSettings(parts=["img"], metrics=["max_k_no_norn_kl_div"], instruction="Describe.",
                                          batch_size=len(items)))
    floor = engine.noise_floor(items)
    assert set(floor) == {"position", "batch_size"}
    assert all(len(v) == len(items) * model.n_image_tokens for v in floor.values())
    worst = max(float(v.max()) for v in floor.values())
    smallest = scores(model, items, [SMALLEST_DEFAULT_STD], parts=["img"], metrics=["max_k_no_norn_kl_div"])
    median = float(np.median(np.concatenate([v for k, v in smallest.items() if k[-1] == "max_k_no_norn_kl_div"])))
    assert worst < median / 100, (worst, median)  # float32: layouts are invisible next to the attack's signal


def test_compiled_model_and_metrics_match_eager(world, items, caplog) -> None:
    from torch._dynamo.utils import counters

    compiled = LlavaHF(ModelConfig(model_path=str(world.model)), torch.device("cpu"), torch.float32)
    eager_model = LlavaHF(ModelConfig(model_path=str(world.model)), torch.device("cpu"), torch.float32)
    metrics = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2"]
    eager = scores(eager_model, items[:4], [0.0, 16.0], metrics=metrics, batch_size=2)
    graphs = counters["stats"]["unique_graphs"]
    with caplog.at_level(logging.WARNING):
        compiled.prepare_inference(compile=True)
        fast = scores(compiled, items[:4], [0.0, 16.0], metrics=metrics, batch_size=2, compile=True, row_chunk=64)
    # compiled for real (blocks and metric reduction), not an eager fallback compared with eager
    assert counters["stats"]["unique_graphs"] >= graphs + 2
    assert not [r.getMessage() for r in caplog.records if "compile" in r.getMessage()]
    assert eager.keys() == fast.keys() and len(eager) == 4 * 2 * (2 * len(metrics) + 1)
    assert all(v.mean() > 0 for k, v in eager.items() if k[0] == 16.0 and k[-1] in metrics)
    for key in eager:
        if key[0] == 0.0 and key[-1] != "losses":
            assert fast[key].size and np.all(fast[key] == 0)  # clean and noisy pass still see identical kernels
        else:
            np.testing.assert_allclose(fast[key], eager[key], rtol=1e-3, atol=1e-7)
    prompt = compiled.encode("Describe this image concisely.", None)
    tokens = TokenBatch.build([prompt], compiled.pad_token_id, "left")
    from logan.data.images import load_image

    pixels = compiled.image_batch([load_image(items[0].sample_id)[0].astype(np.float32)])
    assert compiled.generate(tokens, pixels, 4) == eager_model.generate(tokens, pixels, 4)


def test_generation_batch_auto_halves_on_out_of_memory_and_keeps_every_description(world, model, tmp_path,
                                                                                   monkeypatch):
    """generation.batch_size=auto starts wide and halves while generate() runs out of memory; the
    descriptions are those of a fixed small batch size (greedy decoding of the same inputs)."""
    from logan.pipeline.describe import describe

    images = {e["image"]: e["image"] for e in json.loads(world.members.read_text())[:5]}  # id -> file
    real, sizes = model.generate, []

    def tight(tokens, images, n):
        sizes.append(tokens.input_ids.shape[0])
        if tokens.input_ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(tokens, images, n)

    cfg = RunConfig.from_dict({"generation": {"num_gen_tokens": 4}})
    monkeypatch.setattr(model, "generate", tight)
    auto = describe(cfg, model, images, tmp_path / "auto.json")
    assert sizes[:3] == [5, 4, 2] and set(sizes[3:]) <= {2, 1} and sum(sizes[2:]) == 5
    monkeypatch.setattr(model, "generate", real)
    fixed = describe(RunConfig.from_dict({"generation": {"num_gen_tokens": 4, "batch_size": 1}}), model, images,
                     tmp_path / "fixed.json")
    assert set(auto) == set(images) and auto == fixed and all(len(ids) == 4 for ids in auto.values())

    monkeypatch.setattr(model, "generate", tight)
    with pytest.raises(torch.OutOfMemoryError):  # a fixed batch size is the user's choice: no silent change
        describe(RunConfig.from_dict({"generation": {"num_gen_tokens": 4, "batch_size": 4}}), model, images,
                 tmp_path / "four.json")
