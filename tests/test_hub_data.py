"""Datasets by Hugging Face name and tables: a folder laid out like a Hub dataset repository (Parquet shards
with image bytes, a README with configs), the same repository by Hub id from a cache laid out as
huggingface_hub writes one (offline), CSV / JSON-lines / Parquet tables; samples keyed by their image bytes.
The same images in any of these forms give the same target set and the same scores as JSON lists."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hub_fakes import add_snapshot, fake_commit, folder_files, write_vlmia_like

from logan.api import run
from logan.cli import main
from logan.config import DataConfig
from logan.data.images import content_key, sample_id
from logan.data.saved import read_set, saved_metadata
from logan.data.sets import SET_FILES, DataSets, build_reference, build_target, open_pool
from logan.data.sources import Entry, parse_entry
from logan.errors import LoganError

COMMIT = fake_commit("VL-MIA-image")
SMALL = ["noise.std_sets=[[0.0,20.0]]", "img_metrics.parts=[img,inst]", "inference.batch_size=4",
         "data.reference_datasets_list=[]", "data.target_set_size=8", "generation.num_gen_tokens=4"]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubdata") / "VL-MIA-image"
    return root, write_vlmia_like(root, flickr_rows=24, dalle_rows=12)


def as_json_lists(folder: Path, rows: list[dict]) -> tuple[Path, Path]:
    """The same images as files and LOGAN JSON lists (members, non-members), in dataset row order."""
    (folder / "img").mkdir(parents=True, exist_ok=True)
    lists: dict[int, list] = {1: [], 0: []}
    for r in rows:
        (folder / "img" / r["name"]).write_bytes(r["bytes"])
        lists[r["label"]].append({"image": f"img/{r['name']}", "label": r["label"]})
    for label, name in ((1, "members.json"), (0, "nonmembers.json")):
        (folder / name).write_text(json.dumps(lists[label]))
    return folder / "members.json", folder / "nonmembers.json"


def target(**data) -> pd.DataFrame:
    return build_target(DataConfig(target_set_size=10, n_nm_ratio=0.5, **data), seed=3)


def test_entry_grammar():
    assert parse_entry("hf:JaineLi/VL-MIA-image@v1?config=img_Flickr&split=test&label=is_member", "k") == \
        Entry("hub", "JaineLi/VL-MIA-image", "img_Flickr", "test", "v1", "image", "is_member")
    assert parse_entry("hf://datasets/JaineLi/VL-MIA-image@v1?config=img_Flickr", "k") == \
        Entry("hub", "JaineLi/VL-MIA-image", "img_Flickr", revision="v1")
    assert parse_entry("pool.csv?image=file", "k") == Entry("table", "pool.csv", image="file")
    assert parse_entry("m.json", "k").kind == "file"
    with pytest.raises(LoganError, match="'conf' is not a dataset option. Did you mean 'config'"):
        parse_entry("hf:a/b?conf=x", "k")
    with pytest.raises(LoganError, match="config, split and revision apply to hf: datasets only"):
        parse_entry("pool.csv?split=test", "k")


def test_a_hub_like_folder_gives_the_json_lists_target_set(repo, tmp_path, hub_cache):
    root, truth = repo
    members, nonmembers = as_json_lists(tmp_path / "lists", truth["img_Flickr"])
    from_lists = target(member_dataset=str(members), nonmember_dataset=str(nonmembers))
    pool = target(dataset=f"hf:{root}?config=img_Flickr&split=train")
    filtered = target(member_dataset=f"hf:{root}?config=img_Flickr", nonmember_dataset=f"hf:{root}?config=img_Flickr")
    for frame in (pool, filtered):
        assert frame.sample_id.tolist() == from_lists.sample_id.tolist()
        assert frame.label.tolist() == from_lists.label.tolist()
        assert frame.name.tolist() == [Path(p).name for p in from_lists.path]
        assert frame.path.isna().all() and frame.image.map(len).gt(0).all()   # bytes, no file
    [source] = pool.attrs["sources"]
    assert source | {"content": None} == source | {
        "key": "data.dataset", "source": str(root), "kind": "folder", "config": "img_Flickr", "split": "train",
        "rows": 24, "used": {"members": 5, "nonmembers": 5}, "content": None,
        "files": ["img_Flickr/train-00000-of-00002.parquet", "img_Flickr/train-00001-of-00002.parquet"]}
    # the noise of every sample is seeded as the files' bytes seed it
    assert [int.from_bytes(bytes.fromhex(s[7:])[:8], "little") >> 1 for s in from_lists.sample_id] == \
        [content_key(Path(p).read_bytes()) for p in from_lists.path]


def test_a_hub_id_reads_the_cached_snapshot_and_records_its_commit(repo, hub_cache):
    root, truth = repo
    add_snapshot(hub_cache, "JaineLi/VL-MIA-image", folder_files(root), COMMIT, refs=("main", "v1"),
                 repo_type="dataset")
    frame = target(dataset="hf:JaineLi/VL-MIA-image@v1?config=img_dalle")
    [source] = frame.attrs["sources"]
    assert (source["kind"], source["revision"], source["commit"], source["rows"]) == ("hub", "v1", COMMIT, 12)
    assert frame.origin.iloc[0] == f"hf:JaineLi/VL-MIA-image@{COMMIT}?config=img_dalle&split=train&image=image&label=label"
    labels = {sample_id(r["bytes"]): r["label"] for r in truth["img_dalle"]}
    assert all(labels[s] == v for s, v in zip(frame.sample_id, frame.label))  # ClassLabel names, not indices
    local = target(dataset=f"hf:{root}?config=img_dalle")
    assert local.attrs["sources"][0]["content"] == source["content"]          # the same rows, the same fingerprint
    with pytest.raises(LoganError, match=r"at v9 is not in the Hub cache .*hf download --repo-type dataset "
                                         r"JaineLi/VL-MIA-image --revision v9"):
        target(dataset="hf:JaineLi/VL-MIA-image@v9?config=img_dalle")
    with pytest.raises(LoganError, match=r"not in the Hub cache .*`hf download --repo-type dataset nobody/nothing`"):
        target(dataset="hf:nobody/nothing")


@pytest.mark.parametrize("entry, pattern", [
    ("hf:{root}", r"has the configs img_Flickr, img_dalle: choose one with config=NAME"),
    ("hf:{root}?config=img_Flikr", r"has no config 'img_Flikr'. Did you mean 'img_Flickr'\?"),
    ("hf:{root}?config=img_Flickr&split=test", r"Bad split: test. Available splits: \['train'\]"),
    ("hf:{root}?config=img_Flickr&label=is_member", r"has no label column 'is_member' \(columns: image, label\)"),
    ("hf:{root}@v1?config=img_Flickr", "is a local folder, which has no revision"),
    ("hf:{root}/nothing", "no such folder, and not a Hub dataset id"),
])
def test_wrong_config_split_or_column_is_one_line_and_writes_nothing(repo, hub_cache, world, tmp_path, capsys,
                                                                       entry, pattern):
    root, _ = repo
    out = tmp_path / "out"
    args = [a for a in world.overrides(out) if not a.startswith(("data.member", "data.nonmember"))]
    assert main(["tune", *args, f"data.dataset={entry.format(root=root)}"]) == 2
    err = capsys.readouterr().err
    assert len([line for line in err.splitlines() if line.startswith("logan: error")]) == 1, err
    assert "Traceback" not in err and re.search(pattern, err), err
    assert not out.exists()


def test_tables_of_paths_or_bytes_give_the_same_target_set(repo, tmp_path, hub_cache):
    _, truth = repo
    rows = truth["img_Flickr"][:14]
    folder = tmp_path / "t"
    members, nonmembers = as_json_lists(folder, rows)
    paths = pd.DataFrame([{"file": f"img/{r['name']}", "is_member": r["label"], "caption": f"c{i}"}
                          for i, r in enumerate(rows)])
    paths.to_csv(folder / "pool.csv", index=False)
    paths.to_json(folder / "pool.jsonl", orient="records", lines=True)
    pd.DataFrame([{"image": r["bytes"], "label": r["label"]} for r in rows]).to_parquet(folder / "pool.parquet")
    expected = target(member_dataset=str(members), nonmember_dataset=str(nonmembers))
    for name in ("pool.csv?image=file&label=is_member", "pool.jsonl?image=file&label=is_member", "pool.parquet"):
        got = target(dataset=str(folder / name))
        assert got.sample_id.tolist() == expected.sample_id.tolist(), name
        assert got.attrs["sources"][0]["kind"] == "table"
        if "csv" in name:  # paths resolved against the table's folder; captions from the caption column
            assert got.path.tolist() == expected.path.tolist() and got.caption.str.startswith("c").all()


def test_the_same_image_under_two_paths_is_one_sample(repo, tmp_path, hub_cache):
    _, truth = repo
    members, _ = as_json_lists(tmp_path / "d", truth["img_Flickr"][:6])
    entries = json.loads(members.read_text())
    (tmp_path / "d" / "copy.png").write_bytes((tmp_path / "d" / entries[0]["image"]).read_bytes())
    members.write_text(json.dumps(entries + [{"image": "copy.png", "label": 1}]))
    assert len(open_pool(str(members), "data.member_dataset", 1).records) == len(entries)


def test_bytes_held_sets_round_trip_through_the_sidecar(repo, tmp_path, hub_cache):
    root, _ = repo
    config = DataConfig(dataset=f"hf:{root}?config=img_Flickr", target_set_size=8,
                        reference_datasets_list=[f"hf:{root}?config=img_dalle"], reference_set_size=4)
    frame = build_target(config, seed=2)
    reference, _ = build_reference(config, frame, seed=2)
    sets = DataSets(frame, reference, False)
    sets.save(tmp_path / "datasets")
    assert saved_metadata(tmp_path / "datasets" / SET_FILES["target"])["sources"][0]["config"] == "img_Flickr"
    for kind, original in (("target", frame), ("reference", reference)):
        back = read_set(tmp_path / "datasets" / SET_FILES[kind])
        pd.testing.assert_frame_equal(back, original)
    assert pd.read_parquet(tmp_path / "datasets" / "images.parquet").sample_id.is_unique
    again = build_target(DataConfig(dataset=str(tmp_path / "datasets" / SET_FILES["target"])), seed=9)
    pd.testing.assert_frame_equal(again, frame)                       # a saved set reloads as is
    pd.DataFrame({"image": ["a.png"], "label": [1]}).to_parquet(tmp_path / "plain.parquet")
    assert saved_metadata(tmp_path / "plain.parquet") is None         # a plain table is a pool, not a saved set


def scores_of(out: Path) -> pd.DataFrame:
    frames = [pd.read_parquet(p).assign(std=p.parent.name) for p in sorted((out / "per_std").glob("*/scores.parquet"))]
    return pd.concat(frames).sort_values(["std", "sample_id", "part", "metric", "k"]).reset_index(drop=True)


def test_vl_mia_by_hub_id_tunes_end_to_end_and_scores_as_json_lists(repo, hub_cache, world, tmp_path):
    """`logan tune data.dataset=hf:JaineLi/VL-MIA-image?config=img_Flickr` from a cache, offline; the same
    images as JSON lists give the same target set and the same scores."""
    root, truth = repo
    add_snapshot(hub_cache, "JaineLi/VL-MIA-image", folder_files(root), COMMIT, repo_type="dataset")
    hub = tmp_path / "hub"
    run("tune", [f"target_model.model_path={world.model}", "data.dataset=hf:JaineLi/VL-MIA-image?config=img_Flickr",
                 *SMALL, f"path.output_dir={hub}"])
    members, nonmembers = as_json_lists(tmp_path / "lists", truth["img_Flickr"])
    lists = tmp_path / "lists-run"
    run("tune", [f"target_model.model_path={world.model}", f"data.member_dataset={members}",
                 f"data.nonmember_dataset={nonmembers}", *SMALL, f"path.output_dir={lists}"])
    a, b = read_set(hub / "datasets" / SET_FILES["target"]), read_set(lists / "datasets" / SET_FILES["target"])
    assert a.sample_id.tolist() == b.sample_id.tolist() and a.path.isna().all() and b.path.notna().all()
    pd.testing.assert_frame_equal(scores_of(hub), scores_of(lists))
    provenance = json.loads((hub / "provenance.json").read_text())["datasets"][0]
    assert (provenance["source"], provenance["commit"], provenance["config"]) == ("JaineLi/VL-MIA-image", COMMIT,
                                                                                 "img_Flickr")
    optimal = json.loads((hub / "optimal_std.json").read_text())
    assert optimal["provenance"]["datasets"][0]["commit"] == COMMIT
    # resumed: the saved set reloads (its bytes from the sidecar); nothing is recomputed
    run("tune", [f"target_model.model_path={world.model}", "data.dataset=hf:JaineLi/VL-MIA-image?config=img_Flickr",
                 *SMALL, f"path.output_dir={hub}"])
    # classify on the tuning run reads its bytes-held target set
    result = run("classify", [f"noise.std={hub / 'optimal_std.json'}", f"path.output_dir={tmp_path / 'cls'}"])
    assert set(result.scores.sample_id) == set(a.sample_id) and result.scores.image.str.endswith(".png").all()


def test_a_run_folder_of_an_earlier_logan_is_refused(world, tmp_path, capsys):
    out = tmp_path / "old"
    args = world.overrides(out, *SMALL[:2])
    assert main(["tune", *args]) == 0
    fingerprint = json.loads((out / "run_fingerprint.json").read_text())
    del fingerprint["fingerprint"]["sample_ids"]
    (out / "run_fingerprint.json").write_text(json.dumps(fingerprint))
    assert main(["tune", *args]) == 2
    assert "was written by an earlier LOGAN (other metric definitions, samples keyed by image path)" in capsys.readouterr().err


def test_prepare_vlmia_reads_the_hub_id_through_the_same_code(repo, hub_cache, tmp_path):
    from logan.api import prepare

    root, truth = repo
    add_snapshot(hub_cache, "JaineLi/VL-MIA-image", folder_files(root), COMMIT, repo_type="dataset")
    prepare("vlmia", ["source=hf:JaineLi/VL-MIA-image", "subset=img_dalle", f"path.output_dir={tmp_path}"])
    members = json.loads((tmp_path / "members.json").read_text())
    want = [sample_id(r["bytes"]) for r in truth["img_dalle"] if r["label"] == 1]
    assert [sample_id((tmp_path / e["image"]).read_bytes()) for e in members] == want


def test_online_only_the_chosen_config_is_downloaded(repo, fake_hub, hub_cache):
    root, truth = repo
    fake_hub.add_repo("org/vl-mia", folder_files(root), COMMIT, repo_type="dataset")
    fake_hub.deny("org/private-set", 401, repo_type="dataset")
    frame = target(dataset="hf:org/vl-mia?config=img_dalle")
    snapshot = hub_cache / "datasets--org--vl-mia" / "snapshots" / COMMIT
    assert sorted(p.relative_to(snapshot).as_posix() for p in snapshot.rglob("*.*")) == [
        "README.md", "img_dalle/train-00000-of-00001.parquet"]
    assert frame.attrs["sources"][0]["commit"] == COMMIT
    with pytest.raises(LoganError, match="no repository org/private-set that this token may read"):
        target(dataset="hf:org/private-set")
