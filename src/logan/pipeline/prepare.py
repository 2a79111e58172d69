"""`logan prepare <name>`: convert a downloaded dataset from its published layout to LOGAN's JSON lists.

    logan prepare vlmia source=/data/VL-MIA-image subset=img_Flickr path.output_dir=/data/vlmia
    logan prepare llava-instruct source=/data/LLaVA-Instruct-150K images=/data/coco/train2017 \
        path.output_dir=/data/coco_vs_4o
    logan prepare sharegpt4o source=/data/ShareGPT-4o path.output_dir=/data/coco_vs_4o

Nothing is downloaded. Writes the lists (`members.json`, `nonmembers.json`, `reference.json`: each
converter's OUTPUTS) to OUT; images that come as bytes (Parquet, Arrow, zip) are written to
OUT/images/<list>/, image files on disk are listed where they are (copied with copy_images=true).
Every image is listed once (duplicates are counted); unreadable and missing images are skipped with a
warning; an image listed as both member and non-member is dropped from both. OUT/prepare_summary.json
holds the counts and each list's image sizes and formats, and warns when members and non-members
(of this run, or of lists prepared earlier into the same OUT) differ clearly in resolution or format.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from io import BytesIO
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from logan.config import PrepareConfig, RunConfig
from logan.data.converters import get_converter
from logan.data.converters.common import SHOWN, Record, Report
from logan.errors import LoganError
from logan.io import atomic_dir, read_json, write_json

log = logging.getLogger(__name__)

SUMMARY = "prepare_summary.json"
EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png"}
SIZE_RATIO = 1.25  # medians further apart than this (either way) differ clearly
FORMAT_GAP = 0.2  # JPEG shares further apart than this differ clearly
USE = {
    "members.json": "data.member_dataset={}",
    "nonmembers.json": "data.nonmember_dataset={}",
    "reference.json": "data.reference_datasets_list=[{}]",
}
PREPARE_KEYS = {f.name for f in dataclasses.fields(PrepareConfig)}


def prepare_overrides(args: list[str]) -> list[str]:
    """`prepare NAME key=value ...` -> Hydra overrides: NAME and bare prepare keys become `prepare.*`."""
    args = list(args)
    if args and "=" not in args[0]:
        args[0] = f"name={args[0]}"
    return [f"prepare.{arg}" if arg.partition("=")[0] in PREPARE_KEYS else arg for arg in args]


class ListWriter:
    """One output list: de-duplicates, reads each image's size and format, places its file."""

    def __init__(self, file: str, label: int, staging: Path, copy: bool) -> None:
        self.file, self.label, self.staging, self.copy = file, label, staging, copy
        self.folder = f"images/{Path(file).stem}"
        self.entries: dict[str, dict[str, Any]] = {}  # key -> entry, in input order
        self.stats: dict[str, tuple[int, int, str]] = {}
        self.duplicates = 0
        self.unreadable: list[str] = []

    def add(self, record: Record) -> None:
        if record.key in self.entries:
            self.duplicates += 1
            return
        try:
            with Image.open(BytesIO(record.data) if record.data is not None else record.file()) as img:
                width, height = img.size
                fmt = "JPEG" if img.format == "MPO" else str(img.format)
        except (UnidentifiedImageError, OSError, ValueError):
            self.unreadable.append(record.name)
            return
        self.entries[record.key] = {"image": self._place(record, fmt), "label": self.label}
        self.stats[record.key] = (width, height, fmt)

    def _place(self, record: Record, fmt: str) -> str:
        if record.data is None and not self.copy:
            return str(record.file().resolve())
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(record.name).stem)[:60] or "image"
        name = f"{len(self.entries):06d}_{stem}{EXTENSIONS.get(fmt, '.' + fmt.lower())}"
        if record.data is not None:
            (self.staging / name).write_bytes(record.data)
        else:
            shutil.copyfile(record.file(), self.staging / name)
        return f"{self.folder}/{name}"

    def drop(self, keys: set[str]) -> None:
        for key in keys:
            image = self.entries.pop(key)["image"]
            if image.startswith(self.folder + "/"):
                (self.staging / image[len(self.folder) + 1 :]).unlink(missing_ok=True)
            del self.stats[key]

    def summary(self, dataset: str) -> dict[str, Any]:
        sizes = np.array([s[:2] for s in self.stats.values()], dtype=np.int64).reshape(-1, 2)
        formats = Counter(s[2] for s in self.stats.values())
        n = len(self.stats)
        return {
            "dataset": dataset,
            "label": self.label,
            "count": n,
            "duplicates": self.duplicates,
            "unreadable": len(self.unreadable),
            **{
                axis: {
                    "median": float(np.median(sizes[:, i])),
                    "min": int(sizes[:, i].min()),
                    "max": int(sizes[:, i].max()),
                }
                for i, axis in enumerate(("width", "height"))
            },
            "formats": {fmt: round(count / n, 4) for fmt, count in formats.most_common()},
        }


