"""Scores of a model family recorded once and compared ever after: the model boundary may be rebuilt, the
numbers a user gets from the existing families may not move.

`record_or_compare(name, load, folder)` runs the engine on five images of four sizes (every part, every
built-in metric, std 0 / 4 / 64, batches of 3 so one batch is partial), again with the kept prefix
(`inference.reuse_prefix`) and in `noise.space=normalized`, and generates descriptions for three images in
left-padded batches of 2. With `LOGAN_RECORD_SCORES=1` it writes what it got to
`tests/fixtures/scores_<name>.npz`; otherwise it compares with that file: per-token values to float32
rounding (rtol 1e-6), generated token ids exactly. The files were recorded by
`python tests/fixtures/record_scores.py` on the code before the typed model contract (issue 21), when
samples were keyed by their file path; samples are now keyed by the sha256 of their bytes (and read from
the file as their image source), so the stored keys name each sample by its file's stem, as then.

The files were recorded with torch's default of 2 intra-op threads on a 2-core machine. The thread count
changes the order of float32 sums in the CPU kernels: with one thread, max_prob_gap and aug_kld at std 0
(differences of nearly equal probabilities) moved by up to 9e-8, 9e-6 relative, past rtol 1e-6; the
comparison therefore runs at the recorded thread count, whatever OMP_NUM_THREADS says.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from logan.config import RunConfig
from logan.data.images import sample_id
from logan.engine import Engine, EngineSettings, WorkItem
from logan.metrics.registry import all_metrics
from logan.models.base import VLMAdapter
from logan.pipeline.describe import describe

FIXTURES = Path(__file__).parent / "fixtures"
RECORD = os.environ.get("LOGAN_RECORD_SCORES") == "1"
SIZES = [(40, 40), (56, 24), (24, 56), (40, 40), (33, 47)]  # (width, height)
INSTRUCTION = "Describe this image concisely."
PARTS = ["img", "inst", "desp", "inst_desp", "caption"]
RECORDED_THREADS = 2  # torch intra-op threads the fixtures were recorded with


def images(folder: Path) -> list[tuple[str, tuple[int, int]]]:
    """Smooth random PNGs of SIZES (paths and sizes), the same bytes on every machine."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i, (w, h) in enumerate(SIZES):
        pixels = np.random.default_rng(i).integers(40, 216, (h, w, 3), dtype=np.uint8)
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        out.append((str(path), (w, h)))
    return out


def content_id(path: str) -> str:
    """The sample id a run gives the image file at `path` (the sha256 of its bytes)."""
    return sample_id(Path(path).read_bytes())


def work_items(model: VLMAdapter, files: list[tuple[str, tuple[int, int]]]) -> list[WorkItem]:
    """The samples as a run makes them: keyed by content, read from their file."""
    words = model.tokenize("a small red circle on a blue background .")
    caption = model.tokenize("a large green square")
    return [WorkItem(content_id(path), i % 2, description=tuple(words[: 2 + i]), caption=tuple(caption[: 3 + i % 2]),
                     size=size, image=path) for i, (path, size) in enumerate(files)]


def engine_values(model: VLMAdapter, items: list[WorkItem], parts: list[str], metrics: list[str],
                  stds: list[float], **settings) -> dict[str, np.ndarray]:
    engine = Engine(model, EngineSettings(parts=parts, metrics=metrics, instruction=INSTRUCTION, batch_size=3,
                                          **settings))
    stems = {it.sample_id: Path(it.source).stem for it in items}  # the recorded key of each sample
    out: dict[str, np.ndarray] = {}
    for std, results in engine.run(items, stds):
        for res in results:
            sample = stems[res.sample_id]
            for (part, metric), values in res.tokens.items():
                out[f"{std}|{sample}|{part}|{metric}"] = np.asarray(values, dtype=np.float32)
            for part, (clean, noisy, n) in res.losses.items():
                out[f"{std}|{sample}|{part}|losses"] = np.asarray([clean, noisy, n], dtype=np.float64)
    return out


def family_values(load: Callable[[bool], VLMAdapter], folder: Path) -> dict[str, np.ndarray]:
    """Everything compared: `load(reuse_prefix)` gives a prepared adapter."""
    metrics = sorted(n for n, spec in all_metrics().items() if spec.fn.__module__.startswith("logan."))
    model = load(False)
    files = images(folder / "images")
    items = work_items(model, files)
    out = {f"full|{k}": v for k, v in engine_values(model, items, PARTS, metrics, [0.0, 4.0, 64.0]).items()}
    kl = ["max_k_no_norn_kl_div", "max_k_renyi_divergence_2"]
    out |= {f"normalized|{k}": v for k, v in engine_values(
        model, items, ["img", "inst"], kl, [0.0, 8.0], space="normalized").items()}
    cfg = RunConfig()
    cfg.generation.num_gen_tokens, cfg.generation.batch_size, cfg.prompt.text = 5, 2, INSTRUCTION
    sources = {content_id(path): path for path, _ in files[:3]}
    generated = describe(cfg, model, sources, folder / "descriptions.json")
    out |= {f"generate|{Path(sources[i]).stem}": np.asarray(ids, dtype=np.int64) for i, ids in generated.items()}
    kept = load(True)
    out |= {f"kept|{k}": v for k, v in engine_values(kept, items, ["img", "inst", "desp"], kl, [0.0, 4.0]).items()}
    return out


def record_or_compare(name: str, load: Callable[[bool], VLMAdapter], folder: Path) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(RECORDED_THREADS)
    try:
        got = family_values(load, folder)
    finally:
        torch.set_num_threads(threads)
    path = FIXTURES / f"scores_{name}.npz"
    if RECORD:  # one packed array (a zip member per key would be most of the file)
        keys = sorted(got)
        FIXTURES.mkdir(exist_ok=True)
        np.savez_compressed(path, keys=np.asarray(keys), lengths=np.asarray([got[k].size for k in keys]),
                            values=np.concatenate([got[k].astype(np.float64).ravel() for k in keys]))
        return
    with np.load(path) as stored:
        keys, lengths, values = list(stored["keys"]), stored["lengths"], stored["values"]
    want = dict(zip(keys, np.split(values, np.cumsum(lengths)[:-1])))
    assert sorted(got) == keys
    for key, value in want.items():
        if key.startswith("generate|"):
            assert got[key].tolist() == value.astype(np.int64).tolist(), key
        else:
            np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-12, err_msg=key)
