"""Model-free ("blind") baseline: can image statistics alone tell members from non-members?

Published VLM membership benchmarks are often separable without any model (members and non-members
come from different sources, years, cameras, resolutions). This classifier never sees the model: it
uses colour histograms, a coarse frequency spectrum, image size and file format, and is scored with
stratified cross-validation on the same member / non-member split. It reads the pixels through the
loader the model's inputs come from (`logan.data.images`), so both see the same picture.

The split is called distribution-shifted when the one-sided 95 % lower bound of the classifier's AUC
lies above 0.5: a stratified bootstrap of the cross-validated scores (1000 resamples; cheap next to
the features and the forest). An AUC below 0.5 is no evidence of shift (a cross-validated classifier
that does worse than chance has learnt nothing that carries over), and on a small set a high AUC whose
interval reaches 0.5 is not either.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from logan.data.images import decode_image, image_format
from logan.data.saved import sample_bytes
from logan.report.scoring import bootstrap_aucs, roc_summary

log = logging.getLogger(__name__)

CONFIDENCE = 0.95  # one-sided: shifted when the AUC's lower bound at this level lies above 0.5


def image_features(data: bytes) -> np.ndarray:
    """Colour histograms (8 bins per RGB channel), a radial frequency profile, size and format."""
    pixels = decode_image(data)
    fmt = image_format(data)
    height, width = pixels.shape[:2]
    rgb = np.asarray(Image.fromarray(pixels).resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
    hist = [np.histogram(rgb[..., c], bins=8, range=(0, 255))[0] / rgb[..., c].size for c in range(3)]
    grey = rgb.mean(-1)
    spectrum = np.abs(np.fft.fftshift(np.fft.fft2(grey - grey.mean())))
    yy, xx = np.indices(spectrum.shape)
    radius = np.hypot(yy - 32, xx - 32).astype(int)
    profile = np.bincount(radius.ravel(), spectrum.ravel(), minlength=46)[:46] / np.maximum(
        np.bincount(radius.ravel(), minlength=46)[:46], 1
    )
    bands = np.log1p(profile.reshape(-1, 2).mean(1)[:16])
    size = [np.log(width), np.log(height), width / height, float(fmt == "JPEG"), float(fmt == "PNG")]
    return np.concatenate([*hist, bands, size, [grey.std() / 64]])


def blind_baseline(target: pd.DataFrame, folds: int = 5, seed: int = 0) -> dict[str, float | int | str]:
    """Cross-validated AUC of a model-free classifier on the target set (higher = member)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    labels = target.label.to_numpy().astype(int)
    folds = int(min(folds, np.bincount(labels, minlength=2).min()))
    if len(labels) == 0:
        return {
            "auc": float("nan"),
            "verdict": "not run: it needs labelled members and non-members (none here)",
        }
    if folds < 2:
        return {"auc": float("nan"), "verdict": "not estimable (fewer than 2 samples of a class)"}
    features = np.stack([image_features(sample_bytes(row)) for row in target.itertuples(index=False)])
    classifier = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=seed, n_jobs=1)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    scores = cross_val_predict(classifier, features, labels, cv=splitter, method="predict_proba")[:, 1]
    summary = roc_summary(labels, scores)
    aucs = bootstrap_aucs(labels, scores, seed)
    summary["auc_ci_low"], summary["auc_ci_high"] = (float(v) for v in np.percentile(aucs, [2.5, 97.5]))
    summary["auc_lower_bound"] = float(np.percentile(aucs, 100 * (1 - CONFIDENCE)))
    summary["shifted"] = bool(summary["auc_lower_bound"] > 0.5)
    interval = (
        f"AUC {summary['auc']:.2f}, one-sided {CONFIDENCE:.0%} lower bound {summary['auc_lower_bound']:.2f}"
    )
    summary["verdict"] = (
        f"WARNING: image statistics alone separate members from non-members ({interval}); the split is "
        "distribution-shifted and membership-attack AUCs on it cannot be read as membership."
        if summary["shifted"]
        else f"ok: image statistics alone do not separate the two sets ({interval}, not above 0.5)."
    )
    summary["classifier"] = (
        f"random forest on colour/frequency/size features, {folds}-fold cross-validation; "
        f"interval: stratified bootstrap of the cross-validated scores"
    )
    return summary


def save_blind_baseline(target: pd.DataFrame, path: Path, seed: int) -> dict:
    from logan.io import write_json

    result = blind_baseline(target, seed=seed)
    write_json(path, result)
    (log.warning if str(result["verdict"]).startswith("WARNING") else log.info)(
        "blind baseline: %s", result["verdict"]
    )
    return result