def prepare(cfg: RunConfig) -> dict[str, Any]:
    """Convert `cfg.prepare.source` with the named converter; write the lists and the summary to OUT."""
    options = cfg.prepare
    converter = get_converter(options.name)
    if options.limit is not None and options.limit < 1:
        raise LoganError(f"prepare.limit={options.limit} must be at least 1 (or null for every image).")
    out = cfg.output_dir
    report = Report()
    total, records = converter.read(options, report)
    _check_apart(out, [options.source, options.images])
    try:
        writers, conflicts = _convert(out, converter, options, total, records, report)
    finally:  # lists that reference their images in place leave no (empty) image folder behind
        for folder in [*(out / "images").glob("*/"), out / "images"]:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
    for writer in writers.values():
        write_json(out / writer.file, list(writer.entries.values()))
    summary = _summary(out, converter.NAME, options, report, writers, conflicts)
    write_json(out / SUMMARY, summary)
    _log(out, summary, report, writers, conflicts)
    return summary


def _convert(
    out: Path,
    converter: ModuleType,
    options: PrepareConfig,
    total: int | None,
    records: Iterator[Record],
    report: Report,
) -> tuple[dict[int, ListWriter], int]:
    """Route the records to their lists; each list's images are staged and replace OUT/images/<list>."""
    with ExitStack() as stack:
        writers = {}
        for label, file in converter.OUTPUTS.items():
            staging = stack.enter_context(atomic_dir(out / "images" / Path(file).stem))
            writers[label] = ListWriter(file, label, staging, options.copy_images)
        for record in tqdm(records, total=total, desc=f"prepare {converter.NAME}", unit="image", leave=False):
            writer = writers[record.label]
            if options.limit is None or len(writer.entries) < options.limit:
                writer.add(record)
            elif all(len(w.entries) >= options.limit for w in writers.values()):
                break
        conflicts = _drop_conflicts(list(writers.values()))
        for writer in writers.values():
            if not writer.entries:
                raise LoganError(_empty_message(converter.NAME, writer, report))
    return writers, conflicts


def _check_apart(out: Path, paths: list[str | None]) -> None:
    """OUT/images is replaced list by list: it must not hold the data being converted."""
    images = (out / "images").resolve()
    for path in filter(None, paths):
        if Path(path).expanduser().resolve().is_relative_to(images):
            raise LoganError(
                f"path.output_dir={out} would write its images into {path}; "
                "choose an output folder outside the downloaded data."
            )


def _drop_conflicts(writers: list[ListWriter]) -> int:
    """An image listed as member and as non-member cannot be labelled: drop it from both lists."""
    if len(writers) < 2:
        return 0
    both = set(writers[0].entries).intersection(*(w.entries for w in writers[1:]))
    for writer in writers:
        writer.drop(both)
    return len(both)


def _empty_message(dataset: str, writer: ListWriter, report: Report) -> str:
    what = "members" if writer.label == 1 else "non-members"
    if report.missing:
        first = ", ".join(report.first_missing())
        return (
            f"{dataset}: none of the images for {writer.file} were found: {len(report.missing)} "
            f"referenced images are missing under {report.where} (first: {first}); "
            "give the folder that holds them (images=DIR) or check source=."
        )
    if writer.unreadable:
        return (
            f"{dataset}: every image for {writer.file} is unreadable (first: "
            f"{', '.join(writer.unreadable[:SHOWN])}); download the images again."
        )
    return (
        f"{dataset}: found no {what} in {report.where or 'the source'} ({report.entries} entries read, "
        f"{report.text_only} without an image); check source= and subset=."
    )


