"""`logan prepare`: the seed's three datasets, fabricated in their published layouts, to JSON lists."""

from __future__ import annotations

import json
import zipfile
from io import BytesIO
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from logan.api import prepare as api_prepare
from logan.api import run
from logan.cli import main
from logan.data.sets import read_list

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
INT_LABEL = {"dtype": "int64", "_type": "Value"}


def image_bytes(width: int, height: int, seed: int, fmt: str) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def flickr_rows(n: int, seed: int = 0) -> list[tuple[bytes, str, int]]:
    """VL-MIA-like rows: members small JPEGs, non-members larger PNGs (a resolution / format shift)."""
    members = [(image_bytes(48, 40, seed + i, "JPEG"), f"coco_{i}.jpg", 1) for i in range(n)]
    nonmembers = [(image_bytes(96, 80, seed + 100 + i, "PNG"), f"flickr2024_{i}.png", 0) for i in range(n)]
    return members + nonmembers


def hf_table(rows: list[tuple[bytes, str, int]], label_feature: dict) -> pa.Table:
    """A table as `datasets` writes it: the Image struct {bytes, path} and the features in the metadata."""
    table = pa.table({"image": pa.array([{"bytes": b, "path": p} for b, p, _ in rows], type=IMAGE_TYPE),
                      "label": pa.array([label for *_, label in rows], type=pa.int64())})
    features = {"image": {"_type": "Image"}, "label": label_feature}
    return table.replace_schema_metadata({"huggingface": json.dumps({"info": {"features": features}})})


def write_parquet(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory) -> Path:
    """A snapshot of JaineLi/VL-MIA-image: Parquet shards per subset (img_Flickr holds one duplicate)."""
    root = tmp_path_factory.mktemp("vlmia") / "VL-MIA-image"
    rows = flickr_rows(6)
    write_parquet(root / "img_Flickr" / "train-00000-of-00001.parquet", hf_table(rows + rows[:1], INT_LABEL))
    write_parquet(root / "img_dalle" / "train-00000-of-00001.parquet",
                  hf_table(flickr_rows(2, seed=50), INT_LABEL))
    return root


def prepare(name: str, *args: str) -> dict:
    api_prepare(name, list(args))
    out = next(a.split("=", 1)[1] for a in args if a.startswith("path.output_dir="))
    return json.loads((Path(out) / "prepare_summary.json").read_text())


def read_entries(path: Path) -> list[dict]:
    return json.loads(path.read_text())


