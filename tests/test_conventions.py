"""Both metric conventions (`img_metrics.compat=logan` and `=original`) against float64 references written
from their definitions (README, "Metric conventions"), through the engine's slicing on one sequence of
prefix, image, instruction and description tokens.

The references never call LOGAN code: they take float64 copies of the float32 logits the engine reads and
follow the written definitions (rows, targets, formulas, floors, Max-K% counts). A stub model returns
fixed logits (random rows with tied top-2 rows, peaked rows and near-deterministic rows), so the only
numerics under test are LOGAN's metrics and slicing. Agreement: 1e-5 relative or 1e-9 absolute.
"""

from __future__ import annotations

import json
import math
import os
import warnings

import numpy as np
import pandas as pd
import pytest
import torch
from reference_metrics import close, log_softmax, per_token

import logan
from logan.config import RunConfig
from logan.engine import Engine, EngineSettings, SampleResult, WorkItem
from logan.errors import LoganError
from logan.metrics.aggregate import aggregate
from logan.metrics.registry import all_metrics, get_metric
from logan.models.base import ImageBatch, VLMAdapter

VOCAB = 384
N_IMAGE = 10
INSTRUCTION = "Say it."
DESCRIPTION = (41, 7, 300, 41, 12, 5, 199)
RATIOS = [0.0, 0.1, 1.0]
PARTS = ["img", "inst", "desp", "inst_desp"]
REGIMES = {"identical": 0.0, "tiny": 1e-4, "small": 0.1, "large": 3.0}
N_AUGMENT = 4


class Stub(VLMAdapter):
    """Chunk-wise encoding as every adapter does it, logits from fixed tables (a causal model: a row's
    logits do not depend on the tokens after it)."""

    def __init__(self, tables: dict[str, np.ndarray]) -> None:
        self.tables = {key: torch.from_numpy(value) for key, value in tables.items()}
        self.device, self.dtype, self.conv_mode = torch.device("cpu"), torch.float32, "stub"
        self.real_vocab, self.n_image_tokens = VOCAB, N_IMAGE
        self.image_token_id, self.pad_token_id, self.bos_token_id, self.eos_token_id = 2, 0, 1, None

    def template(self) -> tuple[str, str]:
        return "pre fix", " {instruction}"

    def tokenize(self, text: str) -> list[int]:
        return [3 + ord(ch) % 60 for ch in text]

    def decode(self, ids: list[int]) -> str:
        return ""

    def forward_logits(self, tokens, images, positions):
        return self.tables[images.tensors["table"]][0][positions]

    def generate(self, tokens, images, max_new_tokens):
        raise NotImplementedError


def sequence() -> tuple[np.ndarray, int, int, int]:
    """(token ids, image start, image end, instruction end) of the test sequence."""
    encoded = Stub({}).encode(INSTRUCTION, list(DESCRIPTION))
    return np.asarray(encoded.input_ids), encoded.image_start, encoded.image_end, encoded.inst_end


def make_tables(seed: int = 0) -> dict[str, np.ndarray]:
    """float32 logits [1, L, V]: clean, a noisy pass per regime, four augmented passes.

    Rows (by position): tied top-2 logits, peaked rows (+20: 1 - p_max ~ 1e-5), near-deterministic rows
    (+40), and rows where the noisy pass equals the clean one, at part boundaries and inside parts."""
    ids, start, end, inst_end = sequence()
    rng = np.random.default_rng(seed)
    length = len(ids)
    clean = 3.0 * rng.standard_normal((length, VOCAB))
    tied = [start, end - 1, end + 1, inst_end - 1, length - 2]
    for row in tied:
        top = clean[row].max() + 1.0
        clean[row, rng.choice(VOCAB, 2, replace=False)] = top
    for row, lift in ((start + 2, 20.0), (end - 2, 40.0), (end, 40.0), (inst_end, 20.0), (length - 1, 40.0)):
        clean[row, rng.integers(VOCAB)] += lift
    clean = clean.astype(np.float32)
    tables = {"clean": clean}
    keep = [start + 1, end - 1, inst_end + 1]  # the noisy pass leaves these rows untouched
    for name, scale in REGIMES.items():
        noisy = (clean + scale * rng.standard_normal(clean.shape)).astype(np.float32)
        noisy[keep] = clean[keep]
        tables[name] = noisy
    for k in range(N_AUGMENT):
        tables[f"aug{k}"] = (clean + 0.5 * rng.standard_normal(clean.shape)).astype(np.float32)
    return {key: value[None] for key, value in tables.items()}