def _summary(
    out: Path,
    dataset: str,
    options: PrepareConfig,
    report: Report,
    writers: dict[int, ListWriter],
    conflicts: int,
) -> dict[str, Any]:
    """This run's lists and counts, merged with the lists prepared earlier into the same folder."""
    old: dict[str, Any] = {}
    if (out / SUMMARY).is_file():
        try:
            old = read_json(out / SUMMARY)
        except ValueError:
            old = {}
    sets = {f: s for f, s in (old.get("sets") or {}).items() if (out / f).is_file()}
    sets.update({w.file: w.summary(dataset) for w in writers.values()})
    runs = dict(old.get("runs") or {})
    runs[dataset] = {
        "source": _absolute(options.source),
        "subset": options.subset,
        "images": _absolute(options.images),
        "limit": options.limit,
        "copy_images": options.copy_images,
        "entries": report.entries,
        "without_image": report.text_only,
        "missing": {"count": len(report.missing), "first": report.first_missing()},
        "conflicts": conflicts,
        "unreadable": {w.file: w.unreadable[:SHOWN] for w in writers.values() if w.unreadable},
    }
    comparisons = [
        {"members": m, "nonmembers": n, "warning": _compare(m, sets[m], n, sets[n])}
        for m in sets
        if sets[m]["label"] == 1
        for n in sets
        if sets[n]["label"] == 0
    ]
    return {"sets": sets, "runs": runs, "comparisons": comparisons}


def _absolute(path: str | None) -> str | None:
    return str(Path(path).expanduser().resolve()) if path else None


def _compare(m_file: str, members: dict[str, Any], n_file: str, nonmembers: dict[str, Any]) -> str | None:
    """A plain warning when members and non-members differ clearly in image size or format, else None."""
    medians = [(members[a]["median"], nonmembers[a]["median"]) for a in ("width", "height")]
    jpeg = [s["formats"].get("JPEG", 0.0) for s in (members, nonmembers)]
    differences = []
    if any(max(m, n) > SIZE_RATIO * min(m, n) for m, n in medians):
        differences.append(
            f"image size (median {medians[0][0]:g}x{medians[1][0]:g} px vs "
            f"{medians[0][1]:g}x{medians[1][1]:g} px)"
        )
    if abs(jpeg[0] - jpeg[1]) > FORMAT_GAP:
        differences.append(f"format (JPEG {jpeg[0]:.0%} vs {jpeg[1]:.0%})")
    if not differences:
        return None
    return (
        f"members ({m_file}) and non-members ({n_file}) differ clearly in {' and '.join(differences)}. "
        "Such a split can be told apart without any membership signal, and the same noise std acts "
        "differently at different resolutions: read LOGAN's AUC next to classify's model-free baseline, "
        "or choose sets of matching resolution and format."
    )


def _log(
    out: Path, summary: dict[str, Any], report: Report, writers: dict[int, ListWriter], conflicts: int
) -> None:
    for writer in writers.values():
        s = summary["sets"][writer.file]
        formats = ", ".join(f"{fmt} {share:.0%}" for fmt, share in s["formats"].items())
        width, height = s["width"], s["height"]
        log.info(
            "%s: %d images (%d duplicates skipped); width median %g [%d-%d], height median %g [%d-%d]; %s",
            out / writer.file,
            s["count"],
            writer.duplicates,
            width["median"],
            width["min"],
            width["max"],
            height["median"],
            height["min"],
            height["max"],
            formats,
        )
        if writer.unreadable:
            log.warning(
                "%d unreadable images skipped for %s (first: %s)",
                len(writer.unreadable),
                writer.file,
                ", ".join(writer.unreadable[:SHOWN]),
            )
    if report.missing:
        log.warning(
            "%d referenced images are missing under %s and were skipped (first: %s)",
            len(report.missing),
            report.where,
            ", ".join(report.first_missing()),
        )
    if report.text_only:
        log.info("%d entries without an image were skipped", report.text_only)
    if conflicts:
        log.warning("%d images were listed as both member and non-member; dropped from both lists", conflicts)
    for comparison in summary["comparisons"]:
        if comparison["warning"]:
            log.warning("%s", comparison["warning"])
    use = " ".join(USE.get(w.file, "{}").format(out / w.file) for w in writers.values())
    log.info("summary: %s; for logan tune / classify: %s", out / SUMMARY, use)