def test_vlmia_parquet_snapshot(snapshot: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "out"
    assert main(["prepare", "vlmia", f"source={snapshot}", "subset=img_Flickr",
                 f"path.output_dir={out}"]) == 0
    members, nonmembers = read_entries(out / "members.json"), read_entries(out / "nonmembers.json")
    assert len(members) == len(nonmembers) == 6
    assert {e["label"] for e in members} == {1} and {e["label"] for e in nonmembers} == {0}
    assert all(e["image"].startswith("images/members/") and e["image"].endswith(".jpg") for e in members)
    assert all((out / e["image"]).is_file() for e in members + nonmembers)
    assert len(list((out / "images").rglob("*.*"))) == 12
    summary = json.loads((out / "prepare_summary.json").read_text())
    sets = summary["sets"]
    assert sets["members.json"]["count"] == 6 and sets["members.json"]["duplicates"] == 1
    assert sets["members.json"]["width"] == {"median": 48.0, "min": 48, "max": 48}
    assert sets["nonmembers.json"]["height"]["median"] == 80.0
    assert sets["members.json"]["formats"] == {"JPEG": 1.0}
    assert sets["nonmembers.json"]["formats"] == {"PNG": 1.0}
    [comparison] = summary["comparisons"]
    assert "differ clearly in image size" in comparison["warning"]
    assert "JPEG 100% vs 0%" in comparison["warning"]
    assert summary["runs"]["vlmia"]["entries"] == 13
    # the lists load as LOGAN's data lists, with the images resolved beside them
    frame = read_list(out / "members.json", "data.member_dataset")
    assert len(frame) == 6 and all(Path(p).is_file() for p in frame.image)


def test_vlmia_converter_branch_layout_and_limit(tmp_path: Path) -> None:
    """refs/convert/parquet lays a subset out as <subset>/train/0000.parquet; limit caps each list."""
    root = tmp_path / "VL-MIA-image"
    write_parquet(root / "img_Flickr_2k" / "train" / "0000.parquet", hf_table(flickr_rows(3), INT_LABEL))
    summary = prepare("vlmia", f"source={root}", "subset=img_Flickr_2k", "limit=2",
                      f"path.output_dir={tmp_path / 'o'}")
    assert summary["sets"]["members.json"]["count"] == summary["sets"]["nonmembers.json"]["count"] == 2


def test_vlmia_save_to_disk_class_labels(tmp_path: Path) -> None:
    """A DatasetDict written by `datasets`' save_to_disk, its ClassLabel index 1 = "member"."""
    import datasets

    rows = flickr_rows(3)
    features = datasets.Features({"image": datasets.Image(),
                                  "label": datasets.ClassLabel(names=["non_member", "member"])})
    table = {"image": [{"bytes": b, "path": p} for b, p, _ in rows], "label": [label for *_, label in rows]}
    folder = tmp_path / "img_Flickr_saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(table, features=features)}).save_to_disk(str(folder))
    out = tmp_path / "out"
    prepare("vlmia", f"source={folder}", f"path.output_dir={out}")
    members = read_entries(out / "members.json")
    assert len(members) == 3 and all(e["image"].endswith(".jpg") for e in members)  # index 1 = "member"
    assert all(e["image"].endswith(".png") for e in read_entries(out / "nonmembers.json"))


def test_vlmia_image_folders(tmp_path: Path) -> None:
    """Image-folder layouts: metadata.jsonl (file_name, label), and class folders inside a zip archive."""
    root = tmp_path / "VL-MIA-image"
    flickr = root / "flickr_2024"
    (flickr / "data").mkdir(parents=True)
    lines = []
    for i, (data, name, label) in enumerate(flickr_rows(2)):
        (flickr / "data" / name).write_bytes(data)
        lines.append(json.dumps({"file_name": f"data/{name}", "label": label}))
    (flickr / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    (root / "DALLE").mkdir()
    with zipfile.ZipFile(root / "DALLE" / "images.zip", "w") as archive:
        for data, name, label in flickr_rows(2, seed=7):
            archive.writestr(f"{'member' if label else 'non_member'}/{name}", data)
    summary = prepare("vlmia", f"source={root}", f"path.output_dir={tmp_path / 'flickr'}")
    assert summary["sets"]["members.json"]["count"] == 2 and summary["sets"]["nonmembers.json"]["count"] == 2
    out = tmp_path / "dalle"
    summary = prepare("vlmia", f"source={root}", "subset=img_dalle", f"path.output_dir={out}")
    assert summary["sets"]["members.json"]["formats"] == {"JPEG": 1.0}
    assert all((out / e["image"]).is_file() for e in read_entries(out / "nonmembers.json"))


def test_tune_accepts_prepared_lists(snapshot: Path, tmp_path: Path, world) -> None:
    out = tmp_path / "vlmia"
    prepare("vlmia", f"source={snapshot}", f"path.output_dir={out}")
    run("tune", [
        "target_model=llava-hf", f"target_model.model_path={world.model}",
        f"data.member_dataset={out / 'members.json'}", f"data.nonmember_dataset={out / 'nonmembers.json'}",
        "data.target_set_size=8", "data.reference_datasets_list=[]", "noise.std_sets=[[0.0,2.0]]",
        "img_metrics.parts=[img]", "img_metrics.metrics_to_use=[max_k_no_norn_kl_div]",
        "img_metrics.get_proc_meta_metrics=[max_k_no_norn_kl_div_tkn_vals]", "inference.batch_size=8",
        f"path.output_dir={tmp_path / 'tune'}",
    ])
    assert json.loads((tmp_path / "tune" / "optimal_std.json").read_text())["optimal_std"] in (0.0, 2.0)


@pytest.fixture()
def coco(tmp_path: Path) -> tuple[Path, Path]:
    """LLaVA-Instruct-150K's JSON and a COCO train2017 folder that lacks one of the images it names."""
    images = tmp_path / "coco" / "train2017"
    images.mkdir(parents=True)
    names = [f"0000000{i:05d}.jpg" for i in range(4)]
    for i, name in enumerate(names[:3]):
        (images / name).write_bytes(image_bytes(64, 48, i, "JPEG"))
    conversation = [{"from": "human", "value": "<image>\nWhat is shown?"},
                    {"from": "gpt", "value": "A scene."}]
    entries = [{"id": n[:-4], "image": n, "conversations": conversation} for n in names]
    entries += [{"id": "again", "image": names[0], "conversations": conversation},  # same image again
                {"id": "text", "conversations": conversation},                      # text-only
                {"id": "mix", "image": f"coco/train2017/{names[1]}", "conversations": conversation}]
    source = tmp_path / "LLaVA-Instruct-150K"
    source.mkdir()
    (source / "llava_instruct_150k.json").write_text(json.dumps(entries))
    (source / "detail_23k.json").write_text(json.dumps(entries[:1]))
    return source, images


def test_llava_instruct_members(coco: tuple[Path, Path], tmp_path: Path) -> None:
    source, images = coco
    out = tmp_path / "out"
    summary = prepare("llava-instruct", f"source={source}", f"images={images}", f"path.output_dir={out}")
    members = read_entries(out / "members.json")
    assert [Path(e["image"]).name for e in members] == [f"0000000{i:05d}.jpg" for i in range(3)]
    assert all(e["label"] == 1 and Path(e["image"]).parent == images.resolve() for e in members)  # in place
    assert not (out / "images" / "members").exists()
    run_ = summary["runs"]["llava-instruct"]
    assert run_["missing"] == {"count": 1, "first": ["000000000003.jpg"]} and run_["without_image"] == 1
    assert summary["sets"]["members.json"]["duplicates"] == 2 and summary["comparisons"] == []
    copied = tmp_path / "copied"
    prepare("llava-instruct", f"source={source}", "subset=detail_23k", f"images={images}", "copy_images=true",
            f"path.output_dir={copied}")
    [entry] = read_entries(copied / "members.json")
    assert entry["image"].startswith("images/members/") and (copied / entry["image"]).is_file()


def test_sharegpt4o_reference_from_zip_beside_members(coco: tuple[Path, Path], tmp_path: Path) -> None:
    """ShareGPT-4o: image_conversations/gpt-4o.jsonl + images.zip (images deep inside); prepared into the
    folder that holds COCO members, the summary compares the two lists and warns about their sizes."""
    repo = tmp_path / "ShareGPT-4o"
    (repo / "image_conversations").mkdir(parents=True)
    lines = [json.dumps({"id": str(i), "image": f"{i}.jpg", "conversations": []}) for i in range(3)]
    (repo / "image_conversations" / "gpt-4o.jsonl").write_text("\n".join(lines) + "\n")
    with zipfile.ZipFile(repo / "images.zip", "w") as archive:
        for i in range(3):
            archive.writestr(f"mnt/petrelfs/wangwenhai/workspace_cef/4o/image/{i}.jpg",
                             image_bytes(160, 120, 20 + i, "JPEG"))
    source, images = coco
    out = tmp_path / "coco_vs_4o"
    prepare("llava-instruct", f"source={source}", f"images={images}", f"path.output_dir={out}")
    summary = prepare("sharegpt4o", f"source={repo}", f"path.output_dir={out}")
    reference = read_entries(out / "reference.json")
    assert len(reference) == 3 and {e["label"] for e in reference} == {0}
    assert all((out / e["image"]).is_file() for e in reference)
    assert set(summary["sets"]) == {"members.json", "reference.json"} and set(summary["runs"]) == {
        "llava-instruct", "sharegpt4o"}
    [comparison] = summary["comparisons"]
    assert comparison["nonmembers"] == "reference.json" and "160x120" in comparison["warning"]
    assert len(read_list(out / "reference.json", "reference set")) == 3


def bad_inputs(tmp: Path) -> dict[str, tuple[list[str], str]]:
    """Malformed inputs -> (arguments after `prepare`, a phrase the one-line error must hold)."""
    empty = tmp / "empty"
    empty.mkdir()
    write_parquet(tmp / "noimage" / "img_Flickr" / "0.parquet", pa.table({"picture": [b"x"], "label": [1]}))
    bad_label = hf_table([(image_bytes(8, 8, 0, "PNG"), "a.png", 2)], INT_LABEL)
    write_parquet(tmp / "badlabel" / "img_Flickr" / "0.parquet", bad_label)
    (tmp / "dict.json").write_text(json.dumps({"image": "a.jpg"}))
    (tmp / "strings.json").write_text(json.dumps(["a.jpg"]))
    (tmp / "absent.json").write_text(json.dumps([{"image": "gone.jpg"}]))
    return {
        "unknown name": (["vlmai", f"source={empty}"], "Did you mean 'vlmia'?"),
        "no name": ([f"source={empty}"], "name the dataset to prepare"),
        "missing source": (["vlmia", f"source={tmp / 'nowhere'}"], "does not exist"),
        "no files": (["vlmia", f"source={empty}"], "found no Parquet or Arrow files"),
        "no image column": (["vlmia", f"source={tmp / 'noimage'}"], "has no image column 'image'"),
        "label not 0/1": (["vlmia", f"source={tmp / 'badlabel'}"], "label 2 is not 1 (member) or 0"),
        "unknown subset": (["vlmia", f"source={empty}", "subset=img_flickr"], "Did you mean 'img_Flickr'?"),
        "json not a list": (["sharegpt4o", f"source={tmp / 'dict.json'}"], "must be a list"),
        "json of strings": (["sharegpt4o", f"source={tmp / 'strings.json'}"], "expected an object"),
        "no image found": (["llava-instruct", f"source={tmp / 'absent.json'}", f"images={empty}"],
                           "none of the images"),
        "images not given": (["llava-instruct", f"source={tmp / 'absent.json'}"], "needs images=DIR"),
        "bad limit": (["vlmia", f"source={empty}", "limit=0"], "limit=0 must be at least 1"),
    }


def test_malformed_inputs_give_one_line(tmp_path: Path, capsys) -> None:
    for case, (args, phrase) in bad_inputs(tmp_path).items():
        out = tmp_path / "out"
        assert main(["prepare", *args, f"path.output_dir={out}"]) == 2, case
        err = capsys.readouterr().err.split("\r")[-1].strip()  # after the (cleared) progress bar
        assert err.startswith("logan: error:") and "\n" not in err and phrase in err, (case, err)
        assert not (out / "members.json").exists() and not (out / "images").exists(), case
