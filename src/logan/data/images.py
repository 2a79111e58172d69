"""Images as bytes, and the one decoder behind everything that reads pixels (the model's inputs,
descriptions, training, the model-free baseline and the up-front check), so they all see the same picture.

A sample's identity is the sha256 of its image bytes (`sample_id`), the same digest that seeds its noise
(`content_key`): the same file gets the same id and the same noise wherever it lives, and images held as
bytes (a Hub dataset, a table) need no file.

How a file becomes RGB uint8 (H, W, 3) (`to_rgb`), for every mode PIL opens:

- `RGB` as stored; `L`, `1`, `P`, `CMYK`, `YCbCr`, `LAB`, `HSV`, `RGBX` by PIL's conversion (no ICC colour
  management: the original LOGAN, LLaVA's training loader and HF image processors apply none either).
- Transparency (`RGBA`, `LA`, `PA`, `RGBa`, `La`, or a `transparency` colour in `P` / `L` / `RGB`):
  composited on white, as transformers' `convert_to_rgb` (the llava-hf processors) does and as a viewer
  shows the image; the colour stored under transparent pixels is arbitrary (encoders often leave black or
  stale data there), so dropping alpha (`convert("RGB")`, the original's loader) would attack bytes no
  one sees.
- 16-bit grey (`I;16`, `I;16B`, `I;16L`, `I;16N`, and `I` holding 0-65535, as PIL reads 16-bit PGM and
  older Pillow 16-bit PNG): the 16-bit range mapped onto 0-255 (value / 257, rounded), so an 8-bit
  picture saved at 16 bits loads back exactly. Not stretched per image: that would change its contrast.
  `convert("RGB")` clips these to white. `I` outside 0-65535 is refused (its scale is unknown).
- Float grey (`F`): values in [0, 1] scaled by 255; other ranges, NaN or infinity are refused.
- Several frames (animated GIF / PNG, multi-page TIFF): the first frame (said once, up front).
- EXIF orientation: not applied: pixels as stored, as the original, LLaVA's training loader and HF
  processors read them, so a member is attacked with the array the model was trained on (said once, up
  front). The noise stays seeded by the file's bytes either way.
- More pixels than PIL's decompression-bomb limit (`PIL.Image.MAX_IMAGE_PIXELS`, 89.5 M): refused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image

from logan.errors import LoganError

WHITE = (255, 255, 255, 255)
EXIF_ORIENTATION = 0x0112
SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class ModeError(ValueError):
    """An image whose pixel values LOGAN cannot map to 0-255 without guessing."""


ID_PREFIX = "sha256:"


@dataclass(frozen=True)
class ImageFacts:
    """What the up-front check reports about an image beyond its pixels."""

    size: tuple[int, int]  # (width, height)
    frames: int
    rotated: bool  # an EXIF orientation other than "as stored"


def sample_id(data: bytes) -> str:
    """A sample's identity: `sha256:<hex>` of its image bytes."""
    return ID_PREFIX + hashlib.sha256(data).hexdigest()


