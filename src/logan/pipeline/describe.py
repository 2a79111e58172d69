"""Descriptions (`desp` part): generated once per sample from the clean image, greedy, and cached.

The cache `<run>/descriptions.json` maps image -> token ids and text; it is rewritten atomically after
every batch, so an interrupted run keeps what it generated and every std reuses the same text.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from logan.config import RunConfig
from logan.data.images import load_image
from logan.io import read_json, write_json
from logan.models.base import VLMAdapter, pad_batch

log = logging.getLogger(__name__)


def describe(cfg: RunConfig, model: VLMAdapter, images: list[str], cache: Path) -> dict[str, list[int]]:
    """Token ids of each image's description, generating only those not cached yet."""
    stored = read_json(cache) if cache.exists() else {}
    todo = [img for img in images if img not in stored]
    size = cfg.generation.batch_size
    if todo:
        log.info("generating descriptions for %d images (%d cached)", len(todo), len(images) - len(todo))
    for start in tqdm(range(0, len(todo), size), desc="describe", unit="batch", leave=False):
        batch = todo[start:start + size]
        prompt = model.encode(cfg.prompt.text, None)
        ids, mask = pad_batch([prompt] * len(batch), model.pad_token_id, side="left")
        pixels = model.pixel_values([load_image(img)[0].astype(np.float32) for img in batch])
        for img, new in zip(batch, model.generate(ids, mask, pixels, cfg.generation.num_gen_tokens)):
            stored[img] = {"ids": new, "text": model.decode(new)}
        write_json(cache, stored)
    return {img: stored[img]["ids"] for img in images}
