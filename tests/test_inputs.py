"""Inputs a researcher could hand over: each works with its real content or is refused in one line before
any work (README: "Inputs LOGAN accepts or refuses"). Every file here is made by the test."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import shutil
import struct
import subprocess
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image, ImageCms
from safetensors.torch import save_file

from logan.cli import main
from logan.config import DataConfig, ModelConfig, RunConfig
from logan.data.images import check_image, load_image, read_bytes, to_rgb
from logan.data.sets import build_reference, build_target, read_list
from logan.errors import LoganError
from logan.models.checkpoint_files import check_checkpoint_files
from logan.report.blind import blind_baseline, image_features
from logan.report.evaluate import estimable_only

RNG = np.random.default_rng(0)
PIXELS = RNG.integers(0, 256, (6, 8, 3), dtype=np.uint8)  # H x W x RGB, every value once in a while
GREY = RNG.integers(0, 256, (6, 8), dtype=np.uint8)


def _saved(img: Image.Image, path: Path, fmt: str, **kw) -> Path:
    img.save(path, fmt, **kw)
    return path


def _grey3(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, -1)


def _on_white(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None].astype(np.float64) / 255
    return rgb * a + 255 * (1 - a)


# ------------------------------------------------------------------ image modes that load with their content
# name -> (write the file, the RGB array it must load as, the largest allowed difference)

def _rgb_png(t: Path):
    return _saved(Image.fromarray(PIXELS), t / "a.png", "PNG"), PIXELS, 0


def _jpeg(t: Path):
    path = _saved(Image.fromarray(PIXELS), t / "a.jpg", "JPEG", quality=95)
    return path, np.asarray(Image.open(path).convert("RGB")), 0


def _webp_lossless(t: Path):
    return _saved(Image.fromarray(PIXELS), t / "a.webp", "WEBP", lossless=True), PIXELS, 0


def _bmp(t: Path):
    return _saved(Image.fromarray(PIXELS), t / "a.bmp", "BMP"), PIXELS, 0


def _i16_png(t: Path):
    """An 8-bit picture saved at 16 bits (v * 257) loads back exactly; convert("RGB") made it all white."""
    img = Image.frombytes("I;16", GREY.shape[::-1], (GREY.astype("<u2") * 257).tobytes())
    return _saved(img, t / "a16.png", "PNG"), _grey3(GREY), 0


def _i16_png_full_range(t: Path):
    values = RNG.integers(0, 65536, GREY.shape).astype("<u2")
    img = Image.frombytes("I;16", GREY.shape[::-1], values.tobytes())
    return _saved(img, t / "b16.png", "PNG"), _grey3(np.rint(values / 257.0)), 0


def _i16b_tiff(t: Path):
    img = Image.frombytes("I;16B", GREY.shape[::-1], (GREY.astype(">u2") * 257).tobytes())
    path = _saved(img, t / "a16b.tif", "TIFF")
    assert Image.open(path).mode == "I;16B"
    return path, _grey3(GREY), 0


def _i32_tiff_16bit_values(t: Path):
    path = _saved(Image.fromarray(GREY.astype(np.int32) * 257), t / "i32.tif", "TIFF")
    assert Image.open(path).mode == "I"
    return path, _grey3(GREY), 0


def _pgm_16bit(t: Path):
    header = f"P5\n{GREY.shape[1]} {GREY.shape[0]}\n65535\n".encode()
    path = t / "a.pgm"
    path.write_bytes(header + (GREY.astype(">u2") * 257).tobytes())
    return path, _grey3(GREY), 0


def _float_tiff(t: Path):
    path = _saved(Image.fromarray(GREY.astype(np.float32) / 255), t / "f.tif", "TIFF")
    assert Image.open(path).mode == "F"
    return path, _grey3(GREY), 0


def _bilevel_png(t: Path):
    bits = GREY > 127
    return _saved(Image.fromarray(bits), t / "bits.png", "PNG"), _grey3(bits.astype(np.uint8) * 255), 0


def _grey_png(t: Path):
    return _saved(Image.fromarray(GREY), t / "grey.png", "PNG"), _grey3(GREY), 0


def _grey_alpha_png(t: Path):
    alpha = RNG.integers(0, 256, GREY.shape, dtype=np.uint8)
    img = Image.fromarray(np.stack([GREY, alpha], -1), "LA")
    return _saved(img, t / "la.png", "PNG"), _on_white(_grey3(GREY), alpha), 1


def _palette_png(t: Path):
    img = Image.fromarray(PIXELS).quantize(16)
    return _saved(img, t / "p.png", "PNG"), np.asarray(img.convert("RGB")), 0


def _palette_transparent_png(t: Path):
    img = Image.fromarray(PIXELS).quantize(16)
    img.info["transparency"] = 0
    path = _saved(img, t / "pt.png", "PNG", transparency=0)
    want = np.asarray(img.convert("RGB")).copy()
    want[np.asarray(img) == 0] = 255
    return path, want, 0


def _palette_transparent_gif(t: Path):
    img = Image.fromarray(PIXELS).quantize(16)
    path = _saved(img, t / "pt.gif", "GIF", transparency=0)
    want = np.asarray(img.convert("RGB")).copy()
    want[np.asarray(img) == 0] = 255
    return path, want, 0


def _rgba_png(t: Path):
    alpha = np.tile(np.array([0, 255, 128, 64], dtype=np.uint8), (6, 2))
    stored = PIXELS.copy()
    stored[alpha == 0] = 0  # what encoders often leave under transparent pixels
    img = Image.fromarray(np.dstack([stored, alpha]), "RGBA")
    return _saved(img, t / "rgba.png", "PNG"), _on_white(stored, alpha), 1


def _cmyk_tiff(t: Path):
    cmyk = np.zeros((2, 3, 4), dtype=np.uint8)
    cmyk[0, 0, 0] = 255  # pure cyan
    cmyk[0, 1, 3] = 255  # black
    path = _saved(Image.fromarray(cmyk, "CMYK"), t / "cmyk.tif", "TIFF")
    want = np.full((2, 3, 3), 255, dtype=np.uint8)
    want[0, 0] = (0, 255, 255)
    want[0, 1] = (0, 0, 0)
    return path, want, 0


def _cmyk_jpeg(t: Path):
    path = _saved(Image.fromarray(PIXELS).convert("CMYK"), t / "cmyk.jpg", "JPEG", quality=100)
    assert Image.open(path).mode == "CMYK"
    return path, PIXELS, 40  # JPEG's loss on random pixels; the content is the same picture


def _ycbcr_tiff(t: Path):
    return _saved(Image.fromarray(PIXELS).convert("YCbCr"), t / "ycc.tif", "TIFF"), PIXELS, 3


def _lab_tiff(t: Path):
    to_lab = ImageCms.buildTransform(ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"), "RGB", "LAB")
    lab = ImageCms.applyTransform(Image.fromarray(PIXELS), to_lab)
    path = _saved(lab, t / "lab.tif", "TIFF")
    assert Image.open(path).mode == "LAB"
    to_rgb_ = ImageCms.buildTransform(ImageCms.createProfile("LAB"), ImageCms.createProfile("sRGB"), "LAB", "RGB")
    managed = np.asarray(ImageCms.applyTransform(Image.open(path), to_rgb_))  # colour-managed CIELAB -> sRGB
    assert np.abs(managed.astype(int) - PIXELS).max() <= 20  # the same picture, up to 8-bit CIELAB rounding
    return path, managed, 0


def _animated_gif(t: Path):
    frames = [Image.fromarray(np.full((6, 8, 3), v, dtype=np.uint8)) for v in (30, 120, 220)]
    path = _saved(frames[0], t / "anim.gif", "GIF", save_all=True, append_images=frames[1:])
    return path, np.full((6, 8, 3), 30, dtype=np.uint8), 0


def _multipage_tiff(t: Path):
    pages = [Image.fromarray(PIXELS), Image.fromarray(255 - PIXELS)]
    path = _saved(pages[0], t / "pages.tif", "TIFF", save_all=True, append_images=pages[1:])
    return path, PIXELS, 0


def _exif_rotated_jpeg(t: Path):
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees to display"
    path = _saved(Image.fromarray(PIXELS), t / "exif.jpg", "JPEG", quality=95, exif=exif)
    return path, np.asarray(Image.open(path).convert("RGB")), 0  # as stored: 6 x 8, not 8 x 6


def _icc_profile_png(t: Path):
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return _saved(Image.fromarray(PIXELS), t / "icc.png", "PNG", icc_profile=profile), PIXELS, 0


def _one_pixel_png(t: Path):
    return _saved(Image.fromarray(PIXELS[:1, :1]), t / "one.png", "PNG"), PIXELS[:1, :1], 0


LOADS: dict[str, Callable[[Path], tuple[Path, np.ndarray, int]]] = {
    "8-bit RGB PNG": _rgb_png, "JPEG": _jpeg, "WebP (lossless)": _webp_lossless, "BMP": _bmp,
    "16-bit grey PNG (I;16), 8-bit content": _i16_png, "16-bit grey PNG (I;16), full range": _i16_png_full_range,
    "16-bit big-endian TIFF (I;16B)": _i16b_tiff, "32-bit integer TIFF holding 0-65535 (I)": _i32_tiff_16bit_values,
    "16-bit PGM (read as I)": _pgm_16bit, "float TIFF in [0, 1] (F)": _float_tiff, "1-bit PNG (1)": _bilevel_png,
    "grey PNG (L)": _grey_png, "grey + alpha PNG (LA)": _grey_alpha_png, "palette PNG (P)": _palette_png,
    "palette PNG with a transparent index": _palette_transparent_png,
    "palette GIF with a transparent index": _palette_transparent_gif, "RGBA PNG": _rgba_png,
    "CMYK TIFF": _cmyk_tiff, "CMYK JPEG": _cmyk_jpeg, "YCbCr TIFF": _ycbcr_tiff, "CIELAB TIFF (LAB)": _lab_tiff,
    "animated GIF": _animated_gif, "multi-page TIFF": _multipage_tiff, "EXIF-rotated JPEG": _exif_rotated_jpeg,
    "PNG with an ICC profile": _icc_profile_png, "1 x 1 pixel PNG": _one_pixel_png,
}


@pytest.mark.parametrize("case", list(LOADS))
def test_every_image_mode_loads_with_its_content(tmp_path: Path, case: str) -> None:
    path, want, tolerance = LOADS[case](tmp_path)
    facts = check_image(path.read_bytes(), f"{path} (entry 0 of the member samples)")  # the up-front check decodes it the same way
    pixels, key = load_image(path)
    assert pixels.dtype == np.uint8 and pixels.shape == (*want.shape[:2], 3)
    assert np.abs(pixels.astype(int) - np.rint(want).astype(int)).max() <= tolerance
    assert key == load_image(path)[1]  # the noise stays seeded by the file's bytes
    assert facts.frames == (3 if case == "animated GIF" else 2 if case == "multi-page TIFF" else 1)
    assert facts.rotated == (case == "EXIF-rotated JPEG")


def test_sixteen_bit_png_was_white_under_convert_rgb(tmp_path: Path) -> None:
    """The bug this loader fixes: PIL's convert("RGB") clips 16-bit grey to white."""
    path, want, _ = _i16_png(tmp_path)
    assert (np.asarray(Image.open(path).convert("RGB")) == 255).mean() > 0.9
    assert np.array_equal(load_image(path)[0], want)
    assert (load_image(path)[0] == 255).mean() < 0.1


