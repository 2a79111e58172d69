"""Target / reference set construction from JSON lists and saved Parquet sets."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from logan.data.images import sample_id
from logan.config import DataConfig, RunConfig, _check_ratio
from logan.data.saved import COLUMNS, read_set
from logan.data.sets import SET_FILES, DataSets, build_reference, build_sets, build_target, read_list
from logan.errors import LoganError


def write_images(folder: Path, prefix: str, n: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}_{i:03d}.png"
        seed = [i, *prefix.encode()]  # every image differs in content: samples are keyed by their bytes
        Image.fromarray(np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def write_list(path: Path, entries) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))
    return path


def make_list(tmp_path: Path, name: str, n: int, label: int, caption: bool = True) -> Path:
    images = write_images(tmp_path / "img" / name, name, n)
    entries = [{"image": str(p), "label": label} | ({"caption": f"{name} {i}"} if caption else {})
               for i, p in enumerate(images)]
    return write_list(tmp_path / f"{name}.json", entries)


@pytest.fixture
def lists(tmp_path):
    return {
        "members": make_list(tmp_path, "mem", 20, 1),
        "nonmembers": make_list(tmp_path, "non", 20, 0),
        "ref_a": make_list(tmp_path, "refa", 12, 0),
        "ref_b": make_list(tmp_path, "refb", 12, 0),
    }


def cfg(lists, **kw) -> DataConfig:
    base = dict(member_dataset=str(lists["members"]), nonmember_dataset=str(lists["nonmembers"]),
                target_set_size=10, n_nm_ratio=0.5)
    return DataConfig(**(base | kw))


def images_of(path: Path) -> set[str]:
    return {str(Path(e["image"]).resolve()) for e in json.loads(Path(path).read_text())}


# ---------------------------------------------------------------- target sampling


def test_target_sampling_is_seeded(lists):
    a = build_target(cfg(lists), seed=0)
    b = build_target(cfg(lists), seed=0)
    pd.testing.assert_frame_equal(a, b)
    c = build_target(cfg(lists), seed=1)
    assert set(a.sample_id) != set(c.sample_id)


def test_target_sizes_labels_and_sources(lists):
    target = build_target(cfg(lists, target_set_size=10, n_nm_ratio=0.3), seed=0)
    assert list(target.columns) == COLUMNS
    assert len(target) == 10
    assert (target.label == 0).sum() == 3 and (target.label == 1).sum() == 7
    assert set(target[target.label == 1].path) <= images_of(lists["members"])
    assert set(target[target.label == 0].path) <= images_of(lists["nonmembers"])
    assert target.sample_id.is_unique and target.image.isna().all()
    assert all(Path(p).is_absolute() and Path(p).exists() for p in target.path)
    assert [sample_id(Path(p).read_bytes()) for p in target.path] == target.sample_id.tolist()
    # members first, then non-members; captions travel with their images
    assert target.label.tolist() == [1] * 7 + [0] * 3
    for row in target.itertuples():
        assert row.caption.split()[0] == Path(row.path).name.split("_")[0]


@pytest.mark.parametrize("size,ratio,n_non", [(10, 0.5, 5), (7, 0.5, 4), (20, 0.25, 5), (4, 0.75, 3)])
def test_non_member_count_is_rounded_ratio(lists, size, ratio, n_non):
    target = build_target(cfg(lists, target_set_size=size, n_nm_ratio=ratio), seed=3)
    assert len(target) == size
    assert int((target.label == 0).sum()) == n_non


def test_whole_lists_can_be_taken(lists):
    target = build_target(cfg(lists, target_set_size=40), seed=0)
    assert set(target.path) == images_of(lists["members"]) | images_of(lists["nonmembers"])


def test_target_larger_than_the_files_is_an_error(lists):
    with pytest.raises(LoganError, match=r"needs 21 entries from data.member_dataset, which holds 20 members"):
        build_target(cfg(lists, target_set_size=42), seed=0)
    with pytest.raises(LoganError, match=r"nonmember_dataset, which holds 20"):
        build_target(cfg(lists, target_set_size=30, n_nm_ratio=0.8), seed=0)


def test_ratio_leaving_an_empty_class_is_an_error(lists):
    with pytest.raises(LoganError, match="raise the size"):
        build_target(cfg(lists, target_set_size=4, n_nm_ratio=0.1), seed=0)


@pytest.mark.parametrize("ratio", [0, 0.0, 1, 1.0, -0.2, 1.5])
def test_n_nm_ratio_outside_open_interval_is_rejected(ratio):
    with pytest.raises(LoganError, match="strictly between 0 and 1"):
        _check_ratio(ratio)
    with pytest.raises(LoganError, match="n_nm_ratio"):
        RunConfig.from_dict({"data": {"n_nm_ratio": ratio}})


@pytest.mark.parametrize("ratio", [0.01, 0.5, 0.99])
def test_n_nm_ratio_inside_is_accepted(ratio):
    _check_ratio(ratio)
    assert RunConfig.from_dict({"data": {"n_nm_ratio": ratio}}).data.n_nm_ratio == ratio


def test_null_target_set_size_with_json_lists_is_a_clear_error(lists):
    config = RunConfig.from_dict({"data": {"member_dataset": str(lists["members"]),
                                           "nonmember_dataset": str(lists["nonmembers"]),
                                           "target_set_size": None}}).data
    with pytest.raises(LoganError):
        build_target(config, seed=0)


def test_no_target_data_is_an_error():
    with pytest.raises(LoganError, match="no target data"):
        build_target(DataConfig(), seed=0)


# ---------------------------------------------------------------- list validation


def test_json_not_a_list(tmp_path):
    path = write_list(tmp_path / "bad.json", {"image": "a.png", "label": 1})
    with pytest.raises(LoganError, match="must be a JSON list"):
        read_list(path, "data.member_dataset")


def test_invalid_json(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("[{\"image\": ")
    with pytest.raises(LoganError, match="not valid JSON"):
        read_list(path, "data.member_dataset")


def test_list_not_in_utf8(tmp_path):
    path = tmp_path / "latin1.json"
    path.write_bytes('[{"image": "café.png", "label": 1}]'.encode("latin-1"))
    with pytest.raises(LoganError, match=r"latin1\.json is not valid JSON \('utf-8' codec can't decode"):
        read_list(path, "data.member_dataset")


@pytest.mark.parametrize("entry", [{"label": 1}, {"image": "x.png"}, "x.png", ["x.png", 1], None])
def test_entries_missing_image_or_label(tmp_path, entry):
    path = write_list(tmp_path / "bad.json", [{"image": "ok.png", "label": 1}, entry])
    with pytest.raises(LoganError, match="entry 1: expected an object with 'image' and 'label'"):
        read_list(path, "data.member_dataset")


@pytest.mark.parametrize("label", [2, "x", -1, 0.5, None, "yes", [1]])
def test_wrong_labels(tmp_path, label):
    path = write_list(tmp_path / "bad.json", [{"image": "a.png", "label": label}])
    with pytest.raises(LoganError, match=r"entry 0: label .* is not 1 \(member\) or 0 \(non-member\)"):
        read_list(path, "data.member_dataset")


@pytest.mark.parametrize("label,want", [(1, 1), (0, 0), (1.0, 1), ("1", 1), ("0", 0), (True, 1), (False, 0)])
def test_accepted_label_spellings(tmp_path, label, want):
    path = write_list(tmp_path / "ok.json", [{"image": "a.png", "label": label}])
    assert read_list(path, "x").label.tolist() == [want]


def test_empty_list(tmp_path):
    with pytest.raises(LoganError, match="is empty"):
        read_list(write_list(tmp_path / "empty.json", []), "data.member_dataset")


def test_missing_file(tmp_path):
    with pytest.raises(LoganError, match="data.member_dataset file not found"):
        read_list(tmp_path / "nope.json", "data.member_dataset")
    with pytest.raises(LoganError, match="not found"):
        build_target(DataConfig(member_dataset=str(tmp_path / "nope.json"),
                                nonmember_dataset=str(tmp_path / "nope2.json")), seed=0)


def test_member_file_with_non_member_labels(lists, tmp_path):
    entries = json.loads(lists["members"].read_text())
    entries[3]["label"] = 0
    entries[5]["label"] = 0
    bad = write_list(tmp_path / "mixed.json", entries)
    with pytest.raises(LoganError, match="holds 2 entries labelled 0.*must be labelled 1"):
        build_target(cfg(lists, member_dataset=str(bad)), seed=0)


def test_non_member_file_with_member_labels(lists, tmp_path):
    entries = json.loads(lists["nonmembers"].read_text())
    entries[0]["label"] = 1
    bad = write_list(tmp_path / "mixed.json", entries)
    with pytest.raises(LoganError, match="labelled 1.*must be labelled 0"):
        build_target(cfg(lists, nonmember_dataset=str(bad)), seed=0)


def test_image_in_both_lists_is_an_error(tmp_path):
    shared, *rest = write_images(tmp_path / "img", "x", 3)
    members = write_list(tmp_path / "m.json", [{"image": str(shared), "label": 1},
                                               {"image": str(rest[0]), "label": 1}])
    nonmembers = write_list(tmp_path / "n.json", [{"image": str(shared), "label": 0},
                                                  {"image": str(rest[1]), "label": 0}])
    config = DataConfig(member_dataset=str(members), nonmember_dataset=str(nonmembers), target_set_size=4)
    with pytest.raises(LoganError, match="both member and non-member"):
        build_target(config, seed=0)


def test_duplicate_entries_are_used_once(tmp_path, caplog):
    (a,) = write_images(tmp_path / "img", "d", 1)
    path = write_list(tmp_path / "dup.json", [{"image": str(a), "label": 1}, {"image": str(a), "label": 1}])
    with caplog.at_level(logging.WARNING):
        frame = read_list(path, "data.member_dataset")
    assert len(frame) == 1
    assert "twice" in caplog.text


def test_caption_and_text_fields(tmp_path):
    path = write_list(tmp_path / "c.json", [
        {"image": "a.png", "label": 1, "caption": "a cat"},
        {"image": "b.png", "label": 1, "text": "a dog"},
        {"image": "c.png", "label": 1},
    ])
    captions = read_list(path, "x").caption
    assert captions.tolist()[:2] == ["a cat", "a dog"]
    assert captions.iloc[2] == ""


def test_missing_caption_is_falsy_next_to_real_captions(tmp_path):
    path = write_list(tmp_path / "c.json", [
        {"image": "a.png", "label": 1, "caption": "a cat"},
        {"image": "c.png", "label": 1},
    ])
    row = list(read_list(path, "x").itertuples(index=False))[1]
    assert not row.caption


def test_relative_paths_resolve_against_the_list_folder(tmp_path, monkeypatch):
    lists_dir = tmp_path / "data" / "lists"
    write_images(tmp_path / "data" / "images", "r", 2)
    path = write_list(lists_dir / "m.json", [{"image": "../images/r_000.png", "label": 1},
                                             {"image": "../images/r_001.png", "label": 1}])
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    frame = read_list(path, "data.member_dataset")
    images = tmp_path / "data" / "images"
    assert frame.image.tolist() == [str((images / f"r_00{i}.png").resolve()) for i in (0, 1)]
    assert all(Path(p).is_file() for p in frame.image)


def test_relative_paths_fall_back_to_the_working_directory(tmp_path, monkeypatch):
    write_images(tmp_path / "cwd" / "pics", "w", 1)
    path = write_list(tmp_path / "lists" / "m.json", [{"image": "pics/w_000.png", "label": 1}])
    monkeypatch.chdir(tmp_path / "cwd")
    assert read_list(path, "x").image.tolist() == [str((tmp_path / "cwd" / "pics" / "w_000.png").resolve())]


# ---------------------------------------------------------------- reference modes


def test_reference_empty_list_is_the_target_non_members(lists):
    target = build_target(cfg(lists), seed=0)
    for empty in ([], None):
        reference, same = build_reference(cfg(lists, reference_datasets_list=empty), target, seed=0)
        assert same is True
        pd.testing.assert_frame_equal(reference, target[target.label == 0].reset_index(drop=True))


def test_reference_from_one_json_excludes_target_images(lists, tmp_path):
    target = build_target(cfg(lists), seed=0)
    # the reference parent overlaps the target non-member pool
    parent = write_list(tmp_path / "parent.json",
                        json.loads(lists["nonmembers"].read_text()) + json.loads(lists["ref_a"].read_text()))
    for spelling in ([str(parent)], str(parent)):
        reference, same = build_reference(cfg(lists, reference_datasets_list=spelling), target, seed=0)
        assert same is False
        assert len(reference) == 10  # reference_set_size defaults to target_set_size
        assert set(reference.path) <= images_of(parent)
        assert not set(reference.sample_id) & set(target.sample_id)
        assert (reference.label == 0).all()
    again, _ = build_reference(cfg(lists, reference_datasets_list=[str(parent)]), target, seed=0)
    pd.testing.assert_frame_equal(reference, again)
    other, _ = build_reference(cfg(lists, reference_datasets_list=[str(parent)]), target, seed=1)
    assert set(other.sample_id) != set(reference.sample_id)


def test_reference_from_one_small_json_uses_all_it_holds(lists, caplog):
    target = build_target(cfg(lists, target_set_size=30), seed=0)
    with caplog.at_level(logging.WARNING):
        config = cfg(lists, target_set_size=30, reference_datasets_list=[str(lists["ref_a"])])
        reference, _ = build_reference(config, target, seed=0)
    assert set(reference.path) == images_of(lists["ref_a"])
    assert "using all" in caplog.text


def test_reference_explicit_size_too_large_is_an_error(lists):
    target = build_target(cfg(lists), seed=0)
    config = cfg(lists, reference_datasets_list=[str(lists["ref_a"])], reference_set_size=13)
    with pytest.raises(LoganError, match="needs 13 entries"):
        build_reference(config, target, seed=0)


def test_reference_mixture_counts(lists):
    target = build_target(cfg(lists), seed=0)
    paths = [str(lists["ref_a"]), str(lists["ref_b"])]
    cases = (([0.5, 0.5], 10, (5, 5)), ([0.7, 0.3], 10, (7, 3)), ([1 / 3, 2 / 3], 10, (3, 7)),
             ([0.5, 0.5], 7, (4, 3)), ([1.0, 0.0], 8, (8, 0)))
    for dist, size, counts in cases:
        config = cfg(lists, reference_datasets_list=paths, reference_set_sample_distribution=dist,
                     reference_set_size=size)
        reference, same = build_reference(config, target, seed=0)
        assert same is False
        assert len(reference) == size
        got = (len(set(reference.path) & images_of(lists["ref_a"])),
               len(set(reference.path) & images_of(lists["ref_b"])))
        assert got == counts, dist


def test_reference_mixture_defaults_to_target_size(lists):
    target = build_target(cfg(lists), seed=0)
    config = cfg(lists, reference_datasets_list=[str(lists["ref_a"]), str(lists["ref_b"])],
                 reference_set_sample_distribution=[0.5, 0.5])
    reference, _ = build_reference(config, target, seed=0)
    assert len(reference) == 10


def test_reference_mixture_pool_too_small_is_an_error(lists):
    target = build_target(cfg(lists), seed=0)
    config = cfg(lists, reference_datasets_list=[str(lists["ref_a"]), str(lists["ref_b"])],
                 reference_set_sample_distribution=[0.9, 0.1], reference_set_size=20)
    with pytest.raises(LoganError, match="needs 18 entries"):
        build_reference(config, target, seed=0)


@pytest.mark.parametrize("dist,match", [
    ([0.5, 0.4], "sum to 1.0"),
    ([0.6, 0.6], "sum to 1.0"),
    ([1.5, -0.5], "non-negative"),
    ([0.5, 0.25, 0.25], "has 3 values but"),
    ([1.0], "has 1 values but"),
    (None, "give data.reference_set_sample_distribution"),
    ([], "give data.reference_set_sample_distribution"),
])
def test_reference_distribution_errors(lists, dist, match):
    target = build_target(cfg(lists), seed=0)
    config = cfg(lists, reference_datasets_list=[str(lists["ref_a"]), str(lists["ref_b"])],
                 reference_set_sample_distribution=dist)
    with pytest.raises(LoganError, match=match):
        build_reference(config, target, seed=0)


def test_reference_single_path_with_two_weights_is_an_error(lists):
    target = build_target(cfg(lists), seed=0)
    config = cfg(lists, reference_datasets_list=[str(lists["ref_a"])],
                 reference_set_sample_distribution=[0.5, 0.5])
    with pytest.raises(LoganError, match="2 values for 1 reference path"):
        build_reference(config, target, seed=0)


def test_reference_file_with_member_labels_is_an_error(lists, tmp_path):
    target = build_target(cfg(lists), seed=0)
    bad = write_list(tmp_path / "ref_bad.json", json.loads(lists["members"].read_text()))
    with pytest.raises(LoganError, match="must be labelled 0"):
        build_reference(cfg(lists, reference_datasets_list=[str(bad)]), target, seed=0)


def test_reference_with_nothing_outside_the_target_is_an_error(lists):
    target = build_target(cfg(lists, target_set_size=40), seed=0)  # every non-member is in the target
    with pytest.raises(LoganError, match="reference set is empty"):
        build_reference(cfg(lists, target_set_size=40, reference_datasets_list=[str(lists["nonmembers"])]),
                        target, seed=0)


# ---------------------------------------------------------------- Parquet sets


def built(lists, **kw) -> DataSets:
    config = cfg(lists, **kw)
    target = build_target(config, seed=0)
    reference, same = build_reference(config, target, seed=0)
    return DataSets(target, reference, same)


def test_saved_sets_reload_identically(lists, tmp_path):
    sets = built(lists, reference_datasets_list=[str(lists["ref_a"])])
    folder = tmp_path / "datasets"
    sets.save(folder)
    assert {p.name for p in folder.iterdir()} == {*SET_FILES.values(), "images.parquet"}
    pd.testing.assert_frame_equal(read_set(folder / SET_FILES["target"], "t"), sets.target)
    pd.testing.assert_frame_equal(read_set(folder / SET_FILES["reference"], "r"), sets.reference)
    full = read_set(folder / SET_FILES["full"], "f")
    assert len(full) == len(sets.target) + len(sets.reference)
    pd.testing.assert_frame_equal(full, sets.all_samples())


def test_parquet_dataset_reloads_as_is(lists, tmp_path):
    sets = built(lists)
    sets.save(tmp_path)
    config = DataConfig(dataset=str(tmp_path / SET_FILES["target"]), target_set_size=2)
    reloaded = build_target(config, seed=99)
    pd.testing.assert_frame_equal(reloaded, sets.target)


def test_parquet_member_and_nonmember_files_reload_as_is(lists, tmp_path):
    sets = built(lists)
    sets.save(tmp_path)
    config = DataConfig(member_dataset=str(tmp_path / SET_FILES["member"]),
                        nonmember_dataset=str(tmp_path / SET_FILES["nonmember"]), target_set_size=500)
    pd.testing.assert_frame_equal(build_target(config, seed=5), sets.target)


def test_parquet_reference_reloads_as_is(lists, tmp_path):
    sets = built(lists, reference_datasets_list=[str(lists["ref_b"])])
    sets.save(tmp_path)
    config = cfg(lists, reference_datasets_list=[str(tmp_path / SET_FILES["reference"])])
    reference, same = build_reference(config, sets.target, seed=123)
    assert same is False
    pd.testing.assert_frame_equal(reference, sets.reference)


def test_mixed_json_and_parquet_is_an_error(lists, tmp_path):
    built(lists).save(tmp_path)
    config = cfg(lists, nonmember_dataset=str(tmp_path / SET_FILES["nonmember"]))
    with pytest.raises(LoganError, match="both be fresh sources"):
        build_target(config, seed=0)


def test_parquet_lacking_label_column(tmp_path):
    path = tmp_path / "no_label.parquet"
    pd.DataFrame({"image": ["a.png", "b.png"], "caption": ["x", "y"]}).to_parquet(path)
    with pytest.raises(LoganError, match=r"has no label column 'label' \(columns: image, caption\); name it with "
                                         "label=COLUMN"):
        build_target(DataConfig(dataset=str(path)), seed=0)


def test_unreadable_parquet(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet")
    with pytest.raises(LoganError, match="not a readable Parquet file"):
        build_target(DataConfig(dataset=str(path)), seed=0)


def test_parquet_target_with_one_class_is_an_error(lists, tmp_path):
    sets = built(lists)
    sets.save(tmp_path)
    with pytest.raises(LoganError, match="needs both classes"):
        build_target(DataConfig(dataset=str(tmp_path / SET_FILES["member"])), seed=0)


def test_build_sets_resumes_from_a_saved_folder(lists, tmp_path):
    config = cfg(lists)
    sets, reloaded = build_sets(config, seed=0, saved=tmp_path / "datasets")
    assert reloaded is False and sets.reference_is_target_nonmembers is True
    sets.save(tmp_path / "datasets")
    again, reloaded = build_sets(config, seed=7, saved=tmp_path / "datasets")
    assert reloaded is True and again.reference_is_target_nonmembers is True
    pd.testing.assert_frame_equal(again.target, sets.target)
    pd.testing.assert_frame_equal(again.reference, sets.reference)


def test_all_samples_does_not_repeat_the_target_non_members(lists):
    sets = built(lists)
    assert sets.reference_is_target_nonmembers
    pd.testing.assert_frame_equal(sets.all_samples(), sets.target)


def test_a_target_list_without_labels_is_every_image_as_given(tmp_path):
    images = write_images(tmp_path / "img", "unknown", 5)
    labelled = write_images(tmp_path / "img", "known", 2)
    listed = write_list(tmp_path / "unknown.json", [{"image": str(images[0])}, {"image": str(images[1]), "label": None},
                                                    {"image": str(images[2]), "label": -1},
                                                    {"image": str(labelled[0]), "label": 1},
                                                    {"image": str(labelled[1]), "label": 0},
                                                    *({"image": str(p)} for p in images[3:])])
    target = build_target(DataConfig(dataset=str(listed), target_set_size=2), seed=0)   # the size is not used
    assert list(target.path) == [str(p) for p in [*images[:3], *labelled, *images[3:]]]   # in list order
    assert target.label.tolist() == [-1, -1, -1, 1, 0, -1, -1]
    assert target.attrs["sources"][0]["used"] == {"members": 1, "nonmembers": 1, "unlabelled": 5}
    folder = build_target(DataConfig(dataset=str(tmp_path / "img")), seed=0)   # a folder: every image, unlabelled
    assert sorted(folder.path) == sorted(str(p) for p in [*images, *labelled]) and (folder.label == -1).all()
    # a member list keeps its strictness: an entry without a label is an error there
    with pytest.raises(LoganError, match="expected an object with 'image' and 'label'"):
        build_target(DataConfig(member_dataset=str(listed), nonmember_dataset=str(listed), target_set_size=2), seed=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LoganError, match="is a folder without image files"):
        build_target(DataConfig(dataset=str(tmp_path / "empty")), seed=0)


def test_a_saved_reference_set_must_not_hold_target_members(lists, tmp_path):
    sets = build_sets(cfg(lists), seed=0, saved=None)[0]
    members = sets.target[sets.target.label == 1].assign(label=0).reset_index(drop=True)
    from logan.data.saved import write_images as save_images
    from logan.data.saved import write_set

    save_images(tmp_path / "ref", members)
    write_set(tmp_path / "ref" / "reference.parquet", members, "reference", [])
    with pytest.raises(LoganError, match="5 images of the reference set .* are members of the target set"):
        build_reference(DataConfig(reference_datasets_list=[str(tmp_path / "ref" / "reference.parquet")]),
                        sets.target, seed=0)
