"""What the dataset converters share: the records they yield, the run's tally, labels, finding images in
folders and inside zip archives, and reading annotation lists (JSON or JSON Lines)."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from logan.config import PrepareConfig
from logan.errors import LoganError

if TYPE_CHECKING:
    from typing_extensions import Self

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
MEMBER_NAMES = {"1", "member", "members"}
NONMEMBER_NAMES = {"0", "nonmember", "nonmembers", "non_member", "non_members", "non-member", "non-members"}
SHOWN = 5  # how many missing / unreadable names a message lists


@dataclass
class Record:
    """One image of a published dataset: a file on disk or its bytes, with LOGAN's label (1 = member).

    `key` identifies the image for de-duplication (a resolved path, an archive entry or a content hash)."""

    label: int
    name: str
    key: str
    path: Path | None = None
    data: bytes | None = None

    def file(self) -> Path:
        """The image's file, for a record that holds no bytes (a record holds one or the other)."""
        if self.path is None:
            raise ValueError(f"record {self.name} holds neither the image's bytes nor its file")
        return self.path


@dataclass
class Report:
    """What a conversion met besides images: entries read, entries without an image, missing images."""

    entries: int = 0
    text_only: int = 0
    missing: dict[str, None] = field(default_factory=dict)  # ordered set of names
    where: str = ""

    def miss(self, name: str) -> None:
        self.missing[name] = None

    def first_missing(self) -> list[str]:
        return list(self.missing)[:SHOWN]


def parse_label(value: Any, where: str, names: list[str] | None = None) -> int:
    """1 (member) or 0 (non-member) from a number, a bool or a class name; anything else is one clear error.

    `names` are a Hugging Face ClassLabel's names: an integer label is an index into them."""
    if names and isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(names):
        value = names[value]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)) and value in (0, 1):
        return int(value)
    text = str(value).strip().lower()
    if text in MEMBER_NAMES:
        return 1
    if text in NONMEMBER_NAMES:
        return 0
    raise LoganError(
        f"{where}: label {value!r} is not 1 (member) or 0 (non-member); "
        "LOGAN reads 0/1 or the class names member / non_member."
    )


def existing(path: str | None, key: str, what: str) -> Path:
    """A path the user gave (`key=`) that must exist; one clear error naming the key otherwise."""
    if not path:
        raise LoganError(f"give {key}=PATH: {what}.")
    resolved = Path(path).expanduser()
    if not resolved.exists():
        raise LoganError(f"{key}={path} does not exist: give {what}.")
    return resolved.resolve()


Ref = Path | tuple[zipfile.ZipFile, str]  # a file, or an archive and its entry


class ImageIndex:
    """Images under some folders (or zip files) and inside the zip archives there.

    `find(name)` tries `root/name` and `root/<file name>` first; only when that fails it indexes the
    roots once (every image file, and every image entry of every zip archive, by relative path and by
    file name), so a folder of 118k COCO images costs nothing when the names match directly."""

    def __init__(self, roots: list[Path]) -> None:
        self.roots = roots
        self._by_path: dict[str, Ref] | None = None
        self._by_name: dict[str, Ref] = {}
        self._entries: list[tuple[str, Ref]] = []
        self._archives: list[zipfile.ZipFile] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        for archive in self._archives:
            archive.close()

    def find(self, name: str) -> Ref | None:
        rel = PurePosixPath(name.replace("\\", "/"))
        for root in self.roots:
            if root.is_dir():
                for candidate in (root / rel, root / rel.name):
                    if candidate.is_file():
                        return candidate
        by_path = self._index()
        return by_path.get(str(rel).lstrip("/")) or self._by_name.get(rel.name)

    def entries(self) -> list[tuple[str, Ref]]:
        """Every image as (path for its label: folders, and a zip's own name, down to the file, ref)."""
        self._index()
        return self._entries

    def record(self, ref: Ref, label: int, name: str) -> Record:
        if isinstance(ref, Path):
            return Record(label, name, str(ref.resolve()), path=ref)
        archive, member = ref
        return Record(label, name, f"{archive.filename}!{member}", data=archive.read(member))

    def _index(self) -> dict[str, Ref]:
        if self._by_path is None:
            self._by_path = {}
            for root in self.roots:
                if root.is_file() and root.suffix.lower() == ".zip":
                    self._add_archive(root, PurePosixPath())
                elif root.is_dir():
                    self._add_folder(root)
        return self._by_path

    def _add_folder(self, root: Path) -> None:
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            rel_folder = PurePosixPath(Path(folder).relative_to(root).as_posix())
            for name in sorted(files):
                suffix = Path(name).suffix.lower()
                if suffix in IMAGE_SUFFIXES:
                    self._add(rel_folder / name, rel_folder / name, Path(folder) / name)
                elif suffix == ".zip":
                    self._add_archive(Path(folder) / name, rel_folder)

    def _add_archive(self, path: Path, rel_folder: PurePosixPath) -> None:
        try:
            archive = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise LoganError(f"{path} is not a readable zip archive ({exc}); download it again or unpack it.")
        self._archives.append(archive)
        for member in sorted(archive.namelist()):
            if PurePosixPath(member).suffix.lower() in IMAGE_SUFFIXES:
                # entries resolve as if the archive were unpacked in place; labels may come from its name
                self._add(rel_folder / member, rel_folder / Path(path.name).stem / member, (archive, member))

    def _add(self, rel: PurePosixPath, label_path: PurePosixPath, ref: Ref) -> None:
        assert self._by_path is not None
        self._by_path.setdefault(str(rel), ref)
        self._by_name.setdefault(rel.name, ref)
        self._entries.append((str(label_path), ref))


