"""OpenGVLab/ShareGPT-4o (image part) -> reference.json (label 0): known non-members for the reference set.

The repository holds `image_conversations/gpt-4o.jsonl` (one {"id", "image": "<file name>",
"conversations": [...]} a line) and `images.zip`, whose images sit deep inside it
(mnt/petrelfs/.../4o/image/<file name>). `source=` is the downloaded folder or the annotation file
(another JSON / JSONL file there: `subset=` names it); images are looked up under `images=` (a folder
or the zip) or, by default, anywhere in the download folder, unpacked or inside images.zip (read in
place, written to OUT/images).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from logan.config import PrepareConfig
from logan.data.converters.common import Record, Report, annotation_dataset

NAME = "sharegpt4o"
OUTPUTS = {0: "reference.json"}
HELP = "OpenGVLab/ShareGPT-4o image annotations + images -> known non-members (reference)"


def read(cfg: PrepareConfig, report: Report) -> tuple[int, Iterator[Record]]:
    return annotation_dataset(
        cfg,
        report,
        dataset="ShareGPT-4o",
        label=0,
        preferred=("gpt-4o.jsonl",),
        default_images=_download_folder,
    )


def _download_folder(annotations: Path) -> Path:
    """The download's root: the annotation file's folder, or above it for image_conversations/."""
    folder = annotations.parent
    return folder.parent if folder.name == "image_conversations" else folder
