"""results.json of real tune, select and classify runs (checked against the package's JSON Schema), load_run on
folders with and without one, `logan compare`, and the optional experiment trackers (fake modules)."""

from __future__ import annotations

import json
import logging
import shutil
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest

import logan
from logan.cli import main
from logan.config import DEFAULT_METRICS
from logan.errors import LoganError
from logan.metrics.registry import get_metric
from logan.runs import ClassifyResult, CompareResult, TuneResult

FAST = {"std_sets": [[0.0, 2.0, 20.0]], "batch_size": 4, "target_set_size": 16}
PARTS = ["img", "inst"]
METRICS = list(DEFAULT_METRICS)  # img_metrics.metrics_to_use's default
LOGAN = [name for name in METRICS if get_metric(name).needs == "noise"]
PER_METRIC = {"needs", "orientation"}


@pytest.fixture(scope="module")
def runs(world, tmp_path_factory) -> dict[str, Path]:
    """A tuning run, a classify run at each part's own std and one at two stds given by number."""
    root = tmp_path_factory.mktemp("results")
    tuned = logan.tune(model_path=world.model, members=world.members, nonmembers=world.nonmembers, parts=PARTS,
                       output_dir=root / "tune", **FAST)
    logan.classify(std=str(tuned.output_dir / "optimal_std.json"), per_part=True, output_dir=root / "per_part")
    logan.classify(model_path=world.model, dataset=str(root / "tune" / "datasets" / "target_dataset.parquet"),
                   std=[2.0, 20.0], parts=PARTS, batch_size=4, output_dir=root / "two_stds")
    return {"tune": root / "tune", "per_part": root / "per_part", "two_stds": root / "two_stds"}


def read(folder: Path, name: str = "results.json") -> dict:
    return json.loads((folder / name).read_text())