# ---------------------------------------------------------------- float64 references (no LOGAN code)

EVERY_ROW = {"max_k_renyi_divergence_025", "max_k_renyi_divergence_05", "max_k_renyi_divergence_2",
             "max_k_renyi_divergence_4", "aug_kld"}  # the original reads all of a part's rows for these


def rows_and_targets(part: str, metric: str, compat: str, clean: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rows a part is scored on and each row's target token, by the written slicing rules."""
    ids, start, end, inst_end = sequence()
    if part == "img":
        rows = np.arange(start, end)
        if compat == "original" and metric not in EVERY_ROW:
            rows = rows[:-1]  # its loop pairs row t with token t + 1: the last image row has none in the part
        return rows, clean[rows].argmax(-1)  # the clean argmax of the same row, whatever else runs
    tokens = {"inst": np.arange(end, inst_end), "desp": np.arange(inst_end, len(ids)),
              "inst_desp": np.arange(end, len(ids))}[part]
    if compat == "logan":
        return tokens - 1, ids[tokens]  # every token j from row j - 1
    rows = tokens if metric in EVERY_ROW else tokens[:-1]  # the part's own rows, row t predicting t + 1
    return rows, np.append(ids, -1)[rows + 1]


def reference(part: str, metric: str, compat: str, tables: dict[str, np.ndarray], regime: str) -> np.ndarray:
    """A sample's value at each K of RATIOS."""
    clean = tables["clean"][0]
    rows, targets = rows_and_targets(part, metric, compat, clean)
    augmented = [tables[f"aug{k}"][0][rows] for k in range(N_AUGMENT)]
    values = per_token(metric, compat, clean[rows], tables[regime][0][rows], targets, augmented)
    out = []
    for k in RATIOS:
        count = max(1, math.floor(k * len(values)))
        if metric.startswith("min_k_"):
            out.append(np.sort(values)[:count].mean())
        elif metric == "aug_kld" and compat == "original":
            out.append(np.sort(values)[::-1][:count].sum())  # a sum over tokens (K = 1: all of them)
        else:
            out.append(np.sort(values)[::-1][:count].mean())
    return np.array(out)


# ---------------------------------------------------------------- the code under test


def table(name: str) -> ImageBatch:
    """The stub's "images": which of its logit tables a forward returns."""
    return ImageBatch({"table": name}, ((0, 0),))


def engine_values(tables: dict[str, np.ndarray], parts: list[str], metrics: list[str], compat: str,
                  regime: str, metric_kernel: str = "torch") -> dict[tuple[str, str], np.ndarray]:
    """Per-token values as the engine scatters them, for one sample: the engine's layout, metric groups
    and slicing on the stub's logits (everything but the forward pass and the host threads)."""
    stub = Stub(tables)
    engine = Engine(stub, EngineSettings(parts=parts, metrics=metrics, instruction=INSTRUCTION, compat=compat,
                                         metric_kernel=metric_kernel))
    result = SampleResult("sample", 1)
    for variant in engine.plan:
        layout = engine._layout([WorkItem("sample", 1, description=DESCRIPTION)], variant)
        clean = layout.logits(stub, table("clean"))
        values = {**engine._token_values("noise", clean, layout.logits(stub, table(regime)), layout),
                  **engine._token_values("clean", clean, None, layout)}
        if "augment" in engine._reducers:
            augmented = [engine._token_values("augment", clean, layout.logits(stub, table(f"aug{k}")), layout)
                         for k in range(N_AUGMENT)]
            values.update({name: sum(a[name] for a in augmented) / N_AUGMENT for name in augmented[0]})
        layout.scatter([result], {name: v.numpy() for name, v in values.items()})
    return result.tokens


def scores(tokens: dict[tuple[str, str], np.ndarray], compat: str) -> dict[tuple[str, str], np.ndarray]:
    return {(part, name): aggregate(values, RATIOS, get_metric(name, compat=compat).aggregate)
            for (part, name), values in tokens.items()}


METRICS = sorted(all_metrics())


@pytest.fixture(scope="module")
def tables() -> dict[str, np.ndarray]:
    return make_tables()


@pytest.mark.parametrize("regime", sorted(REGIMES))
@pytest.mark.parametrize("compat", ["logan", "original"])
def test_every_metric_and_part_matches_its_float64_definition(tables, compat, regime) -> None:
    got = scores(engine_values(tables, PARTS, METRICS, compat, regime), compat)
    assert set(got) == {(part, name) for part in PARTS for name in METRICS}
    bad = []
    for (part, name), value in sorted(got.items()):
        want = reference(part, name, compat, tables, regime)
        if not close(value, want):
            bad.append((part, name, value.tolist(), want.tolist()))
    assert not bad, bad


def test_the_references_see_what_they_are_meant_to(tables) -> None:
    """The logits exercise the edges: ties at the top, rows the floors act on, and both conventions differ."""
    clean = tables["clean"][0]
    top2 = np.sort(clean, -1)[:, -2:]
    assert (top2[:, 0] == top2[:, 1]).sum() >= 4
    assert (log_softmax(clean).max(-1) > -1e-12).sum() >= 3  # near-deterministic rows
    differ = [name for name in METRICS if not np.allclose(reference("inst", name, "logan", tables, "small"),
                                                          reference("inst", name, "original", tables, "small"))]
    assert {"max_k_renyi_divergence_4", "max_prob_gap", "aug_kld", "ppl"} <= set(differ)


@pytest.mark.parametrize("regime", ["identical", "tiny", "large"])
@pytest.mark.parametrize("compat", ["logan", "original"])
def test_the_fused_kernel_meets_the_same_definitions(tables, compat, regime) -> None:
    """LOGAN's nine divergences by the fused Triton kernel (under triton's CPU interpreter; tests/test_fused.py
    checks it against PyTorch on a GPU too) against the same float64 references."""
    pytest.importorskip("triton")
    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("triton's interpreter needs TRITON_INTERPRET=1 before triton is imported")
    noise = sorted(name for name, spec in all_metrics(compat).items() if spec.needs == "noise")
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)  # numpy evaluates the branches `where` discards
        got = scores(engine_values(tables, PARTS, noise, compat, regime, metric_kernel="triton"), compat)
    bad = [(part, name, value.tolist()) for (part, name), value in sorted(got.items())
           if not close(value, reference(part, name, compat, tables, regime))]
    assert not bad, bad


