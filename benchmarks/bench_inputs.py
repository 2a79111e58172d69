"""Time the input checks on this machine and print a table: what they add to a run.

    python benchmarks/bench_inputs.py                 # 300 + 300 JPEGs of 640 x 480 (COCO-sized)
    python benchmarks/bench_inputs.py --images 150 --size 1024x768

- up-front image check: every target image decoded by the run's own loader before the model loads
  (`check_samples`, threads), next to PIL's `verify()` that it replaces (which let a truncated JPEG
  through, to fail mid-run);
- the model-free baseline on the target set: features + cross-validated forest, and the stratified
  bootstrap of the cross-validated scores that gives the AUC's interval (1000 resamples).
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image


def make_images(folder: Path, n: int, width: int, height: int, seed: int) -> pd.DataFrame:
    """Smooth random photos (JPEG-compressible like real ones), half labelled member."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((width, height), Image.Resampling.BICUBIC)
        noisy = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-8, 9, (height, width, 3)), 0, 255)
        path = folder / f"img_{i:05d}.jpg"
        Image.fromarray(noisy.astype(np.uint8)).save(path, quality=90)
        rows.append({"image": str(path), "label": int(i % 2 == 0), "caption": ""})
    return pd.DataFrame(rows)


def seconds(action, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=600, help="target images (members + non-members)")
    parser.add_argument("--blind-images", type=int, default=300, help="images the model-free baseline sees")
    parser.add_argument("--size", default="640x480")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from logan.config import RunConfig
    from logan.pipeline.common import check_samples
    from logan.report.blind import blind_baseline, image_features
    from logan.report.scoring import bootstrap_aucs

    with tempfile.TemporaryDirectory() as tmp:
        frame = make_images(Path(tmp), args.images, width, height, seed=0)
        cfg = RunConfig.from_dict({"img_metrics": {"parts": ["img"]}})

        def verify_only() -> None:
            for path in frame.image:
                with Image.open(path) as img:
                    img.verify()

        rows = [("up-front check: PIL verify() (before)", seconds(verify_only, 2), len(frame)),
                ("up-front check: full decode by the run's loader (now)", seconds(lambda: check_samples(frame, cfg), 2),
                 len(frame))]
        target = frame.head(args.blind_images)
        labels = target.label.to_numpy()
        features = np.stack([image_features(p) for p in target.image])
        started = time.perf_counter()
        np.stack([image_features(p) for p in target.image])
        feature_s = time.perf_counter() - started

        def forest() -> np.ndarray:
            model = RandomForestClassifier(n_estimators=200, min_samples_leaf=2, random_state=0, n_jobs=1)
            cv = StratifiedKFold(n_splits=5, shuffle=True, random_state=0)
            return cross_val_predict(model, features, labels, cv=cv, method="predict_proba")[:, 1]

        scores = forest()
        rows += [("blind baseline: image features", feature_s, len(target)),
                 ("blind baseline: 5-fold forest", seconds(forest), len(target)),
                 ("blind baseline: bootstrap interval (added)", seconds(lambda: bootstrap_aucs(labels, scores, 0), 3),
                  len(target)),
                 ("blind baseline: all (blind_baseline())", seconds(lambda: blind_baseline(target, seed=0)),
                  len(target))]
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; JPEG {width} x {height}")
    print(f"{'step':<58} {'images':>7} {'seconds':>9} {'ms/image':>9}")
    for name, secs, n in rows:
        print(f"{name:<58} {n:>7} {secs:9.2f} {1000 * secs / n:9.2f}")


if __name__ == "__main__":
    main()