def copy(folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def trapezoid_auc(fp: list[int], tp: list[int], n_nonmembers: int, n_members: int) -> float:
    return float(np.trapezoid(np.array(tp) / n_members, np.array(fp) / n_nonmembers))


# ---------------------------------------------------------------- results.json of each command


def test_tune_results_hold_every_curve_the_selection_and_the_provenance(runs) -> None:
    doc = logan.validate_results(runs["tune"])
    optimal = read(runs["tune"], "optimal_std.json")
    assert (doc["schema_version"], doc["command"], doc["versions"]["logan"]) == (1, "tune", logan.__version__)
    assert all(doc["versions"][name] for name in ("python", "torch", "transformers", "numpy"))
    assert doc["config"]["img_metrics"]["parts"] == PARTS and doc["config"]["seed"] == 0
    # the sets the run drew, and where they came from
    sets = doc["provenance"]["sets"]
    assert (sets["target"]["n"], sets["target"]["n_members"], sets["target"]["n_nonmembers"]) == (16, 8, 8)
    assert sets["reference"]["n_members"] == 0 and sets["target"]["content"].startswith("sha256:")
    assert doc["provenance"]["datasets"] == read(runs["tune"], "provenance.json")["datasets"]
    assert doc["provenance"]["fingerprint"] == read(runs["tune"], "run_fingerprint.json")["fingerprint"]
    # every (part, noise metric) over the grid at K = selection.k; the selection part's equal optimal_std.json's
    curves = pd.DataFrame(doc["curves"])
    assert len(curves) == len(PARTS) * len(LOGAN) * 3 and set(curves.k) == {1.0}
    assert set(zip(curves.part, curves.metric)) == {(p, m) for p in PARTS for m in LOGAN}
    for metric, points in optimal["curves"].items():
        mine = curves[(curves.part == optimal["part"]) & (curves.metric == metric)]
        assert mine.drop(columns=["part", "metric", "k"]).to_dict("records") == points
    for part, entry in optimal["per_part"].items():
        mine = curves[(curves.part == part) & (curves.metric == optimal["selection_metric"])]
        assert mine.drop(columns=["part", "metric", "k"]).to_dict("records") == entry["curve"]
    selection = doc["selection"]
    assert selection["optimal_std"] == optimal["optimal_std"] and selection["split"] == {"mode": "none"}
    assert selection["per_part"] == {p: e["optimal_std"] for p, e in optimal["per_part"].items()}
    assert selection["label_informed"] == optimal["label_informed"]
    assert doc["files"]["tuning_curve.png"] == "tuning_curve.png"


def test_classify_results_hold_the_metrics_rows_roc_curves_and_plan(runs) -> None:
    for name in ("per_part", "two_stds"):
        doc = logan.validate_results(runs[name] / "results.json")
        rows = read(runs[name], "metrics.json")
        assert doc["command"] == "classify" and doc["k"] == 1.0
        # metrics.json's rows, column-oriented, with the per-metric columns apart
        table = pd.DataFrame(doc["metrics"])
        expected = pd.DataFrame(rows).drop(columns=list(PER_METRIC))
        pd.testing.assert_frame_equal(table[expected.columns], expected, check_dtype=False)
        assert {m: d["needs"] for m, d in doc["metric_definitions"].items()} == {r["metric"]: r["needs"] for r in rows}
        # one ROC curve per row at K = 1; its area is the row's AUC
        at_k = {(r["std"], r["part"], r["metric"]): r for r in rows if r["k"] == 1.0}
        assert len(doc["roc"]) == len(at_k)
        for curve in doc["roc"]:
            row = at_k[(curve["std"], curve["part"], curve["metric"])]
            assert (curve["n_members"], curve["n_nonmembers"]) == (row["n_members"], row["n_nonmembers"])
            assert curve["fp"][0] == curve["tp"][0] == 0 and curve["fp"][-1] == row["n_nonmembers"]
            assert trapezoid_auc(curve["fp"], curve["tp"], row["n_nonmembers"], row["n_members"]) == \
                pytest.approx(row["auc"], abs=1e-12)
    per_part = read(runs["per_part"])
    tuned = read(runs["tune"], "optimal_std.json")
    assert per_part["plan"]["per_part"] == {p: e["optimal_std"] for p, e in tuned["per_part"].items()}
    assert per_part["plan"]["source"] == "../tune/optimal_std.json" and per_part["tuning_run"] == "../tune/results.json"
    assert (runs["per_part"] / per_part["tuning_run"]).is_file()
    assert (per_part["plan"]["n_members"], per_part["plan"]["n_nonmembers"]) == (8, 8)
    two = read(runs["two_stds"])
    assert two["plan"]["stds"] == [2.0, 20.0] and two["plan"]["source"] is None and two["tuning_run"] is None
    assert two["blind_baseline"] == read(runs["two_stds"], "blind_baseline.json")
    # the tuning run's sets: the same target samples, fingerprinted alike
    assert two["provenance"]["sets"]["target"] == read(runs["tune"])["provenance"]["sets"]["target"]


def test_select_writes_its_own_results_and_a_rerun_writes_the_same_rows(runs, tmp_path) -> None:
    tuned = copy(runs["tune"], tmp_path)
    before = read(tuned)
    logan.select(output_dir=tuned)
    doc = logan.validate_results(tuned)
    assert doc["command"] == "select"
    assert (doc["curves"], doc["selection"]) == (before["curves"], before["selection"])
    # classify's evaluation again on a copy of a finished run: the same rows, intervals and curves
    classified = copy(runs["per_part"], tmp_path)
    logan.classify(std=str(runs["tune"] / "optimal_std.json"), per_part=True, output_dir=classified)
    again, first = read(classified), read(runs["per_part"])
    assert (again["metrics"], again["roc"], again["blind_baseline"]) == (first["metrics"], first["roc"],
                                                                          first["blind_baseline"])
    assert again["plan"] | {"source": None} == first["plan"] | {"source": None}  # a link from another folder
    assert again["provenance"] == first["provenance"]


def test_a_file_that_does_not_match_the_schema_is_one_line(runs, tmp_path) -> None:
    doc = read(runs["per_part"])
    broken = tmp_path / "results.json"
    for change, where in [(lambda d: d["metrics"].pop("auc"), "metrics"),
                          (lambda d: d["metrics"]["auc"].__setitem__(0, 1.5), "metrics/auc/0"),
                          (lambda d: d.__setitem__("schema_version", 2), "schema_version"),
                          (lambda d: d["metrics"]["part"].pop(), "differ in length")]:
        mutated = json.loads(json.dumps(doc))
        change(mutated)
        broken.write_text(json.dumps(mutated))
        with pytest.raises(LoganError, match=where) as caught:
            logan.validate_results(broken)
        assert "\n" not in str(caught.value)
    with pytest.raises(LoganError, match="does not exist"):
        logan.validate_results(tmp_path / "nothing")


def test_load_run_reads_results_json_and_folders_written_before_it(runs, tmp_path) -> None:
    tuned, classified = logan.load_run(runs["tune"]), logan.load_run(runs["per_part"])
    assert isinstance(tuned, TuneResult) and tuned.results == read(runs["tune"])
    assert isinstance(classified, ClassifyResult) and classified.results["roc"] == read(runs["per_part"])["roc"]
    assert set(zip(tuned.curves.part, tuned.curves.metric)) == {(p, m) for p in PARTS for m in LOGAN}
    for folder in (runs["tune"], runs["per_part"]):  # an older folder: no results.json
        old = copy(folder, tmp_path)
        (old / "results.json").unlink()
        again = logan.load_run(old)
        assert again.results == {}
    old_tune, old_classify = logan.load_run(tmp_path / "tune"), logan.load_run(tmp_path / "per_part")
    assert old_tune.optimal_std == tuned.optimal_std and old_tune.per_part == tuned.per_part
    selected = old_tune.curves[old_tune.curves.part == old_tune.selection["part"]]
    merged = selected.merge(tuned.curves, on=["part", "metric", "std"], suffixes=("", "_new"))
    assert len(merged) == len(selected) and np.allclose(merged.tune_auc, merged.tune_auc_new)
    assert old_classify.metrics.equals(classified.metrics)


# ---------------------------------------------------------------- logan compare


def test_compare_of_runs_gives_the_aucs_of_their_metrics_files(runs, tmp_path, capsys) -> None:
    out = tmp_path / "compare"
    result = logan.compare([runs["per_part"], runs["two_stds"], runs["tune"]], output_dir=out)
    assert isinstance(result, CompareResult) and logan.load_run(out).results == result.results
    logan.validate_results(out)
    table = result.table
    for name, label in (("per_part", "per_part"), ("two_stds", "two_stds @ std 2"), ("two_stds", "two_stds @ std 20")):
        rows = [r for r in read(runs[name], "metrics.json") if r["k"] == 1.0
                and (name == "per_part" or r["std"] == float(label.rsplit(" ", 1)[1]))]
        mine = table[table.run == label]
        assert len(mine) == len(rows) == len(PARTS) * len(METRICS)
        aucs = {(r.part, r.metric): (r.std, r.auc, r.tpr_at_1pct_fpr) for r in mine.itertuples()}
        assert aucs == {(r["part"], r["metric"]): (r["std"], r["auc"], r["tpr_at_1pct_fpr"]) for r in rows}
    tuned = read(runs["tune"], "optimal_std.json")
    assert {r.part: r.std for r in result.tuning.itertuples()} == {p: e["optimal_std"] for p, e in
                                                                    tuned["per_part"].items()}
    assert result.wide().shape == (len(PARTS) * len(METRICS), 3)
    for name in ("compare_roc.png", "compare_curves.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "compare.txt").read_text() == result.text
    # the command line: the same table on stdout, the run folders given bare
    code = main(["compare", str(runs["per_part"]), str(runs["two_stds"]), f"path.output_dir={tmp_path / 'cli'}"])
    printed = capsys.readouterr().out
    assert code == 0 and printed.startswith(result.text.split("\n", 1)[0])
    line = next(l for l in printed.splitlines() if l.startswith("img") and " max_k_no_norn_kl_div " in l)
    row = next(r for r in read(runs["per_part"], "metrics.json") if r["part"] == "img" and r["k"] == 1.0
               and r["metric"] == "max_k_no_norn_kl_div")
    assert line.split("|")[1].split()[1] == f"{row['auc']:.3f}"


def test_compare_draws_the_same_roc_from_an_older_run(runs, tmp_path) -> None:
    from logan.pipeline.compare import metric_rows, open_runs, roc_panels

    old = copy(runs["per_part"], tmp_path)
    (old / "results.json").unlink()
    new_runs, old_runs = open_runs([str(runs["per_part"]), str(runs["tune"])]), open_runs([str(old), str(runs["tune"])])
    pd.testing.assert_frame_equal(pd.DataFrame(metric_rows(old_runs)), pd.DataFrame(metric_rows(new_runs)))
    new, older = (roc_panels(r, metric_rows(r), "max_k_no_norn_kl_div") for r in (new_runs, old_runs))
    assert list(new) == PARTS
    for part in PARTS:
        ((_, (fpr, tpr)),), ((_, (fpr_old, tpr_old)),) = new[part].items(), older[part].items()
        np.testing.assert_allclose(fpr, fpr_old)
        np.testing.assert_allclose(tpr, tpr_old)


def test_compare_errors_are_one_line_and_write_nothing(runs, tmp_path, capsys) -> None:
    cases = [([str(runs["per_part"]), str(tmp_path / "missing")], "does not exist"),
             ([str(runs["per_part"]), str(tmp_path)], "is not a LOGAN run folder"),
             ([str(runs["per_part"])], "needs two runs or more"),
             ([str(runs["per_part"]), str(runs["tune"]), f"path.output_dir={runs['tune']}"], "is a run folder"),
             ([str(runs["per_part"]), str(runs["tune"]), "compare.metric=nope"], "compare.metric=nope is not")]
    before = {p.name: p.stat().st_mtime_ns for p in runs["tune"].iterdir()}
    for args, message in cases:
        out = [] if any(a.startswith("path.output_dir") for a in args) else [f"path.output_dir={tmp_path / 'c'}"]
        assert main(["compare", *args, *out]) == 2
        errors = capsys.readouterr().err.strip().splitlines()
        assert len(errors) == 1 and message in errors[0], (args, errors)
    assert {p.name: p.stat().st_mtime_ns for p in runs["tune"].iterdir()} == before  # nothing written there
    assert not (tmp_path / "c" / "results.json").exists()
    assert main(["compare", "--help"]) == 0
    shown = capsys.readouterr().out
    assert shown.startswith("usage: logan compare RUN RUN ...") and "compare.runs=" in shown


# ---------------------------------------------------------------- trackers


class FakeWriter:
    """torch.utils.tensorboard's SummaryWriter, recording what it is given."""

    made: ClassVar[list[FakeWriter]] = []

    def __init__(self, log_dir: str) -> None:
        self.log_dir, self.scalars, self.texts, self.images, self.closed = log_dir, {}, {}, {}, False
        FakeWriter.made.append(self)

    def add_scalar(self, tag: str, value: float, step: int) -> None:
        self.scalars[(tag, step)] = value

    def add_text(self, tag: str, text: str) -> None:
        self.texts[tag] = text

    def add_image(self, tag: str, array: np.ndarray, step: int, dataformats: str) -> None:
        assert dataformats == "HWC" and array.ndim == 3 and array.shape[2] == 3
        self.images[tag] = array.shape

    def close(self) -> None:
        self.closed = True


def fake_wandb() -> types.ModuleType:
    module = types.ModuleType("wandb")
    module.runs = []

    class Run:
        def __init__(self, **kwargs) -> None:
            self.kwargs, self.logged, self.summary, self.finished = kwargs, [], {}, False

        def log(self, values: dict, step: int) -> None:
            self.logged.append((step, values))

        def finish(self) -> None:
            self.finished = True

    def init(**kwargs) -> Run:
        module.runs.append(Run(**kwargs))
        return module.runs[-1]

    module.init, module.Image = init, lambda path: ("image", path)
    module.Table = lambda columns, data: ("table", columns, len(data))
    return module


def test_a_tracker_asked_for_but_not_installed_stops_before_any_work(world, runs, tmp_path, monkeypatch) -> None:
    for name in ("wandb", "tensorboardX", "torch.utils.tensorboard"):
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    out = tmp_path / "tune"
    with pytest.raises(LoganError, match=r"tracking=tensorboard needs TensorBoard.*pip install tensorboard"):
        logan.tune(model_path=world.model, members=world.members, nonmembers=world.nonmembers, parts=PARTS,
                   output_dir=out, tracking="tensorboard", **FAST)
    assert not out.exists()
    with pytest.raises(LoganError, match="tracking=wandb needs .*pip install wandb"):
        logan.select(output_dir=runs["tune"], tracking="wandb")
    with pytest.raises(LoganError, match="tracking=mlflow is not one of none, tensorboard, wandb"):
        logan.select(output_dir=runs["tune"], tracking="mlflow")


def test_tensorboard_receives_the_curves_selection_metrics_and_plots(runs, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=FakeWriter))
    FakeWriter.made.clear()
    tuned = copy(runs["tune"], tmp_path)
    logan.select(output_dir=tuned, tracking="tensorboard")
    (writer,) = FakeWriter.made
    doc = read(tuned)
    assert writer.log_dir == str(tuned / "tensorboard") and writer.closed
    curves = pd.DataFrame(doc["curves"])
    grid = sorted(set(curves["std"]))
    for row in curves.itertuples():
        assert writer.scalars[(f"curve/{row.part}/{row.metric}/tune_auc", grid.index(row.std))] == row.tune_auc
    assert [writer.scalars[("curve/std", i)] for i in range(len(grid))] == grid
    assert writer.scalars[("selection/optimal_std", 0)] == doc["selection"]["optimal_std"]
    assert set(writer.images) == {"plot/tuning_curve"} and "table/curves" in writer.texts
    assert json.loads(writer.texts["config"].strip("`\n"))["seed"] == 0

    from logan.report.tracking import log_results  # classify's results, as evaluate logs them

    FakeWriter.made.clear()
    cfg = types.SimpleNamespace(tracking="tensorboard", output_dir=tmp_path / "classify")
    classified = read(runs["per_part"])
    log_results(cfg, classified, [runs["per_part"] / "roc.png"])
    (writer,) = FakeWriter.made
    metrics = pd.DataFrame(classified["metrics"])
    at_k = metrics[metrics.k == 1.0]
    stds = sorted(set(at_k["std"]))
    for row in at_k.itertuples():
        assert writer.scalars[(f"classify/{row.part}/{row.metric}/auc", stds.index(row.std))] == row.auc
    assert set(writer.images) == {"plot/roc"}


def test_wandb_receives_one_run_per_results_file_and_a_failure_is_a_warning(runs, tmp_path, monkeypatch,
                                                                              caplog) -> None:
    wandb = fake_wandb()
    monkeypatch.setitem(sys.modules, "wandb", wandb)
    tuned = copy(runs["tune"], tmp_path)
    logan.select(output_dir=tuned, tracking="wandb")
    (run,) = wandb.runs
    assert run.finished and run.kwargs["job_type"] == "select" and run.kwargs["dir"] == str(tuned)
    assert run.kwargs["config"]["img_metrics"]["parts"] == PARTS
    steps = [step for step, _ in run.logged]
    assert steps == sorted(steps)
    logged = {k: v for _, values in run.logged for k, v in values.items()}
    doc = read(tuned)
    assert logged["selection/optimal_std"] == doc["selection"]["optimal_std"]
    assert logged["plot/tuning_curve"] == ("image", str(tuned / "tuning_curve.png"))
    assert logged["table/curves"] == ("table", list(doc["curves"]), len(doc["curves"]["std"]))
    assert run.summary["versions"] == doc["versions"]

    def broken(**kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(wandb, "init", broken)
    (tuned / "results.json").unlink()
    caplog.set_level(logging.WARNING)
    logan.select(output_dir=tuned, tracking="wandb")
    assert (tuned / "results.json").is_file() and "tracking=wandb: logging" in caplog.text
    assert "disk full" in caplog.text


def test_real_tensorboard_writes_event_files(runs, tmp_path) -> None:
    pytest.importorskip("tensorboard")
    tuned = copy(runs["tune"], tmp_path)
    logan.select(output_dir=tuned, tracking="tensorboard")
    assert list((tuned / "tensorboard").glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tuned / "tensorboard"), size_guidance={"scalars": 0, "images": 0}).Reload()
    curves = pd.DataFrame(read(tuned)["curves"])
    assert len(events.Tags()["scalars"]) >= curves.groupby(["part", "metric"]).ngroups
    assert events.Tags()["images"]   # the tuning curve plot
