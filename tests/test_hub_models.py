"""Models by Hugging Face Hub name: ids, tags, commits and single files resolve through huggingface_hub from
a cache laid out as it writes one (offline, as CI is); the commit lands in the run's records; every failure
(offline and not cached, a missing revision, private, gated, missing repository or file) is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hub_fakes import add_snapshot, fake_commit, folder_files

from logan.cli import main
from logan.errors import LoganError
from logan.models.hub import HubRef, moved_revision, parse, resolve

A, B = fake_commit("A"), fake_commit("B")
REPO = "tiny-org/tiny-llava"


@pytest.fixture
def cached(hub_cache, world):
    """The world's tiny LLaVA as two commits of a Hub repository: A (main, v1.0) and B (dev)."""
    files = folder_files(world.model)
    add_snapshot(hub_cache, REPO, files, A, refs=("main", "v1.0"))
    add_snapshot(hub_cache, REPO, {**files, "NOTE.md": b"dev"}, B, refs=("dev",))
    add_snapshot(hub_cache, "tiny-org/parts", {"ckpt/minigpt4.pth": b"x" * 8}, fake_commit("P"))
    return hub_cache


def test_parse_tells_local_paths_from_hub_values(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models" / "llava").mkdir(parents=True)
    assert parse("models/llava", "k") == Path("models/llava")          # an existing path wins
    assert parse("llava-hf/llava-1.5-7b-hf", "k") == HubRef("llava-hf/llava-1.5-7b-hf", None)
    assert parse("./llava-hf/x", "k") == Path("llava-hf/x")            # explicitly relative: a path
    assert parse("a/b/c", "k") == Path("a/b/c")                        # two slashes: a path
    assert parse("hf://Vision-CAIR/MiniGPT-4@v1/a/b.pth", "k") == HubRef("Vision-CAIR/MiniGPT-4", "v1", "a/b.pth")
    with pytest.raises(LoganError, match="names a dataset repository"):
        parse("hf://datasets/org/x", "k")


def test_ids_tags_branches_and_commits_resolve_offline(cached, world):
    main_ = resolve(REPO, "target_model.model_path")
    tag = resolve(REPO, "target_model.model_path", revision="v1.0")
    dev = resolve(f"hf://{REPO}@dev", "target_model.model_path")
    full = resolve(f"hf://{REPO}@{B}", "target_model.model_path")
    assert (main_.commit, tag.commit, dev.commit, full.commit) == (A, A, B, B)
    assert main_.path == cached / "models--tiny-org--tiny-llava" / "snapshots" / A
    assert tag.provenance() == f"hf://{REPO}@{A}" and (dev.path / "NOTE.md").is_file()
    # the snapshot folder holds the same weights as the folder it was made from
    from transformers import LlavaForConditionalGeneration

    ours = LlavaForConditionalGeneration.from_pretrained(tag.path).state_dict()
    theirs = LlavaForConditionalGeneration.from_pretrained(world.model).state_dict()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_a_single_file_resolves_offline(cached):
    got = resolve("hf://tiny-org/parts/ckpt/minigpt4.pth", "target_model.ckpt", want="file")
    assert got.path.read_bytes() == b"x" * 8 and got.commit == fake_commit("P")
    assert got.provenance() == f"hf://tiny-org/parts@{fake_commit('P')}/ckpt/minigpt4.pth"
    with pytest.raises(LoganError, match="names a repository, not a file in it"):
        resolve("hf://tiny-org/parts", "target_model.ckpt", want="file")
    with pytest.raises(LoganError, match="pins revision v2, but target_model.revision=v1.0; give the revision once"):
        resolve(f"hf://{REPO}@v2", "target_model.model_path", revision="v1.0")


@pytest.mark.parametrize("value, revision, want, pattern", [
    ("nobody/nothing", None, "folder",
     r"nobody/nothing at main is not in the Hub cache .* offline \(HF_HUB_OFFLINE=1\); run `hf download nobody/nothing`"),
    (REPO, "v9", "folder", (r"at v9 is not in the Hub cache .*cached: dev, main, v1.0; run `hf download "
                            r"tiny-org/tiny-llava --revision v9`")),
    (f"hf://{REPO}@{A[:7]}", None, "folder", "a short commit hash cannot be resolved; give the full 40-character"),
    ("hf://tiny-org/parts/none.pth", None, "file",
     r"file none.pth of tiny-org/parts .*`hf download hf://tiny-org/parts@main/none.pth`"),
    ("/models/nothing", None, "folder", r"is not a local folder \(nor a Hub address"),
])
def test_offline_failures_are_one_line(cached, value, revision, want, pattern):
    with pytest.raises(LoganError, match=pattern) as caught:
        resolve(value, "target_model.model_path", want=want, revision=revision)
    assert "\n" not in str(caught.value)


def test_server_answers_are_one_line_and_a_download_works(fake_hub):
    fake_hub.add_repo("org/public", {"config.json": b"{}", "model.safetensors": b"s" * 4,
                                     "pytorch_model.bin": b"b" * 4, "flax_model.msgpack": b"f"}, A)
    fake_hub.add_repo("org/public", {"config.json": b"{}", "w.pth": b"w"}, B, refs=("v2",))
    fake_hub.deny("org/private", 401)
    fake_hub.deny("org/gated", 403, "GatedRepo")
    fake_hub.deny("org/forbidden", 403)
    cases = {("org/public", "nope", "folder"): "org/public has no revision nope; give a branch, tag or full commit",
             ("org/private", None, "folder"): r"no repository org/private that this token may read \(HTTP 401\)",
             ("org/missing", None, "folder"): "no repository org/missing that this token may read",
             ("org/gated", None, "folder"): "org/gated is gated: accept its terms on https://huggingface.co/org/gated",
             ("org/forbidden", None, "folder"): r"refused this token \(HTTP 403\)",
             ("hf://org/public@v2/none.pth", None, "file"): "org/public at v2 has no file none.pth"}
    for (value, revision, want), pattern in cases.items():
        with pytest.raises(LoganError, match=pattern) as caught:
            resolve(value, "target_model.model_path", want=want, revision=revision)
        assert "\n" not in str(caught.value)
    got = resolve("org/public", "target_model.model_path")   # only the files a loader reads are fetched
    assert got.commit == A and sorted(p.name for p in got.path.iterdir()) == ["config.json", "model.safetensors"]
    assert all(r.split()[1].startswith("https://huggingface.co/") for r in fake_hub.requests)


def test_tune_by_hub_id_records_the_commit_and_a_missing_revision_writes_nothing(cached, world, tmp_path, capsys):
    out = tmp_path / "run"
    args = world.overrides(out, "noise.std_sets=[[0.0,2.0]]", "img_metrics.parts=[img]")
    args = [a for a in args if not a.startswith("target_model.model_path=")]
    assert main(["tune", f"target_model.model_path={REPO}", "target_model.revision=v1.0", *args]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["target_model"]["model_path"] == REPO and config["target_model"]["revision"] == "v1.0"
    record = config["resolved"]["target_model.model_path"]
    assert record["commit"] == A and record["revision"] == "v1.0" and record["uri"] == f"hf://{REPO}@{A}"
    fingerprint = json.loads((out / "run_fingerprint.json").read_text())["fingerprint"]
    assert fingerprint["model_path"] == f"hf://{REPO}@{A}"
    assert json.loads((out / "provenance.json").read_text())["models"]["target_model.model_path"]["commit"] == A
    assert json.loads((out / "optimal_std.json").read_text())["provenance"]["models"][
        "target_model.model_path"]["commit"] == A
    # classify on the tuning run scores with the commit the tuning run used
    classify = tmp_path / "classify"
    assert main(["classify", f"noise.std={out / 'optimal_std.json'}", f"path.output_dir={classify}"]) == 0
    theirs = json.loads((classify / "config.json").read_text())
    assert theirs["target_model"]["model_path"] == f"hf://{REPO}@{A}" and theirs["target_model"]["revision"] is None
    assert theirs["resolved"]["target_model.model_path"]["commit"] == A
    # the same run pinned by its commit resumes; the branch `dev` (another commit) is refused in one line
    assert main(["tune", f"target_model.model_path=hf://{REPO}@{A}", *args]) == 0
    capsys.readouterr()
    assert main(["tune", f"target_model.model_path={REPO}", "target_model.revision=dev", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"at commit {A}, but the revision now resolves to {B}" in err and f"target_model.revision={A}" in err
    missing = tmp_path / "missing"
    assert main(["tune", f"target_model.model_path={REPO}", "target_model.revision=v9",
                 *world.overrides(missing)[2:]]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "at v9 is not in the Hub cache" in err and "hf download tiny-org/tiny-llava --revision v9" in err
    assert not missing.exists()


def test_path_cache_dir_is_the_hub_cache(cached, world, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "elsewhere"))
    with pytest.raises(LoganError, match="is not in the Hub cache"):
        resolve(REPO, "target_model.model_path")
    assert resolve(REPO, "target_model.model_path", cache_dir=str(cached)).commit == A


def test_a_moved_branch_is_named_on_resume(cached):
    old = {"model_path": resolve(REPO, "k", revision="v1.0").provenance(), "seed": 0}
    same = {"model_path": resolve(f"hf://{REPO}@{A}", "k").provenance(), "seed": 0}
    moved = {"model_path": resolve(REPO, "k", revision="dev").provenance(), "seed": 0}
    assert old == same and moved_revision(old, same, Path("OUT")) is None
    message = moved_revision(old, moved, Path("OUT"))
    assert f"at commit {A}, but the revision now resolves to {B}" in message and "\n" not in message


def test_the_original_llava_configs_vision_tower_id_resolves_too(hub_cache, tmp_path):
    from logan.config import RunConfig
    from logan.models.hub import local_model

    folder = tmp_path / "llava-v1.5-7b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"mm_vision_tower": "openai/clip-vit-large-patch14-336"}))
    cfg = RunConfig.from_dict({"target_model": {"name": "llava-v1.5-7b", "model_path": str(folder)}})
    with pytest.raises(LoganError, match=r"hf download openai/clip-vit-large-patch14-336`.*Or set "
                                         r"target_model.vision_tower=CLIP_DIR"):
        local_model(cfg)
    clip = add_snapshot(hub_cache, "openai/clip-vit-large-patch14-336", {"config.json": b"{}"}, B)
    assert local_model(cfg).vision_tower == str(clip) and cfg.target_model.vision_tower is None
    assert cfg.resolved["target_model.vision_tower"] | {"path": None} == {
        "value": "openai/clip-vit-large-patch14-336", "repo": "openai/clip-vit-large-patch14-336",
        "revision": "main", "commit": B, "file": None, "uri": f"hf://openai/clip-vit-large-patch14-336@{B}",
        "path": None, "implicit": "mm_vision_tower"}
