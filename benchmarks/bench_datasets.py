"""Memory of reading a large Hub-like image dataset: LOGAN's two streaming passes against loading it whole.

    python benchmarks/bench_datasets.py --rows 5000,20000,80000          # about 4 min on 2 CPU cores

For each row count, a folder laid out like a Hub dataset repository (a README with one config; 32 x 32 PNG
images of about 3 KB as the Image struct {bytes, path} with a label, in 8 Parquet shards of 500-row row
groups) is written once under --root, then each mode runs in a fresh process (and a fresh datasets cache):

- `logan`: `build_target(data.dataset=hf:FOLDER?config=big)` as `logan tune` calls it: every row's image
  bytes hashed (its sample id) and its label read, streaming, then 600 rows drawn and their bytes read by
  a second pass;
- `pandas`: `pd.read_parquet` of every shard (the whole table in memory), the same hashes.

The table gives the process's RSS after the imports and its peak (`ru_maxrss`), in MiB, and the seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = "---\nconfigs:\n- config_name: big\n  data_files:\n  - split: train\n    path: big/train-*.parquet\n---\n"


def rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make(root: Path, rows: int, shards: int = 8) -> None:
    """`rows` images (every other one a member) in `shards` Parquet files, as push_to_hub writes them."""
    import io

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from PIL import Image

    if (root / "README.md").is_file():
        return
    (root / "big").mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}, "label": {"dtype": "int64", "_type": "Value"}}
    meta = {b"huggingface": json.dumps({"info": {"features": features}}).encode()}
    per = -(-rows // shards)
    for shard in range(shards):
        cells, labels = [], []
        for i in range(shard * per, min(rows, (shard + 1) * per)):
            buffer = io.BytesIO()
            pixels = np.random.default_rng(i).integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(buffer, format="PNG")
            cells.append({"bytes": buffer.getvalue(), "path": f"{i:06d}.png"})
            labels.append(i % 2)
        table = pa.table({"image": pa.array(cells, image_type), "label": pa.array(labels, pa.int64())})
        pq.write_table(table.replace_schema_metadata(meta), root / "big" / f"train-{shard:05d}-of-{shards:05d}.parquet",
                       row_group_size=500)
    (root / "README.md").write_text(CONFIG)


def measure(mode: str, root: Path) -> None:
    """One measurement in this process; prints one JSON line."""
    import datasets  # noqa: F401 - imported before the baseline, as a run has it
    import pandas as pd

    from logan.config import DataConfig
    from logan.data.sets import build_target

    before, started = rss_mib(), time.time()
    if mode == "logan":
        frame = build_target(DataConfig(dataset=f"hf:{root}?config=big", target_set_size=600), seed=0)
        rows = frame.attrs["sources"][0]["rows"]
    else:
        frame = pd.concat([pd.read_parquet(p) for p in sorted((root / "big").glob("*.parquet"))], ignore_index=True)
        [hashlib.sha256(cell["bytes"]).digest() for cell in frame.image]
        rows = len(frame)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"mode": mode, "rows": rows, "seconds": round(time.time() - started, 1),
                      "rss_before": round(before), "peak": round(peak)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="5000,20000,80000")
    parser.add_argument("--root", default=str(Path(tempfile.gettempdir()) / "logan-bench-datasets"))
    parser.add_argument("--modes", default="logan,pandas")
    parser.add_argument("--shards", type=int, default=8, help="Parquet files per dataset")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "FOLDER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        measure(args.measure[0], Path(args.measure[1]))
        return
    print("| mode | rows | shards | seconds | RSS after imports (MiB) | peak RSS (MiB) | peak - before (MiB) |")
    print("|---|---|---|---|---|---|---|")
    for rows in [int(r) for r in args.rows.split(",")]:
        root = Path(args.root) / f"rows_{rows}_shards_{args.shards}"
        make(root, rows, args.shards)
        for mode in args.modes.split(","):
            with tempfile.TemporaryDirectory() as home:
                env = {**os.environ, "HF_HOME": home, "HF_HUB_OFFLINE": "1"}
                out = subprocess.run([sys.executable, __file__, "--measure", mode, str(root)], env=env, check=True,
                                     capture_output=True, text=True).stdout.strip().splitlines()[-1]
            r = json.loads(out)
            print(f"| {r['mode']} | {r['rows']} | {args.shards} | {r['seconds']} | {r['rss_before']} | {r['peak']} | "
                  f"{r['peak'] - r['rss_before']} |", flush=True)


if __name__ == "__main__":
    main()