@pytest.mark.parametrize("compat", ["logan", "original"])
def test_img_scores_do_not_depend_on_the_other_parts(tables, compat) -> None:
    alone = engine_values(tables, ["img"], METRICS, compat, "small")
    together = engine_values(tables, ["img", "inst", "desp", "inst_desp"], METRICS, compat, "small")
    for name in METRICS:
        np.testing.assert_array_equal(alone[("img", name)], together[("img", name)], err_msg=name)


def test_the_last_image_row_is_scored_twice_under_logan_slicing(tables) -> None:
    """Against its own argmax for img, against the first instruction token for inst: one forward, two rows."""
    stub = Stub(tables)
    engine = Engine(stub, EngineSettings(parts=["img", "inst"], metrics=["mink"], instruction=INSTRUCTION))
    layout = engine._layout([WorkItem("sample", 1, description=DESCRIPTION)], "gen")
    ids, start, end, _ = sequence()
    img, inst = layout.part_slices[0]["img"], layout.part_slices[0]["inst"]
    positions, targets = layout.positions[0].numpy(), layout.targets[0].numpy()
    assert positions[img].tolist() == list(range(start, end)) and set(targets[img]) == {-1}
    assert positions[inst][0] == end - 1 and targets[inst][0] == ids[end]
    alone = Engine(stub, EngineSettings(parts=["img"], metrics=["mink"], instruction=INSTRUCTION))._layout(
        [WorkItem("sample", 1)], "gen")
    assert alone.positions[0].tolist() == list(range(start, end))  # img only: exactly the image rows


