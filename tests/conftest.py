"""Shared fixtures: a small captioned image world and a tiny LLaVA built offline from configs."""

from __future__ import annotations

import os

# the fused metric kernel's tests run it under triton's CPU interpreter, which must be chosen before
# triton is first imported (LOGAN_TEST_DEVICE=cuda runs them on a GPU instead)
if os.environ.get("LOGAN_TEST_DEVICE", "cpu") == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from logan.data.synthetic import make_split, vocabulary
from logan.models.tiny import TinySpec, build_tiny_llava


@dataclass
class World:
    root: Path
    members: Path
    nonmembers: Path
    reference: Path
    model: Path

    def overrides(self, out: Path, *extra: str) -> list[str]:
        """The spine contract's tuning command line for this world."""
        return [
            "target_model=llava-hf", f"target_model.model_path={self.model}",
            f"data.member_dataset={self.members}", f"data.nonmember_dataset={self.nonmembers}",
            "data.target_set_size=16", "data.n_nm_ratio=0.5", "data.reference_datasets_list=[]",
            "noise.std_sets=[[0.0,2.0],[20.0,200.0]]", "img_metrics.parts=[img,inst,desp,inst_desp,caption]",
            "generation.num_gen_tokens=6", "inference.batch_size=4", f"path.output_dir={out}", *extra,
        ]


@pytest.fixture(scope="session")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    root = tmp_path_factory.mktemp("world")
    lists = make_split(root / "data", {"members": 12, "nonmembers": 12, "reference": 8}, size=40, seed=0)
    captions = [e["caption"] for p in lists.values() for e in json.loads(p.read_text())]
    model = build_tiny_llava(root / "tiny", vocabulary() + captions, TinySpec(image_size=32, hidden=32), seed=0)
    return World(root, lists["members"], lists["nonmembers"], lists["reference"], model)


@pytest.fixture(scope="module")
def model(world: World):
    """The tiny LLaVA behind the llava-hf adapter, on the CPU in float32."""
    from logan.config import ModelConfig
    from logan.models.llava_hf import LlavaHF

    return LlavaHF(ModelConfig(model_path=str(world.model)), torch.device("cpu"), torch.float32)


@pytest.fixture(scope="session")
def hf_vlms(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny random-weight folders of six Hugging Face VLM families (tests/hf_families.py), a second each."""
    import warnings

    from hf_families import BUILDERS

    root = tmp_path_factory.mktemp("hf_vlms")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """An empty Hub cache used by huggingface_hub and datasets for this test, offline. The modules read
    HF_HUB_CACHE / HF_HUB_OFFLINE when imported, so their attributes are patched, not the environment."""
    import datasets
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return cache


@pytest.fixture
def fake_hub(hub_cache, monkeypatch):
    """Online mode against an in-process fake Hub (hub_fakes.FakeHub); no socket is opened."""
    from hub_fakes import FakeHub

    hub = FakeHub()
    with hub.installed(monkeypatch):
        yield hub