def annotation_file(source: Path, subset: str | None, preferred: tuple[str, ...], dataset: str) -> Path:
    """The annotation list to read: `source` itself, or the one JSON / JSONL file in the folder that
    `subset=` names (by file name or stem), else a preferred name, else the only one there."""
    if source.is_file():
        return source
    found = sorted(
        p
        for p in source.rglob("*")
        if p.suffix.lower() in (".json", ".jsonl")
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(source).parts)
    )
    if not found:
        raise LoganError(
            f"{source} holds no JSON or JSONL annotation file: give source= the {dataset} "
            "download folder or the annotation file itself."
        )
    if subset:
        chosen = [p for p in found if subset in (p.name, p.stem)]
        if not chosen:
            raise LoganError(
                f"subset={subset} names no annotation file in {source}; "
                f"found: {', '.join(p.name for p in found[:10])}."
            )
        return chosen[0]
    for name in preferred:
        chosen = [p for p in found if p.name == name]
        if chosen:
            return chosen[0]
    if len(found) > 1:
        names = ", ".join(p.name for p in found[:10])
        raise LoganError(
            f"{source} holds {len(found)} annotation files ({names}): choose one with "
            "subset=NAME or give the file as source=FILE."
        )
    return found[0]


def read_annotations(path: Path) -> list[dict[str, Any]]:
    """A JSON list of objects, or JSON Lines (one object a line); the wrong shape is one clear error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise LoganError(f"cannot read annotation file {path} ({exc}).")
    if path.suffix.lower() == ".jsonl":
        entries = []
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    entries.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise LoganError(f"{path}, line {number}: not valid JSON ({exc}).")
    else:
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as exc:
            raise LoganError(f"{path} is not valid JSON ({exc}).")
    if not isinstance(entries, list):
        raise LoganError(
            f'{path} must be a list of {{"image": ..., "conversations": [...]}} objects, '
            f"not a {type(entries).__name__}."
        )
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise LoganError(
                f"{path}, entry {i}: expected an object with an 'image' field, got {str(entry)[:80]}."
            )
    return entries


def annotation_records(
    entries: list[dict[str, Any]], path: Path, index: ImageIndex, label: int, report: Report
) -> Iterator[Record]:
    """The images that annotation entries name (`image`: a name or a list of names), all with `label`.

    An entry without an image is counted as text-only; a name not found is counted as missing."""
    with index:
        for i, entry in enumerate(entries):
            report.entries += 1
            names = entry.get("image", entry.get("images"))
            if names is None or names == []:
                report.text_only += 1
                continue
            for name in names if isinstance(names, list) else [names]:
                if not isinstance(name, str) or not name:
                    raise LoganError(
                        f"{path}, entry {i}: 'image' must be a file name or a list of names, got {name!r}."
                    )
                ref = index.find(name)
                if ref is None:
                    report.miss(name)
                    continue
                yield index.record(ref, label, name)


def annotation_dataset(
    cfg: PrepareConfig,
    report: Report,
    *,
    dataset: str,
    label: int,
    preferred: tuple[str, ...],
    images_hint: str | None = None,
    default_images: Callable[[Path], Path] | None = None,
) -> tuple[int, Iterator[Record]]:
    """Annotation list + image folder -> records. With `images_hint`, `images=` is required (the hint
    says what to give); without, images default to `default_images(annotation file)`, searched (zips too)."""
    root = existing(cfg.source, "source", f"the downloaded {dataset} folder or its annotation file")
    path = annotation_file(root, cfg.subset, preferred, dataset)
    if images_hint and not cfg.images:
        raise LoganError(f"{dataset} needs images=DIR: {images_hint}.")
    if cfg.images:
        image_root = existing(cfg.images, "images", images_hint or "the image folder (or zip archive)")
    else:
        image_root = default_images(path) if default_images else path.parent
    entries = read_annotations(path)
    report.where = str(image_root)
    return len(entries), annotation_records(entries, path, ImageIndex([image_root]), label, report)
