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
from logan.results import load_scores

METRICS = sorted(n for n, spec in all_metrics().items() if spec.needs == "noise")  # LOGAN's own


@pytest.fixture(scope="module")
def items(world, model) -> list[WorkItem]:
    entries = json.loads(world.members.read_text())[:3] + json.loads(world.nonmembers.read_text())[:3]
    return [WorkItem(e["image"], e["label"], description=tuple(model.tokenize("a small red circle .")),
                     caption=tuple(model.tokenize(e["caption"]))) for e in entries]


def scores(model, items, stds, parts, batch_size=4, **settings) -> dict:
    engine = Engine(model, EngineSettings(parts=parts, metrics=METRICS, instruction="Describe this image concisely.",
                                          batch_size=batch_size, **settings))
    out = {}
    for std, results in engine.run(items, stds):
        for res in results:
            for key, values in res.tokens.items():
                out[(std, res.sample_id, *key)] = values
    return out


def test_std_zero_is_exactly_zero_and_divergence_grows(model, items) -> None:
    parts = ["img", "inst", "desp", "inst_desp", "caption"]
    values = scores(model, items, [0.0, 4.0, 64.0, 1024.0], parts)
    zero = [v for k, v in values.items() if k[0] == 0.0]
    assert len(zero) == len(items) * len(parts) * len(METRICS)
    assert all(np.all(v == 0.0) for v in zero)
    for part in ("img", "caption"):
        for metric in ("max_k_no_norn_kl_div", "max_k_renyi_divergence_2"):
            means = [np.mean([values[(std, it.sample_id, part, metric)].mean() for it in items])
                     for std in (4.0, 64.0, 1024.0)]
            assert 0 < means[0] < means[1] < means[2], (part, metric, means)


def test_batch_size_does_not_change_scores(model, items) -> None:
    parts = ["img", "inst", "desp", "caption"]
    one = scores(model, items, [8.0], parts, batch_size=1)
    four = scores(model, items, [8.0], parts, batch_size=4)
    assert one.keys() == four.keys()
    for key in one:
        np.testing.assert_allclose(one[key], four[key], rtol=2e-3, atol=1e-9)


def test_sample_order_does_not_change_scores(model, items) -> None:
    forward = scores(model, items, [8.0], ["img"], batch_size=2)
    backward = scores(model, items[::-1], [8.0], ["img"], batch_size=2)
    for key in forward:
        np.testing.assert_allclose(forward[key], backward[key], rtol=2e-3, atol=1e-9)


def test_img_only_stops_after_the_image_and_matches_full_sequences(model, items) -> None:
    engine = Engine(model, EngineSettings(parts=["img"], metrics=METRICS, instruction="Describe this image concisely."))
    encoded = engine.encode(items[0], "gen")
    assert len(encoded.input_ids) == encoded.image_end  # nothing after the image tokens is computed
    assert engine.plan == {"gen": ["img"]}
    alone = scores(model, items, [16.0], ["img"])
    with_text = scores(model, items, [16.0], ["img", "desp"])
    for key, value in alone.items():
        np.testing.assert_allclose(value, with_text[key], rtol=2e-3, atol=1e-9)


def test_part_positions_follow_true_lengths(model, items) -> None:
    engine = Engine(model, EngineSettings(parts=["inst", "caption"], metrics=METRICS, instruction="Describe."))
    for item in items:
        seq = engine.encode(item, "cap")
        positions, targets = seq.part_positions("caption")
        assert list(targets) == list(item.caption)
        assert positions[-1] == len(seq.input_ids) - 2
        inst_pos, inst_targets = seq.part_positions("inst")
        assert inst_pos[0] == seq.image_end - 1 and len(inst_targets) == seq.inst_end - seq.image_end


def test_noise_draws_average(model, items) -> None:
    one = scores(model, items[:2], [32.0], ["img"], draws=1)
    three = scores(model, items[:2], [32.0], ["img"], draws=3)
    key = next(iter(one))
    assert not np.allclose(one[key], three[key])
    assert np.all(three[key] > 0)


def test_quantize_floor_collapses_tiny_stds(model, items) -> None:
    floor = scores(model, items[:2], [0.005, 0.01], ["img"], quantize="floor")
    key = (0.005, items[0].sample_id, "img", "max_k_no_norn_kl_div")
    twin = (0.01, items[0].sample_id, "img", "max_k_no_norn_kl_div")
    assert floor[key].mean() > 0 and floor[twin].mean() > 0
    exact = scores(model, items[:2], [0.005], ["img"])
    assert exact[key].mean() < floor[key].mean() / 10


def test_normalized_space_runs_and_is_zero_at_zero(model, items) -> None:
    values = scores(model, items[:2], [0.0, 8.0], ["img"], space="normalized")
    assert all(np.all(v == 0) for k, v in values.items() if k[0] == 0.0)
    assert all(v.mean() > 0 for k, v in values.items() if k[0] == 8.0 and k[3] == "max_k_no_norn_kl_div")


def test_resume_after_interrupted_run_matches_uninterrupted(world, tmp_path: Path, monkeypatch) -> None:
    full = tmp_path / "full"
    run("tune", world.overrides(full, "img_metrics.parts=[img,desp]"))
    import logan.pipeline.common as common

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
    a = load_scores(full).sort_values(["std", "sample_id", "part", "metric", "k"]).reset_index(drop=True)
    b = load_scores(broken).sort_values(["std", "sample_id", "part", "metric", "k"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert json.loads((full / "optimal_std.json").read_text())["optimal_std"] == json.loads(
        (broken / "optimal_std.json").read_text())["optimal_std"]


def test_changed_settings_are_refused(world, tmp_path: Path) -> None:
    from logan.errors import LoganError

    out = tmp_path / "run"
    run("tune", world.overrides(out, "img_metrics.parts=[img]", "noise.std_sets=[[1.0]]"))
    with pytest.raises(LoganError, match="different configuration"):
        run("tune", world.overrides(out, "img_metrics.parts=[img]", "noise.std_sets=[[1.0]]", "noise.quantize=floor"))


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
