"""Images as bytes. A sample's identity is the sha256 of its image bytes (`sample_id`), the same digest
that seeds its noise (`content_key`): the same file gets the same id and the same noise wherever it lives,
and images held as bytes (a Hub dataset, a table) need no file. Every decode goes through `decode_image`."""

from __future__ import annotations

import hashlib
from io import BytesIO
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from logan.errors import LoganError

ID_PREFIX = "sha256:"


def sample_id(data: bytes) -> str:
    """A sample's identity: `sha256:<hex>` of its image bytes."""
    return ID_PREFIX + hashlib.sha256(data).hexdigest()


def content_key(data: bytes) -> int:
    """A 63-bit integer from the image bytes (the first 8 bytes of their sha256): seeds the noise."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little") >> 1


def read_bytes(path: str | Path, where: str = "") -> bytes:
    """An image file's bytes; a missing or unreadable file is one error naming the entry it came from."""
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as exc:
        at = f" ({where})" if where else ""
        raise LoganError(f"image file not found: {path}{at}. Fix the path or drop the entry."
                         if isinstance(exc, FileNotFoundError) else
                         f"cannot read image {path}{at}: {exc.strerror or exc}. Fix the path in the data list.") from None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """RGB uint8 pixels (H, W, 3) of encoded image bytes; a bad image is one error naming it."""
    try:
        with Image.open(BytesIO(data)) as img:
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise LoganError(f"{name} is unreadable or corrupt ({exc}). Replace it or drop its entry.") from None


def load_image(source: str | Path | bytes) -> tuple[np.ndarray, int]:
    """An image (a file path or its bytes) as RGB uint8 pixels, and its noise key."""
    data = source if isinstance(source, bytes) else read_bytes(source)
    return decode_image(data, "image" if isinstance(source, bytes) else f"image {source}"), content_key(data)


def check_image(data: bytes, where: str) -> tuple[int, int]:
    """Cheap up-front check that image bytes decode; returns (width, height) from the header."""
    try:
        with Image.open(BytesIO(data)) as img:
            size = img.size
            img.verify()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise LoganError(f"image {where} is unreadable or corrupt ({exc}). Replace it or drop the entry.") from None
    return size
