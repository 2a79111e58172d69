"""The Python API: typed results, load_run, the README's notebook example, classify at a tuning run."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import logan
from logan.errors import LoganError
from logan.runs import ClassifyResult, TuneResult

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = {"std_sets": [[0.0, 2.0, 20.0]], "batch_size": 4, "target_set_size": 16}


@pytest.fixture(scope="module")
def tuned(world, tmp_path_factory) -> TuneResult:
    out = tmp_path_factory.mktemp("api") / "tune"
    result = logan.tune(model_path=world.model, members=world.members, nonmembers=world.nonmembers,
                        parts=["img", "inst"], output_dir=out, **FAST)
    assert isinstance(result, TuneResult)
    return result


def test_tune_returns_the_selection_and_its_curves(tuned: TuneResult) -> None:
    saved = json.loads((tuned.output_dir / "optimal_std.json").read_text())
    assert tuned.optimal_std == saved["optimal_std"] and tuned.optimal_std in (2.0, 20.0)
    assert tuned.per_part == {p: e["optimal_std"] for p, e in saved["per_part"].items()}
    assert set(tuned.per_part) == {"img", "inst"}
    curves = tuned.curves
    assert {"part", "metric", "std", "target_mean", "reference_mean", "gap", "tune_auc"} <= set(curves.columns)
    img = curves[(curves.part == "img") & (curves.metric == saved["selection_metric"])]
    assert list(img["std"]) == [0.0, 2.0, 20.0]
    assert np.allclose(img.gap, img.target_mean - img.reference_mean)
    assert f"optimal std = {tuned.optimal_std:g}" in tuned.summary()


def test_load_run_reads_back_the_same_objects(tuned: TuneResult, tmp_path: Path) -> None:
    again = logan.load_run(tuned.output_dir)
    assert isinstance(again, TuneResult) and again.selection == tuned.selection
    with pytest.raises(LoganError, match="not a LOGAN run folder"):
        logan.load_run(tmp_path)


def test_classify_takes_the_tuning_run_settings_and_scores_each_part_at_its_std(tuned, tmp_path, caplog) -> None:
    caplog.set_level(logging.INFO)
    result = logan.classify(std=str(tuned.output_dir / "optimal_std.json"), per_part=True,
                            output_dir=tmp_path / "classify")
    assert isinstance(result, ClassifyResult)
    # the tuning run's parts, model and target set, without naming them again
    assert set(result.metrics.part) == {"img", "inst"}
    target = pd.read_parquet(tuned.output_dir / "datasets" / "target_dataset.parquet")
    assert set(result.scores.sample_id) == set(target.sample_id) and set(result.scores.image) == set(target.path)
    assert "settings of the run" in caplog.text and "img_metrics.parts=['img', 'inst']" in caplog.text
    # each part at the std its own curve selected, and only there
    assert {p: set(g["std"]) for p, g in result.metrics.groupby("part")} == {
        p: {s} for p, s in tuned.per_part.items()}
    # the rows are the files' rows; ROC arrays agree with the row's AUC
    pd.testing.assert_frame_equal(result.metrics, pd.DataFrame(json.loads((result.output_dir / "metrics.json")
                                                                        .read_text())))
    row = result.metrics[(result.metrics.metric == "max_k_no_norn_kl_div") & (result.metrics.part == "img")
                         & (result.metrics.k == 1.0)].iloc[0]
    roc = result.roc("max_k_no_norn_kl_div", "img")
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    assert roc.auc == pytest.approx(row.auc) and roc.fpr[-1] == 1.0
    assert "each part at its own selected std" in result.table()
    again = logan.load_run(result.output_dir)
    assert again.metrics.equals(result.metrics) and again.k == result.k


def test_an_explicit_setting_that_differs_from_the_tuning_run_is_kept_and_reported(tuned, tmp_path, caplog) -> None:
    result = logan.classify(std=str(tuned.output_dir / "optimal_std.json"), parts=["img"],
                            output_dir=tmp_path / "classify")
    assert set(result.metrics.part) == {"img"}
    assert set(result.metrics["std"]) == {tuned.optimal_std}
    assert re.search(r"img_metrics\.parts=\['img'\] \(that run: \['img', 'inst'\]\) differs", caplog.text)


def test_select_reads_the_run_parts_and_takes_a_new_rule(tuned: TuneResult) -> None:
    result = logan.select(output_dir=tuned.output_dir, **{"selection.part": "inst", "selection.rule": "max_abs_gap"})
    assert result.selection["part"] == "inst" and result.selection["rule"] == "max_abs_gap"
    assert result.optimal_std == result.selection["alternatives"]["max_abs_gap"]
    back = logan.select(output_dir=tuned.output_dir)  # the run's own parts, default rule: as tune wrote it
    assert back.selection["part"] == "img" and back.optimal_std == tuned.optimal_std


def test_keyword_and_string_settings_and_their_errors(world, tmp_path) -> None:
    with pytest.raises(TypeError, match="unknown setting 'outdir'.*Did you mean 'output_dir'"):
        logan.tune(outdir=tmp_path)
    with pytest.raises(TypeError, match="takes a list of 'key=value' strings"):
        logan.tune("seed=1")
    with pytest.raises(LoganError, match="no key 'data.target_set_sise'. Did you mean 'data.target_set_size'"):
        logan.tune(["data.target_set_sise=8"])
    with pytest.raises(LoganError, match="unknown target_model 'llava-hff'"):
        logan.tune(model="llava-hff")
    cfg = logan.api.configure("tune", ["seed=1", "data.target_set_size=10"], {"seed": 2, "data.n_nm_ratio": 0.25})
    assert (cfg.seed, cfg.data.target_set_size, cfg.data.n_nm_ratio) == (2, 10, 0.25)  # keywords win
    assert not (tmp_path / "outputs").exists()


def test_the_readme_notebook_example_runs(world, tmp_path: Path, monkeypatch) -> None:
    text = README.read_text()
    block = text.split("<!-- notebook example", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    swaps = {'"/models/llava-1.5-7b-hf"': repr(str(world.model)), '"members.json"': repr(str(world.members)),
             '"nonmembers.json"': repr(str(world.nonmembers)),
             "target_set_size=300": "target_set_size=16, std_sets=[[0.0, 2.0, 20.0]], batch_size=4"}
    for old, new in swaps.items():
        assert old in block, f"the README example no longer has {old}"
        block = block.replace(old, new)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    namespace: dict = {}
    try:
        exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own code
    finally:  # the example's logging.basicConfig is the notebook's business, not the other tests'
        root.setLevel(level)
        for handler in set(root.handlers) - set(handlers):
            root.removeHandler(handler)
    assert isinstance(namespace["result"], ClassifyResult) and len(namespace["best"]) == 5
    assert 0.0 <= namespace["roc"].auc <= 1.0
    assert (tmp_path / "runs" / "classify" / "metrics.json").is_file()
