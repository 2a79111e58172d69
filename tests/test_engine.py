"""Engine behaviour on the tiny LLaVA: exact zeros, growth with std, batch invariance, causality, resume."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from logan.api import run
from logan.engine import Engine, EngineSettings, WorkItem
from logan.metrics import all_metrics
from logan.models.llava_hf import LlavaHF
from logan.results import load_baselines, load_scores, std_folder

METRICS = sorted(n for n, spec in all_metrics().items() if spec.needs == "noise")  # LOGAN's own


@pytest.fixture(scope="module")
def items(world, model) -> list[WorkItem]:
    entries = json.loads(world.members.read_text())[:3] + json.loads(world.nonmembers.read_text())[:3]
    return [WorkItem(e["image"], e["label"], description=tuple(model.tokenize("a small red circle .")),
                     caption=tuple(model.tokenize(e["caption"]))) for e in entries]


def scores(model, items, stds, parts, batch_size=4, metrics=None, **settings) -> dict:
    engine = Engine(model, EngineSettings(parts=parts, metrics=metrics or METRICS,
                                          instruction="Describe this image concisely.", batch_size=batch_size,
                                          **settings))
    out = {}
    for std, results in engine.run(items, stds):
        for res in results:
            for key, values in res.tokens.items():
                out[(std, res.sample_id, *key)] = values
    return out


# Scores of one sample computed in two batch layouts agree to float32 rounding: measured on the CPU, at
# most 1.2e-7 relative plus ~1e-9 absolute (tokens whose divergence is ~1e-6 carry the rounding of a
# sum over the vocabulary). A sample scored with another sample's noise or tokens differs by O(1).
SAME = {"rtol": 1e-5, "atol": 1e-8}


def assert_same_scores(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    assert all(v.size for v in expected.values())
    for key, values in expected.items():
        np.testing.assert_allclose(got[key], values, **SAME, err_msg=str(key))


def sample_mean(values: dict, std: float, items, part: str, metric: str) -> float:
    return float(np.mean([values[(std, it.sample_id, part, metric)].mean() for it in items]))


def test_std_zero_is_exactly_zero_and_divergence_grows(model, items) -> None:
    parts = ["img", "inst", "desp", "inst_desp", "caption"]
    stds = [0.0, 4.0, 64.0, 1024.0]
    values = scores(model, items, stds, parts)
    assert set(values) == {(std, it.sample_id, part, metric) for std in stds for it in items for part in parts
                           for metric in METRICS}
    for (std, _, part, metric), v in values.items():
        assert v.size and np.all(np.isfinite(v)), (std, part, metric)
        if std == 0.0:  # every LOGAN metric on every part, exactly: clean and noisy passes are the same
            assert np.all(v == 0.0), (part, metric, v)
    for part in parts:
        for metric in METRICS:
            means = [sample_mean(values, std, items, part, metric) for std in stds[1:]]
            if metric == "max_k_renyi_inf_kl_div":  # 0 until the noise changes a token's argmax
                assert 0 <= means[0] <= means[1] < means[2], (part, metric, means)
            else:
                assert 0 < means[0] < means[1] < means[2], (part, metric, means)


def test_batch_size_does_not_change_scores(model, items) -> None:
    parts = ["img", "inst", "desp", "caption"]
    one = scores(model, items, [8.0], parts, batch_size=1)
    four = scores(model, items, [8.0], parts, batch_size=4)  # 4 + a ragged 2
    assert len(four) == len(items) * len(parts) * len(METRICS)
    assert sample_mean(four, 8.0, items, "img", "max_k_no_norn_kl_div") > 0
    assert_same_scores(one, four)


def test_sample_order_does_not_change_scores(model, items) -> None:
    forward = scores(model, items, [8.0], ["img"], batch_size=2)
    backward = scores(model, items[::-1], [8.0], ["img"], batch_size=2)
    assert len(forward) == len(items) * len(METRICS)
    assert_same_scores(backward, forward)


def test_img_only_stops_after_the_image_and_matches_full_sequences(model, items) -> None:
    engine = Engine(model, EngineSettings(parts=["img"], metrics=METRICS, instruction="Describe this image concisely."))
    encoded = engine.encode(items[0], "gen")
    assert len(encoded.input_ids) == encoded.image_end  # nothing after the image tokens is computed
    assert engine.plan == {"gen": ["img"]}
    full = Engine(model, EngineSettings(parts=["img", "desp"], metrics=METRICS, instruction="Describe this image "
                                        "concisely.")).encode(items[0], "gen")
    assert len(full.input_ids) > encoded.image_end and full.input_ids[:encoded.image_end] == encoded.input_ids
    alone = scores(model, items, [16.0], ["img"])
    with_text = scores(model, items, [16.0], ["img", "desp"])
    assert_same_scores(alone, {key: v for key, v in with_text.items() if key[2] == "img"})
    assert sample_mean(alone, 16.0, items, "img", "max_k_no_norn_kl_div") > 0


def test_img_scores_of_every_metric_do_not_depend_on_the_other_parts(model, items) -> None:
    """The last image row is scored against its clean argmax for img whatever else runs (it once took the
    first instruction token as its target when inst ran too: img mink at K = 0 moved 8.53 -> 30.71)."""
    every = sorted(all_metrics())
    alone = scores(model, items, [16.0], ["img"], metrics=every)
    together = scores(model, items, [16.0], ["img", "inst", "desp", "inst_desp"], metrics=every)
    assert {k[-1] for k in alone} == set(every)
    for key, value in alone.items():
        np.testing.assert_allclose(value, together[key], rtol=2e-3, atol=1e-6, err_msg=str(key))


def test_part_positions_follow_true_lengths(model, items) -> None:
    engine = Engine(model, EngineSettings(parts=["inst", "caption"], metrics=METRICS, instruction="Describe."))
    for item in items:
        seq = engine.encode(item, "cap")
        positions, targets = seq.part_positions("caption")
        assert list(targets) == list(item.caption)
        assert positions[-1] == len(seq.input_ids) - 2
        inst_pos, inst_targets = seq.part_positions("inst")
        assert inst_pos[0] == seq.image_end - 1 and len(inst_targets) == seq.inst_end - seq.image_end


def test_noise_draws_average(model, items, monkeypatch) -> None:
    """draws=3 is the mean of the per-token values of draws 0, 1 and 2 (each its own noise field)."""
    import logan.engine

    one = scores(model, items[:2], [32.0], ["img"], draws=1)
    three = scores(model, items[:2], [32.0], ["img"], draws=3)
    perturb = logan.engine.perturb_pixels
    single = [one]
    for offset in (1, 2):  # a one-draw run that uses draw `offset`'s noise field
        monkeypatch.setattr(logan.engine, "perturb_pixels",
                            lambda *a, draw=0, offset=offset, **k: perturb(*a, draw=draw + offset, **k))
        single.append(scores(model, items[:2], [32.0], ["img"], draws=1))
    assert three.keys() == one.keys() and len(one) == 2 * len(METRICS)
    for key in one:
        assert not np.allclose(single[0][key], single[1][key], rtol=1e-3), key  # the draws differ
        mean = np.mean([s[key].astype(np.float64) for s in single], axis=0)
        np.testing.assert_allclose(three[key], mean, rtol=1e-5, atol=1e-10, err_msg=str(key))


def test_quantize_floor_collapses_tiny_stds(model, items) -> None:
    """The original's uint8 floor turns every tiny std into the same perturbation (about half the pixels
    lowered by 1), so doubling the std does not change the divergence; without quantisation the
    divergence grows as std^2 at low noise."""
    stds = [0.005, 0.01]
    floor = scores(model, items[:2], stds, ["img"], quantize="floor")
    exact = scores(model, items[:2], stds, ["img"])
    metric = "max_k_no_norn_kl_div"
    floored = [sample_mean(floor, std, items[:2], "img", metric) for std in stds]
    plain = [sample_mean(exact, std, items[:2], "img", metric) for std in stds]
    assert floored[0] > 0 and plain[0] > 0, (floored, plain)
    assert 0.5 < floored[1] / floored[0] < 2, floored
    assert 3 < plain[1] / plain[0] < 5, plain
    assert plain[0] < floored[0] / 100, (plain, floored)  # a grey level of floor error dwarfs std 0.005


def test_normalized_space_runs_and_is_zero_at_zero(model, items) -> None:
    values = scores(model, items[:2], [0.0, 8.0], ["img"], space="normalized")
    pixel = scores(model, items[:2], [8.0], ["img"])
    assert len(values) == 2 * 2 * len(METRICS)
    assert all(v.size and np.all(v == 0) for k, v in values.items() if k[0] == 0.0)
    metric = "max_k_no_norn_kl_div"
    ratio = sample_mean(values, 8.0, items[:2], "img", metric) / sample_mean(pixel, 8.0, items[:2], "img", metric)
    # std keeps its grey-level meaning: the same size as pixel noise, somewhat larger because pixel noise is
    # averaged by the resize to the model's input (measured 2.1-2.7); a wrong scale (no /255, no /channel std)
    # moves it by > 10x
    assert 1 < ratio < 5, ratio


def test_resume_after_interrupted_run_matches_uninterrupted(world, tmp_path: Path, monkeypatch) -> None:
    full = tmp_path / "full"
    run("tune", world.overrides(full, "img_metrics.parts=[img,desp]"))
    from logan.pipeline import common

    real = common.StdWriter.add
    calls = {"n": 0}

    def crash_in_second_set(self, results):
        if self.std is not None and self.std >= 20.0:
            calls["n"] += 1
            if calls["n"] == 2:
                raise KeyboardInterrupt("killed")
        return real(self, results)

    broken = tmp_path / "broken"
    monkeypatch.setattr(common.StdWriter, "add", crash_in_second_set)
    with pytest.raises(KeyboardInterrupt):
        run("tune", world.overrides(broken, "img_metrics.parts=[img,desp]"))
    # every std runs in one pass over the samples (one chunk here): nothing is complete, nothing half-written
    assert sorted(p.name for p in (broken / "per_std").iterdir()) == [".partial"]
    assert not list((broken / "per_std").glob("*/done.json")) and not list(broken.rglob(".*.tmp"))
    monkeypatch.setattr(common.StdWriter, "add", real)
    generated = []
    monkeypatch.setattr(LlavaHF, "generate", lambda *a, **k: generated.append(1) or [])
    run("tune", world.overrides(broken, "img_metrics.parts=[img,desp]"))
    assert not generated  # descriptions came from the cache
    assert calls["n"] == 2  # the first run was killed while it computed the second std set
    keys = ["std", "sample_id", "part", "metric", "k"]
    a = load_scores(full).sort_values(keys).reset_index(drop=True)
    b = load_scores(broken).sort_values(keys).reset_index(drop=True)
    # one row per (std, sample, part, metric, K): 4 stds x 16 samples x 2 parts x LOGAN's metrics x 12 K
    assert len(a) == 4 * 16 * 2 * len(METRICS) * 12 and not a.duplicated(keys).any()
    pd.testing.assert_frame_equal(a, b)  # the resumed run's values are the uninterrupted run's, bit for bit
    base = ["sample_id", "part", "metric", "k"]
    pd.testing.assert_frame_equal(load_baselines(full).sort_values(base).reset_index(drop=True),
                                  load_baselines(broken).sort_values(base).reset_index(drop=True))
    for std in (0.0, 2.0, 20.0, 200.0):
        for table, order in (("tokens", ["sample_id", "part", "metric"]), ("losses", ["sample_id", "part"])):
            frames = [pd.read_parquet(std_folder(run_dir, std) / f"{table}.parquet").sort_values(order)
                      .reset_index(drop=True) for run_dir in (full, broken)]
            pd.testing.assert_frame_equal(*frames)
    assert json.loads((full / "optimal_std.json").read_text()) == json.loads((broken / "optimal_std.json").read_text())


def test_changed_settings_are_refused(world, tmp_path: Path) -> None:
    from logan.errors import LoganError

    out = tmp_path / "run"
    run("tune", world.overrides(out, "img_metrics.parts=[img]", "noise.std_sets=[[1.0]]"))
    before = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "logan.log"}
    with pytest.raises(LoganError, match="different configuration"):
        run("tune", world.overrides(out, "img_metrics.parts=[img]", "noise.std_sets=[[1.0]]", "noise.quantize=floor"))
    after = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "logan.log"}
    assert after == before and std_folder(out, 1.0) / "done.json" in before  # the finished run is left as it was


def test_llava_hf_scores_as_recorded(world, tmp_path: Path) -> None:
    """The typed model contract changed nothing llava-hf computes (tests/family_scores.py)."""
    from family_scores import record_or_compare

    from logan.config import ModelConfig

    def load(reuse: bool) -> LlavaHF:
        import torch

        adapter = LlavaHF(ModelConfig(model_path=str(world.model)), torch.device("cpu"), torch.float32)
        adapter.prepare_inference(reuse_prefix=reuse)
        return adapter

    record_or_compare("llava_hf", load, tmp_path)



def test_keying_samples_by_image_content_changes_no_score(model, items) -> None:
    """A sample keyed by the sha256 of its bytes and read from the bytes scores exactly as the same image keyed
    and read by its path did before: the noise is seeded from the bytes either way."""
    from dataclasses import replace
    from pathlib import Path

    from logan.data.images import sample_id

    by_content = [replace(it, sample_id=sample_id(Path(it.sample_id).read_bytes()),
                          image=Path(it.sample_id).read_bytes()) for it in items]
    ids = {it.sample_id: c.sample_id for it, c in zip(items, by_content)}
    parts = ["img", "inst", "desp", "caption"]
    old, new = scores(model, items, [2.0, 64.0], parts), scores(model, by_content, [2.0, 64.0], parts)
    assert {(k[0], ids[k[1]], *k[2:]) for k in old} == set(new)
    for key, values in old.items():
        np.testing.assert_array_equal(values, new[(key[0], ids[key[1]], *key[2:])])
