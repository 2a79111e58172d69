"""Output files and folders get the modes the user's umask gives any program's output (0666 / 0777 less
the umask), so a colleague reads a run folder exactly as far as the umask allows: atomic writes, result
folders and saved model weights included (tempfile's and safetensors' private 0600 / 0700 are not kept)."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_reliability import SMALL

from logan.api import run
from logan.data.synthetic import vocabulary
from logan.models.tiny import TinySpec, build_tiny_llava
from logan.models.train import train_captioner


@contextmanager
def umask(mask: int) -> Iterator[None]:
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def off_modes(folder: Path, mask: int) -> dict[str, str]:
    """Every path under `folder` (itself included) whose mode is not what `mask` gives a new one."""
    want = {True: 0o777 & ~mask, False: 0o666 & ~mask}
    paths = [folder, *folder.rglob("*")]
    return {str(p.relative_to(folder)): oct(stat.S_IMODE(p.stat().st_mode)) for p in paths
            if stat.S_IMODE(p.stat().st_mode) != want[p.is_dir()]}


@pytest.mark.parametrize("mask", [0o022, 0o002])
def test_tune_and_classify_folders_follow_the_umask(world, tmp_path: Path, mask: int) -> None:
    tune, classify = tmp_path / "tune", tmp_path / "classify"
    with umask(mask):
        run("tune", world.overrides(tune, *SMALL))
        run("classify", [f"noise.std={tune / 'optimal_std.json'}", f"path.output_dir={classify}"])
    for folder in (tune, classify):
        assert off_modes(folder, mask) == {}
    # the files that used to be private are among those checked
    written = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")}
    assert {"tune/config.json", "tune/optimal_std.json", "tune/datasets/target_dataset.parquet",
            "classify/metrics.json", "classify/report.html", "classify/roc.png"} <= written
    assert any(p.startswith("classify/per_std/std_") for p in written)


def test_saved_and_trained_weights_follow_the_umask(world, tmp_path: Path) -> None:
    pairs = [(e["image"], e["caption"]) for e in json.loads(world.members.read_text())[:4]]
    with umask(0o002):
        folder = build_tiny_llava(tmp_path / "model", vocabulary() + [c for _, c in pairs], TinySpec(), seed=0)
        assert off_modes(folder, 0o002) == {}
        train_captioner(folder, pairs, "Describe this image concisely.", epochs=1, learning_rate=1e-3,
                        batch_size=4, seed=0)
    assert (folder / "model.safetensors").is_file() and off_modes(folder, 0o002) == {}
