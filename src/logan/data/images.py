"""Image loading. Each image gets a content key (from its bytes) that seeds its noise draws."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from logan.errors import LoganError


def content_key(data: bytes) -> int:
    """A 63-bit integer from the image bytes: the same file gets the same noise wherever it lives."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def load_image(path: str | Path) -> tuple[np.ndarray, int]:
    """Read an image as RGB uint8 (H, W, 3) and its content key; a bad file is one clear error."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LoganError(f"cannot read image {path}: {exc.strerror or exc}. Fix the path in the data list.")
    try:
        from io import BytesIO

        with Image.open(BytesIO(data)) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LoganError(f"image {path} is unreadable or corrupt ({exc}). Replace it or drop its entry.")
    return array, content_key(data)


def check_image(path: str | Path, where: str) -> None:
    """Cheap up-front check that a file exists and decodes, naming the list entry it came from."""
    path = Path(path)
    if not path.is_file():
        raise LoganError(f"image file not found: {path} ({where}). Fix the path or drop the entry.")
    try:
        with Image.open(path) as img:
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise LoganError(f"image {path} ({where}) is unreadable or corrupt ({exc}). Replace it or drop the entry.")


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) from the file header, without decoding the pixels."""
    with Image.open(path) as img:
        return img.size