def test_compat_is_validated() -> None:
    assert RunConfig.from_dict({"img_metrics": {"compat": "original"}}).img_metrics.compat == "original"
    with pytest.raises(LoganError, match="img_metrics.compat=vlmia is not one of logan, original"):
        RunConfig.from_dict({"img_metrics": {"compat": "vlmia"}})


# ---------------------------------------------------------------- end to end on the tiny LLaVA


def test_original_convention_runs_end_to_end(world, tmp_path) -> None:
    """classify with img_metrics.compat=original, every part and every metric: per-sample values for all,
    the AUC also in the original's orientation (1 - ours for LOGAN's divergences), shown in the report."""
    from logan.api import run

    metrics = sorted(all_metrics("original"))
    out = tmp_path / "classify"
    run("classify", [
        f"target_model.model_path={world.model}", f"data.member_dataset={world.members}",
        f"data.nonmember_dataset={world.nonmembers}", "data.target_set_size=8", "noise.std=[20.0]",
        "img_metrics.parts=[img,inst,desp,inst_desp,caption]", f"img_metrics.metrics_to_use=[{','.join(metrics)}]",
        f"img_metrics.get_proc_meta_metrics=[{','.join(m + '_tkn_vals' for m in metrics)}]",
        "img_metrics.compat=original", "generation.num_gen_tokens=6", "inference.batch_size=4",
        f"path.output_dir={out}"])
    rows = json.loads((out / "metrics.json").read_text())
    assert {(r["part"], r["metric"]) for r in rows} == {(p, m) for p in
                                                        ("img", "inst", "desp", "inst_desp", "caption")
                                                        for m in metrics}
    for r in rows:
        assert r["n_dropped"] == 0 and np.isfinite(r["auc"]), r
        flipped = r["needs"] == "noise"
        assert r["auc_original_orientation"] == pytest.approx(1 - r["auc"] if flipped else r["auc"]), r
    values = pd.read_parquet(out / "scores.parquet")
    assert len(values) and np.isfinite(values.value).all()
    assert "AUC (original's orientation)" in (out / "report.html").read_text()


def test_run_folders_record_their_metric_definitions(world, tmp_path) -> None:
    """The fingerprint holds the version and the definitions: a folder of the other convention, or one an
    earlier LOGAN wrote (no definitions recorded), is refused in one line before any work."""
    from logan.api import run
    from logan.pipeline.common import fingerprint

    cfg = RunConfig.from_dict({"img_metrics": {"compat": "original"}})
    key = fingerprint(cfg)
    assert key["logan_version"] == logan.__version__ and key["metric_definitions"].startswith("original")
    assert fingerprint(RunConfig.from_dict({}))["metric_definitions"] != key["metric_definitions"]
    out = tmp_path / "tune"
    small = world.overrides(out, "img_metrics.parts=[img]", "noise.std_sets=[[1.0]]",
                            "img_metrics.metrics_to_use=[max_k_no_norn_kl_div]",
                            "img_metrics.get_proc_meta_metrics=[max_k_no_norn_kl_div_tkn_vals]")
    run("tune", small)
    with pytest.raises(LoganError, match=r"different configuration \(differs in: metric_definitions\)"):
        run("tune", [*small, "img_metrics.compat=original"])
    recorded = json.loads((out / "run_fingerprint.json").read_text())
    for name in ("logan_version", "metric_definitions"):
        del recorded["fingerprint"][name]
    (out / "run_fingerprint.json").write_text(json.dumps(recorded))
    before = sorted(p.name for p in out.rglob("*"))
    with pytest.raises(LoganError, match=r"written by an earlier LOGAN \(other metric definitions, samples "
                                         r"keyed by image path\) and cannot be resumed; choose a new path.output_dir") as caught:
        run("tune", small)
    assert "\n" not in str(caught.value)
    assert sorted(p.name for p in out.rglob("*")) == before