def content_key(data: bytes) -> int:
    """A 63-bit integer from the image bytes (the first 8 bytes of their sha256): seeds the noise."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def to_rgb(img: Image.Image) -> np.ndarray:
    """An opened image as RGB uint8 (H, W, 3) with its real content (see the module docstring)."""
    mode = img.mode
    if mode in SIXTEEN_BIT or mode == "I":
        return _grey(_sixteen_bit(np.asarray(img), mode))
    if mode == "F":
        return _grey(_unit_float(np.asarray(img)))
    try:
        if mode in ("La", "RGBa"):  # premultiplied alpha: PIL converts these only to their plain forms
            img = img.convert(mode.upper() if mode == "RGBa" else "LA")
        if "A" in img.getbands() or img.info.get("transparency") is not None:
            background = Image.new("RGBA", img.size, WHITE)
            img = Image.alpha_composite(background, img.convert("RGBA"))
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except ValueError as exc:
        raise ModeError(f"PIL cannot convert its mode {mode} to RGB ({exc})") from exc


def _sixteen_bit(values: np.ndarray, mode: str) -> np.ndarray:
    low, high = (int(values.min()), int(values.max())) if values.size else (0, 0)
    if low < 0 or high > 65535:
        raise ModeError(
            f"its 32-bit integer pixels (mode {mode}) span {low}..{high}, outside the 16-bit range "
            "0..65535, so their scale is unknown"
        )
    return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)


def _unit_float(values: np.ndarray) -> np.ndarray:
    if not np.isfinite(values).all():
        raise ModeError("its float pixels (mode F) include NaN or infinity")
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if low < 0.0 or high > 1.0:
        raise ModeError(
            f"its float pixels (mode F) span {low:g}..{high:g}, outside [0, 1], so their scale is unknown"
        )
    return np.rint(values.astype(np.float64) * 255.0).astype(np.uint8)


def _grey(values: np.ndarray) -> np.ndarray:
    return np.repeat(values[..., None], 3, axis=-1)


def _decode(data: bytes, name: str) -> tuple[np.ndarray, ImageFacts]:
    """Pixels (RGB uint8) and facts of one image file's bytes; any problem is one LoganError naming it."""
    try:
        with Image.open(BytesIO(data)) as img:
            limit = Image.MAX_IMAGE_PIXELS
            if limit and img.width * img.height > limit:
                raise Image.DecompressionBombError(
                    f"{img.width}x{img.height} = {img.width * img.height} pixels "
                    f"exceeds the limit of {limit} pixels"
                )
            img.load()
            facts = ImageFacts(
                img.size,
                int(getattr(img, "n_frames", 1)),
                img.getexif().get(EXIF_ORIENTATION, 1) not in (0, 1),
            )
            return to_rgb(img), facts
    except Image.DecompressionBombError as exc:
        raise LoganError(
            f"image {name} is too large for PIL's decompression-bomb check ({exc}). Downscale it, "
            "or raise PIL.Image.MAX_IMAGE_PIXELS from Python if you mean it."
        )
    except ModeError as exc:
        raise LoganError(
            f"image {name} cannot be read faithfully: {exc}. Convert it to an 8-bit PNG or drop its entry."
        )
    except Image.UnidentifiedImageError:
        raise LoganError(
            f"image {name} is not an image PIL can read (an empty file, one cut before its header, "
            "or a format such as SVG or HEIC). Replace it or drop its entry."
        )
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise LoganError(f"image {name} is unreadable or corrupt ({exc}). Replace it or drop its entry.")


def read_bytes(path: str | Path, where: str = "") -> bytes:
    """An image file's bytes; a missing or unreadable file is one error naming the entry it came from."""
    path, at = Path(path), f" ({where})" if where else ""
    if not path.is_file():
        raise LoganError(f"image file not found: {path}{at}. Fix the path or drop the entry.")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise LoganError(
            f"cannot read image {path}{at}: {exc.strerror or exc}. Fix the path in the data list."
        )


def decode_image(data: bytes, name: str = "held as bytes") -> np.ndarray:
    """RGB uint8 pixels (H, W, 3) of encoded image bytes; a bad image is one error naming it."""
    return _decode(data, name)[0]


def source_bytes(source: str | Path | bytes) -> bytes:
    """The encoded bytes of an image source (a file path or the bytes themselves)."""
    return source if isinstance(source, bytes) else read_bytes(source)


def load_image(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """An image (a file path or its bytes) as RGB uint8 pixels, and its noise key."""
    data = source_bytes(source)
    return decode_image(data, "held as bytes" if isinstance(source, bytes) else str(source)), content_key(
        data
    )


def check_image(data: bytes, where: str) -> ImageFacts:
    """Up-front check, before any model loads: the bytes decode to the pixels the run will use (the same
    decoder, so nothing fails later); errors name the list entry they came from."""
    return _decode(data, where)[1]


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the image header, without decoding the pixels."""
    with Image.open(BytesIO(data)) as img:
        return img.size


def image_format(data: bytes) -> str:
    """The file format PIL detects (JPEG, PNG, ...), from the header."""
    with Image.open(BytesIO(data)) as img:
        return (img.format or "").upper()
