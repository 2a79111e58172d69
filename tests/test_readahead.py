"""The checkpoint read-ahead: which files it reads, and that it stays out of the way."""

from __future__ import annotations

from pathlib import Path

from logan.config import ModelConfig
from logan.models import readahead


def test_weight_files_are_those_of_the_model_settings(tmp_path: Path) -> None:
    folder, tower = tmp_path / "model", tmp_path / "tower"
    folder.mkdir()
    tower.mkdir()
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "config.json",
                 "tokenizer.model"):
        (folder / name).write_bytes(b"x" * 10)
    (folder / "training_args.bin").write_bytes(b"t")
    (folder / "pytorch_model.bin").write_bytes(b"b")  # beside safetensors: transformers does not read it
    (tower / "pytorch_model.bin").write_bytes(b"y")
    (tower / "optimizer.pt").write_bytes(b"o")
    (tmp_path / "eva_vit_g.pth").write_bytes(b"z")
    cfg = ModelConfig(model_path=str(folder), vision_tower=str(tower), vit_model=str(tmp_path / "eva_vit_g.pth"),
                      model_base=str(tmp_path / "missing"))
    assert readahead.weight_files(cfg) == [folder / "model-00001-of-00002.safetensors",
                                           folder / "model-00002-of-00002.safetensors",
                                           tower / "pytorch_model.bin", tmp_path / "eva_vit_g.pth"]


def test_read_ahead_reads_every_file_once_in_order(tmp_path: Path, monkeypatch) -> None:
    files = []
    for i, size in enumerate((3 * readahead.BLOCK + 5, 7)):
        files.append(tmp_path / f"w{i}.safetensors")
        files[-1].write_bytes(bytes(size))
    opened: list[Path] = []
    real_open = open

    def spy(file, *args, **kwargs):
        opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spy)
    thread = readahead.read_ahead(files)
    assert thread is not None and thread.daemon
    thread.join(timeout=30)
    assert opened == files


def test_read_ahead_skips_what_would_not_fit_in_memory(tmp_path: Path, monkeypatch) -> None:
    file = tmp_path / "w.safetensors"
    file.write_bytes(bytes(1000))
    monkeypatch.setattr(readahead, "_free_memory", lambda: 1500)  # 1000 B > half of 1500 B
    assert readahead.read_ahead([file]) is None
    monkeypatch.setattr(readahead, "_free_memory", lambda: 4000)
    assert readahead.read_ahead([file]) is not None
    assert readahead.read_ahead([]) is None