def test_hsv_in_memory_converts(tmp_path: Path) -> None:
    """PIL cannot write HSV files; an HSV image handed over in memory converts to its RGB picture."""
    hsv = Image.fromarray(PIXELS).convert("HSV")
    assert np.abs(to_rgb(hsv).astype(int) - PIXELS).max() <= 8


@pytest.mark.parametrize("mode", ["La", "RGBa", "PA", "RGBX", "I;16L", "I;16N"])
def test_rarer_in_memory_modes_convert(mode: str) -> None:
    img = Image.new(mode, (3, 2))
    rgb = to_rgb(img)
    assert rgb.shape == (2, 3, 3) and rgb.dtype == np.uint8


# ------------------------------------------------------------------ image files that are refused, in one line

def _write(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(t: Path) -> Path:
        (t / name).write_bytes(data)
        return t / name
    return make


def _cut(fmt: str, name: str) -> Callable[[Path], Path]:
    def make(t: Path) -> Path:
        buffer = io.BytesIO()
        Image.fromarray(RNG.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, fmt)
        (t / name).write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
        return t / name
    return make


def _zero_width_png(t: Path) -> Path:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 0, 4, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    (t / "zero.png").write_bytes(png)
    return t / "zero.png"


def _tiff_of(array: np.ndarray, name: str) -> Callable[[Path], Path]:
    return lambda t: _saved(Image.fromarray(array), t / name, "TIFF")


def _directory(t: Path) -> Path:
    (t / "folder.png").mkdir()
    return t / "folder.png"


REFUSED: dict[str, tuple[Callable[[Path], Path], str]] = {
    "zero-byte file": (_write("empty.png", b""), "not an image PIL can read"),
    "zero-width PNG": (_zero_width_png, "not an image PIL can read"),
    "truncated PNG": (_cut("PNG", "cut.png"), "unreadable or corrupt"),
    "truncated JPEG (verify() let it through before)": (_cut("JPEG", "cut.jpg"), "unreadable or corrupt"),
    "text file named .png": (_write("text.png", b"hello, not an image\n" * 4), "not an image PIL can read"),
    "SVG": (_write("a.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"/>'),
            "not an image PIL can read"),
    "32-bit integer TIFF outside 0-65535 (I)": (_tiff_of(np.array([[0, 100_000]], np.int32), "big.tif"),
                                                "outside the 16-bit range"),
    "negative 32-bit integer TIFF (I)": (_tiff_of(np.array([[-5, 10]], np.int32), "neg.tif"), "outside the 16-bit"),
    "float TIFF outside [0, 1] (F)": (_tiff_of(np.array([[0.0, 200.0]], np.float32), "f255.tif"),
                                      "outside [0, 1]"),
    "float TIFF with NaN (F)": (_tiff_of(np.array([[0.0, np.nan]], np.float32), "nan.tif"), "NaN or infinity"),
    "missing file": (lambda t: t / "nowhere.png", "image file not found"),
    "a folder instead of a file": (_directory, "image file not found"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_unreadable_images_are_refused_in_one_line(tmp_path: Path, case: str) -> None:
    make, message = REFUSED[case]
    path = make(tmp_path)
    with pytest.raises(LoganError, match=re.escape(message)) as error:  # as the up-front check reads an entry
        check_image(read_bytes(path, "entry 4 of the member samples"), f"{path} (entry 4 of the member samples)")
    assert "\n" not in str(error.value) and str(path) in str(error.value) and "entry 4" in str(error.value)
    with pytest.raises(LoganError, match=re.escape(message)):
        load_image(path)


@pytest.mark.parametrize("limit", [300, 100])  # above PIL's limit: its warning range, and its error range (2x)
def test_images_above_the_decompression_bomb_limit_are_refused(tmp_path: Path, monkeypatch, limit: int) -> None:
    path = _saved(Image.fromarray(RNG.integers(0, 256, (20, 20, 3), dtype=np.uint8)), tmp_path / "big.png", "PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    warns = pytest.warns(Image.DecompressionBombWarning) if limit == 300 else contextlib.nullcontext()
    with warns, pytest.raises(LoganError, match="decompression-bomb") as error:
        check_image(path.read_bytes(), f"{path} (entry 0 of the member samples)")
    assert "MAX_IMAGE_PIXELS" in str(error.value)


def test_blind_baseline_reads_pixels_through_the_same_loader(tmp_path: Path) -> None:
    """A 16-bit PNG and its 8-bit twin give the model-free classifier the same features (it used to see the
    16-bit one as white)."""
    sixteen, _, _ = _i16_png(tmp_path)
    eight = _saved(Image.fromarray(GREY), tmp_path / "eight.png", "PNG")
    assert np.allclose(image_features(sixteen.read_bytes()), image_features(eight.read_bytes()))


# ------------------------------------------------------------------ a tune over odd images, end to end

@pytest.fixture(scope="module")
def odd_world(world, tmp_path_factory) -> tuple[Path, list[str]]:
    """The world's members with four images re-saved as 16-bit grey, RGBA, an animated GIF and an
    EXIF-rotated JPEG."""
    folder = tmp_path_factory.mktemp("odd")
    entries = json.loads(world.members.read_text())
    for entry, kind in zip(entries, ("i16", "rgba", "gif", "exif")):
        rgb = np.asarray(Image.open(entry["image"]).convert("RGB"))
        if kind == "i16":
            grey = rgb.mean(-1).astype("<u2") * 257
            path = _saved(Image.frombytes("I;16", grey.shape[::-1], grey.tobytes()), folder / "m16.png", "PNG")
        elif kind == "rgba":
            alpha = np.full(rgb.shape[:2], 200, dtype=np.uint8)
            path = _saved(Image.fromarray(np.dstack([rgb, alpha]), "RGBA"), folder / "rgba.png", "PNG")
        elif kind == "gif":
            frames = [Image.fromarray(rgb), Image.fromarray(255 - rgb)]
            path = _saved(frames[0], folder / "anim.gif", "GIF", save_all=True, append_images=frames[1:])
        else:
            exif = Image.Exif()
            exif[0x0112] = 8
            path = _saved(Image.fromarray(rgb), folder / "exif.jpg", "JPEG", exif=exif)
        entry["image"] = str(path)
    members = folder / "members.json"
    members.write_text(json.dumps(entries))
    return members, [e["image"] for e in entries[:4]]


SMALL = ["img_metrics.parts=[img]", "noise.std_sets=[[0.0,2.0]]", "data.target_set_size=24",
         "img_metrics.metrics_to_use=[max_k_no_norn_kl_div]",
         "img_metrics.get_proc_meta_metrics=[max_k_no_norn_kl_div_tkn_vals]"]


def _args(world, out: Path, *extra: str) -> list[str]:
    keys = {e.split("=")[0] for e in extra}
    return [a for a in world.overrides(out, *SMALL) if a.split("=")[0] not in keys] + list(extra)


def test_odd_images_run_end_to_end_and_are_reported_once(world, odd_world, tmp_path: Path, caplog) -> None:
    members, odd = odd_world
    out = tmp_path / "tune"
    with caplog.at_level(logging.INFO):
        assert main(["tune", *_args(world, out, f"data.member_dataset={members}")]) == 0
    target = pd.read_parquet(out / "datasets" / "target_dataset.parquet")
    assert set(odd) <= set(target.path)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("several frames" in w for w in warnings) == 1 and any("anim.gif" in w for w in warnings)
    assert sum("EXIF rotation" in w for w in warnings) == 1 and any("exif.jpg" in w for w in warnings)
    # select says that std 0 is never a candidate, in the log and in optimal_std.json
    optimal = json.loads((out / "optimal_std.json").read_text())
    assert optimal["optimal_std"] == 2.0
    assert optimal["excluded"] == [{"std": 0.0, "why": "std 0 adds no noise: every divergence is 0 there"}]
    assert any("std 0 is not a candidate" in r.getMessage() for r in caplog.records)


# ------------------------------------------------------------------ bad input stops before any work

@pytest.fixture
def no_model(monkeypatch):
    """Fail the test if a run gets as far as loading the model."""
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the bad input was found")
    monkeypatch.setattr("logan.pipeline.common.load_model", refuse)


def _stopped(args: list[str], out: Path, capsys, message: str) -> str:
    code = main(args)
    err = capsys.readouterr().err
    assert code == 2, err
    assert message in err, err
    assert len([line for line in err.splitlines() if line.startswith("logan: error")]) == 1
    assert "Traceback" not in err
    assert not out.exists()
    return err


def _truncated_image(world, t: Path) -> list[str]:
    entries = json.loads(world.members.read_text())
    _cut("JPEG", "cut.jpg")(t)
    entries[7]["image"] = str(t / "cut.jpg")
    (t / "m.json").write_text(json.dumps(entries))
    return [f"data.member_dataset={t / 'm.json'}"]


def _in_both_lists_unsampled(world, t: Path) -> list[str]:
    members, nonmembers = (json.loads(p.read_text()) for p in (world.members, world.nonmembers))
    nonmembers.append({**members[-1], "label": 0})
    (t / "n.json").write_text(json.dumps(nonmembers))
    return [f"data.nonmember_dataset={t / 'n.json'}", "data.target_set_size=4"]


def _a_member_without_caption(world, t: Path) -> list[str]:
    entries = json.loads(world.members.read_text())
    del entries[5]["caption"]
    (t / "m.json").write_text(json.dumps(entries))
    return [f"data.member_dataset={t / 'm.json'}", "img_metrics.parts=[img,caption]"]


BEFORE_ANY_WORK: dict[str, tuple[Callable[..., list[str]], str]] = {
    "noise.std_sets=[]": (lambda w, t: ["noise.std_sets=[]"], "noise.std_sets=[] holds no std value"),
    "noise.std_sets=[[]]": (lambda w, t: ["noise.std_sets=[[]]"], "holds no std value"),
    "noise.std_sets of std 0 only": (lambda w, t: ["noise.std_sets=[[0.0]]"], "holds only std 0"),
    "noise.std_sets not a list of lists": (lambda w, t: ["noise.std_sets=[1.0]"], "noise.std_sets"),
    "tune with only std-independent metrics": (
        lambda w, t: ["img_metrics.metrics_to_use=[ppl,mink]",
                      "img_metrics.get_proc_meta_metrics=[ppl_tkn_vals,mink_tkn_vals]"],
        "holds no metric that depends on the noise"),
    "selection.metric std-independent": (
        lambda w, t: ["img_metrics.metrics_to_use=[max_k_no_norn_kl_div,ppl]", "selection.metric=ppl",
                      "img_metrics.get_proc_meta_metrics=[max_k_no_norn_kl_div_tkn_vals,ppl_tkn_vals]"],
        "selection.metric=ppl does not depend on the noise"),
    "selection.metric not in the run": (lambda w, t: ["selection.metric=max_k_renyi_05_kl_div"],
                                        "is not in img_metrics.metrics_to_use"),
    "selection.part not in the run": (lambda w, t: ["selection.part=caption"], "selection.part=caption is not in"),
    "selection.k not a ratio": (lambda w, t: ["selection.k=0.33"], "selection.k=0.33 is not one of img_metrics.ratio"),
    "img_metrics.ratio=[]": (lambda w, t: ["img_metrics.ratio=[]"], "img_metrics.ratio is empty"),
    "negative seed": (lambda w, t: ["seed=-1"], "seed=-1 must be a non-negative integer"),
    "num_gen_tokens=0 with desp": (lambda w, t: ["img_metrics.parts=[img,desp]", "generation.num_gen_tokens=0"],
                                   "need a description of at least 1 token"),
    "reference_set_size=0": (lambda w, t: [f"data.reference_datasets_list=[{w.reference}]",
                                           "data.reference_set_size=0"], "data.reference_set_size=0 must be"),
    "a truncated image in a list": (_truncated_image, "cut.jpg (entry 7 of the member samples) is unreadable"),
    "an image in both lists (not sampled)": (_in_both_lists_unsampled, "both member and non-member"),
    "output folder is a file": (lambda w, t: [f"path.output_dir={_a_file(t) / 'run'}"], "is a file"),
    "the caption part with an entry lacking a caption": (_a_member_without_caption, "has no caption"),
}


def _a_file(t: Path) -> Path:
    (t / "file").write_text("x")
    return t / "file"


@pytest.mark.parametrize("case", list(BEFORE_ANY_WORK))
def test_bad_input_stops_before_the_model_loads(world, tmp_path: Path, capsys, no_model, case: str) -> None:
    make, message = BEFORE_ANY_WORK[case]
    extra = make(world, tmp_path)
    args = _args(world, tmp_path / "out", *extra)
    out = Path(next(a for a in args if a.startswith("path.output_dir=")).split("=", 1)[1])
    _stopped(["tune", *args], out, capsys, message)


CLASSIFY_BEFORE_ANY_WORK = {
    "classify at std 0": (["noise.std=0"], "noise.std holds 0, which adds no noise"),
    "classify at std [0, 2]": (["noise.std=[0.0,2.0]"], "noise.std holds 0"),
    "classify at a negative std": (["noise.std=-1"], "a noise std must be a finite number >= 0"),
    "classify with both std keys": (["noise.std=2.0", "data.augmentations.GaussianNoise.std=[4.0]"],
                                    "give one of them"),
    "classify with selection.k not a ratio": (["noise.std=2.0", "selection.k=0.25"], "selection.k=0.25 is not one"),
}


@pytest.mark.parametrize("case", list(CLASSIFY_BEFORE_ANY_WORK))
def test_bad_classify_input_stops_before_the_model_loads(world, tmp_path: Path, capsys, no_model, case: str) -> None:
    extra, message = CLASSIFY_BEFORE_ANY_WORK[case]
    out = tmp_path / "out"
    args = [a for a in _args(world, out) if not a.startswith("noise.std_sets")] + extra
    _stopped(["classify", *args], out, capsys, message)


def test_repeated_parts_metrics_and_ratios_are_used_once() -> None:
    cfg = RunConfig.from_dict({"img_metrics": {"parts": ["img", "inst", "img"], "ratio": [1.0, 0.5, 1.0],
                                               "metrics_to_use": ["ppl", "mink", "ppl"]}})
    assert cfg.img_metrics.parts == ["img", "inst"] and cfg.img_metrics.ratio == [1.0, 0.5]
    assert cfg.img_metrics.metrics_to_use == ["ppl", "mink"]


def test_classify_takes_the_originals_std_key(world, tmp_path: Path) -> None:
    """The original's evaluation read its std from data.augmentations.GaussianNoise.std: so does classify."""
    out = tmp_path / "classify"
    args = [a for a in _args(world, out, "data.target_set_size=8") if not a.startswith("noise.std_sets")]
    assert main(["classify", *args, "data.augmentations.GaussianNoise.std=[2.0]"]) == 0
    assert {r["std"] for r in json.loads((out / "metrics.json").read_text())} == {2.0}


def test_read_only_output_folder_is_one_line(world, tmp_path: Path) -> None:
    """A real read-only mount (a user namespace), as root cannot be refused by file modes."""
    ro = tmp_path / "ro"
    ro.mkdir()
    if subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True,
                      check=False).returncode:
        pytest.skip("no user namespaces here to mount a read-only folder")
    args = " ".join(f"'{a}'" for a in _args(world, ro / "run"))
    script = f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro} && logan tune {args}"
    result = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                            capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("logan: error")]
    assert len(errors) == 1 and "is read-only" in errors[0] and "Traceback" not in result.stderr
    assert not list(ro.iterdir())


# ------------------------------------------------------------------ checkpoint files

def _tensors() -> dict[str, torch.Tensor]:
    return {"a.weight": torch.arange(12, dtype=torch.float32).reshape(3, 4), "b.bias": torch.ones(5)}


def _cut_file(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _safetensors(t: Path, damage: Callable[[Path], None] | None = None) -> Path:
    (t / "m").mkdir()
    save_file(_tensors(), t / "m" / "model.safetensors")
    if damage:
        damage(t / "m" / "model.safetensors")
    return t / "m"


def _torch_file(t: Path, damage: Callable[[Path], None] | None = None, legacy: bool = False) -> Path:
    torch.save(_tensors(), t / "w.pth", _use_new_zipfile_serialization=not legacy)
    if damage:
        damage(t / "w.pth")
    return t / "w.pth"


def _index_naming_a_missing_shard(t: Path) -> Path:
    folder = _safetensors(t)
    (folder / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a.weight": "model.safetensors", "b.bias": "model-00002-of-00002.safetensors"}}))
    return folder


CHECKPOINTS: dict[str, tuple[Callable[[Path], Path], str | None]] = {
    "complete safetensors": (lambda t: _safetensors(t), None),
    "empty safetensors": (lambda t: _safetensors(t, lambda p: p.write_bytes(b"")), "is empty"),
    "safetensors cut inside its header": (lambda t: _safetensors(t, lambda p: _cut_file(p, 40)), "is truncated"),
    "safetensors cut inside its data": (lambda t: _safetensors(t, lambda p: _cut_file(p, p.stat().st_size - 9)),
                                        "is truncated"),
    "safetensors with bytes after its data": (
        lambda t: _safetensors(t, lambda p: p.write_bytes(p.read_bytes() + b"xx")), "bytes after its last tensor"),
    "safetensors with a garbled header": (
        lambda t: _safetensors(t, lambda p: p.write_bytes(p.read_bytes()[:8] + b"!" + p.read_bytes()[9:])),
        "corrupt safetensors header"),
    "weight index naming a missing shard": (_index_naming_a_missing_shard, "model-00002-of-00002.safetensors"),
    "complete torch zip (.pth)": (lambda t: _torch_file(t), None),
    "legacy torch pickle (.pth)": (lambda t: _torch_file(t, legacy=True), None),
    "truncated torch zip (.pth)": (lambda t: _torch_file(t, lambda p: _cut_file(p, p.stat().st_size // 2)),
                                   "is truncated or corrupt"),
    "empty .pth": (lambda t: _torch_file(t, lambda p: p.write_bytes(b"")), "is empty"),
    "HTML error page saved as .pth": (lambda t: _torch_file(t, lambda p: p.write_bytes(b"<html>404</html>")),
                                      "neither a zip archive"),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_checkpoint_files_are_checked_by_their_headers(tmp_path: Path, case: str) -> None:
    make, message = CHECKPOINTS[case]
    path = make(tmp_path)
    cfg = ModelConfig(model_path=str(path)) if path.is_dir() else ModelConfig(ckpt=str(path))
    if message is None:
        check_checkpoint_files(cfg)
        return
    with pytest.raises(LoganError, match=re.escape(message)) as error:
        check_checkpoint_files(cfg)
    assert "\n" not in str(error.value) and str(path if path.is_file() else path / "model") in str(error.value)


@pytest.mark.parametrize("damage", ["truncated", "empty", "corrupt .bin"])
def test_a_damaged_checkpoint_stops_the_run_in_one_line(world, tmp_path: Path, capsys, damage: str) -> None:
    model = tmp_path / "model"
    shutil.copytree(world.model, model)
    weights = model / "model.safetensors"
    if damage == "truncated":
        _cut_file(weights, weights.stat().st_size // 3)
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.unlink()
        (model / "pytorch_model.bin").write_bytes(RNG.integers(0, 256, 4096, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    err = _stopped(["tune", *_args(world, out, f"target_model.model_path={model}")], out, capsys, "checkpoint file")
    assert str(model / ("pytorch_model.bin" if damage == "corrupt .bin" else "model.safetensors")) in err


# ------------------------------------------------------------------ lists: shapes, labels, overlaps

def _images(t: Path, n: int, prefix: str = "x") -> list[str]:
    paths = []
    for i in range(n):
        path = t / f"{prefix}{i}.png"
        pixels = np.random.default_rng([i, *prefix.encode()]).integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)  # distinct content: an image's identity is its bytes
        paths.append(str(path))
    return paths


def _list(t: Path, name: str, entries) -> Path:
    (t / name).write_text(entries if isinstance(entries, str) else json.dumps(entries))
    return t / name


LIST_REFUSED = {
    "a nested list": ([[{"image": "a.png", "label": 1}]], "expected an object with 'image' and 'label'"),
    "image is null": ([{"image": None, "label": 1}], "'image' must be the path of an image file"),
    "image is empty text": ([{"image": " ", "label": 1}], "'image' must be the path of an image file"),
    "image is a number": ([{"image": 17, "label": 1}], "'image' must be the path"),
    "image stored as bytes in a dict": ([{"image": {"bytes": "..."}, "label": 1}], "convert it with 'logan prepare'"),
    "caption is a list": ([{"image": "a.png", "label": 1, "caption": ["a", "b"]}], "'caption' must be text"),
    "label 'member'": ([{"image": "a.png", "label": "member"}], "is not 1 (member) or 0 (non-member)"),
    "JSON Lines": ('{"image": "a.png", "label": 1}\n{"image": "b.png", "label": 1}\n', "looks like JSON Lines"),
}


@pytest.mark.parametrize("case", list(LIST_REFUSED))
def test_list_shapes_that_are_refused(tmp_path: Path, case: str) -> None:
    entries, message = LIST_REFUSED[case]
    with pytest.raises(LoganError, match=re.escape(message)) as error:
        read_list(_list(tmp_path, "l.json", entries), "data.member_dataset")
    assert "\n" not in str(error.value)


def test_a_byte_order_mark_is_not_content(tmp_path: Path) -> None:
    (image,) = _images(tmp_path, 1)
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps([{"image": image, "label": 1}]).encode())
    assert read_list(path, "x").image.tolist() == [image]


def test_one_image_with_both_labels_in_one_list_is_refused(tmp_path: Path) -> None:
    a, b = _images(tmp_path, 2)
    entries = [{"image": a, "label": 1}, {"image": b, "label": 0}, {"image": a, "label": 0}]
    with pytest.raises(LoganError, match=r"labels 1 image both member \(1\) and non-member \(0\)"):
        read_list(_list(tmp_path, "d.json", entries), "data.dataset")


@pytest.mark.parametrize("times,n,words", [((2,), 1, "1 image twice"), ((2, 2), 2, "2 images twice"),
                                           ((3, 2), 2, "2 images more than once")])
def test_duplicates_are_counted_in_good_grammar(tmp_path: Path, caplog, times, n, words) -> None:
    images = _images(tmp_path, len(times) + 1)
    entries = [{"image": img, "label": 1} for img, k in zip(images, (*times, 1)) for _ in range(k)]
    with caplog.at_level(logging.WARNING):
        frame = read_list(_list(tmp_path, "d.json", entries), "data.member_dataset")
    assert len(frame) == len(images)
    assert f"lists {words} (first:" in caplog.text


def test_an_image_in_both_lists_is_refused_whatever_the_seed_samples(tmp_path: Path) -> None:
    members = _images(tmp_path, 30, "m")
    nonmembers = _images(tmp_path, 30, "n")
    m = _list(tmp_path, "m.json", [{"image": p, "label": 1} for p in members])
    n = _list(tmp_path, "n.json", [{"image": p, "label": 0} for p in [*nonmembers, members[-1]]])
    for seed in range(5):  # 2 of 31 non-members sampled: the shared one is almost never among them
        with pytest.raises(LoganError, match="1 image of data.nonmember_dataset is also in data.member_dataset"):
            build_target(DataConfig(member_dataset=str(m), nonmember_dataset=str(n), target_set_size=4), seed)


def _target_and_pool(t: Path, pool_from_target: str) -> tuple[DataConfig, pd.DataFrame]:
    members, nonmembers, others = _images(t, 4, "m"), _images(t, 4, "n"), _images(t, 6, "r")
    m = _list(t, "m.json", [{"image": p, "label": 1} for p in members])
    n = _list(t, "n.json", [{"image": p, "label": 0} for p in nonmembers])
    shared = members[0] if pool_from_target == "member" else nonmembers[0]
    pool = _list(t, "r.json", [{"image": p, "label": 0} for p in [*others, shared]])
    cfg = DataConfig(member_dataset=str(m), nonmember_dataset=str(n), target_set_size=8,
                     reference_datasets_list=[str(pool)], reference_set_size=6)
    return cfg, build_target(cfg, 0)


def test_a_reference_image_that_is_a_target_member_is_refused(tmp_path: Path) -> None:
    cfg, target = _target_and_pool(tmp_path, "member")
    with pytest.raises(LoganError, match="1 image of the reference list .* is also in the target set's members"):
        build_reference(cfg, target, 0)
    saved = tmp_path / "ref.parquet"
    pd.DataFrame({"image": [target.path[0]], "label": [0], "caption": [""]}).to_parquet(saved)
    cfg.reference_datasets_list = [str(saved)]
    with pytest.raises(LoganError, match="is also in the target set's members"):
        build_reference(cfg, target, 0)


def test_a_reference_image_that_is_a_target_non_member_is_left_out_and_said(tmp_path: Path, caplog) -> None:
    cfg, target = _target_and_pool(tmp_path, "non-member")
    with caplog.at_level(logging.INFO):
        reference, _ = build_reference(cfg, target, 0)
    assert not set(reference.sample_id) & set(target.sample_id) and len(reference) == 6
    assert "1 image of the target set's non-members left out" in caplog.text


# ------------------------------------------------------------------ model-free baseline and summaries

def _split(t: Path, n: int, shift: float) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(1)
    for label in (1, 0):
        for i in range(n):
            level = 128 + (shift if label else -shift) * 100 + rng.normal(0, 30)
            pixels = np.clip(rng.normal(level, 20, (16, 16, 3)), 0, 255).astype(np.uint8)
            path = t / f"{label}_{i}.png"
            Image.fromarray(pixels).save(path)
            rows.append({"sample_id": "", "label": label, "path": str(path), "image": None, "name": path.name,
                         "caption": ""})
    return pd.DataFrame(rows)


def test_blind_baseline_does_not_call_a_small_set_shifted(tmp_path: Path) -> None:
    """4 + 4 images from one distribution: whatever the cross-validated AUC, its interval reaches 0.5."""
    result = blind_baseline(_split(tmp_path, 4, 0.0), seed=0)
    assert result["shifted"] is False and result["verdict"].startswith("ok")
    assert result["auc_lower_bound"] <= 0.5 <= result["auc_ci_high"]
    assert result["auc_ci_low"] <= result["auc_lower_bound"] <= result["auc"] + 1e-9


def test_blind_baseline_below_chance_is_no_evidence_of_shift(tmp_path: Path) -> None:
    result = blind_baseline(_split(tmp_path, 10, 0.0), seed=3)
    assert result["shifted"] is False
    assert result["shifted"] == (result["auc_lower_bound"] > 0.5)


def test_blind_baseline_warns_when_its_interval_lies_above_half(tmp_path: Path) -> None:
    result = blind_baseline(_split(tmp_path, 25, 1.0), seed=0)
    assert result["auc"] > 0.9 and result["auc_lower_bound"] > 0.5
    assert result["shifted"] is True and result["verdict"].startswith("WARNING")


def test_summaries_do_not_show_a_tpr_that_is_not_estimable() -> None:
    row = {"auc": 0.9, "tpr_at_5pct_fpr": 0.4, "tpr_at_5pct_fpr_estimable": True, "tpr_at_1pct_fpr": 0.2,
           "tpr_at_1pct_fpr_estimable": False, "fpr_at_1pct_fpr": 0.0}
    shown = estimable_only(row)
    assert shown["tpr_at_1pct_fpr"] is None and shown["tpr_at_5pct_fpr"] == 0.4
    assert shown["tpr_at_1pct_fpr_estimable"] is False and shown["fpr_at_1pct_fpr"] == 0.0
