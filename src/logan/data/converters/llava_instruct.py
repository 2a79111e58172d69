"""liuhaotian/LLaVA-Instruct-150K -> members.json (label 1): the COCO-2017 train images LLaVA was tuned on.

`source=` is the annotation file (llava_instruct_150k.json: a list of {"id", "image": "000000033471.jpg",
"conversations": [...]}) or the downloaded folder (then llava_instruct_150k.json, or the file `subset=`
names, e.g. subset=llava_instruct_80k or detail_23k). `images=` is the COCO train2017/ folder; names with
folders (llava_v1_5_mix665k.json's "coco/train2017/...") resolve against it or by file name. Each image
is listed once however many conversations name it; entries without an image are skipped, and images
not found are skipped with a warning (a count and the first names).
"""

from __future__ import annotations

from collections.abc import Iterator

from logan.config import PrepareConfig
from logan.data.converters.common import Record, Report, annotation_dataset

NAME = "llava-instruct"
OUTPUTS = {1: "members.json"}
HELP = "liuhaotian/LLaVA-Instruct-150K JSON + COCO-2017 train images -> members"


def read(cfg: PrepareConfig, report: Report) -> tuple[int, Iterator[Record]]:
    return annotation_dataset(
        cfg,
        report,
        dataset="LLaVA-Instruct-150K",
        label=1,
        preferred=("llava_instruct_150k.json",),
        images_hint="the COCO-2017 train images folder (train2017/) the entries name",
    )
