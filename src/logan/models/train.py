"""Caption fine-tuning of a (tiny) HF LLaVA: the demo's way of making known members.

The model learns to answer the instruction with each member image's caption (loss on the caption
tokens and EOS only), through the same prompt template and preprocessing the attack later uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from logan.config import ModelConfig
from logan.data.images import load_image
from logan.io import follow_umask
from logan.models.base import hf_progress_bars_off
from logan.models.contract import PIXELS, TokenBatch
from logan.models.llava_hf import LlavaHF

log = logging.getLogger(__name__)


def train_captioner(
    folder: Path,
    pairs: list[tuple[str, str]],
    instruction: str,
    *,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    seed: int,
) -> list[float]:
    """Train the LLaVA in `folder` on (image path, caption) pairs in place; returns the loss per epoch.

    Seeded by `seed` alone: torch's global random state is seeded inside and restored afterwards, so the
    caller's random streams are as they were."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapter = LlavaHF(
            ModelConfig(name="llava-hf", model_path=str(folder)), torch.device("cpu"), torch.float32
        )
        model = adapter.model.train()
        sequences = []
        eos = [adapter.eos_token_id] if adapter.eos_token_id is not None else []
        for _, caption in pairs:
            sequences.append(adapter.encode(instruction, adapter.tokenize(caption) + eos))
        pixels = adapter.image_batch([load_image(path)[0].astype(np.float32) for path, _ in pairs]).tensors[
            PIXELS
        ]
        optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
        generator = torch.Generator().manual_seed(seed)
        history = []
        for _ in tqdm(range(epochs), desc="train tiny LLaVA", unit="epoch", leave=False):
            order = torch.randperm(len(pairs), generator=generator).tolist()
            total = 0.0
            for start in range(0, len(order), batch_size):
                rows = order[start : start + batch_size]
                tokens = TokenBatch.build([sequences[r] for r in rows], adapter.pad_token_id)
                ids, mask = tokens.input_ids, tokens.attention_mask
                labels = torch.full_like(ids, -100)
                for i, r in enumerate(rows):
                    seq = sequences[r]
                    labels[i, seq.inst_end : len(seq.input_ids)] = ids[i, seq.inst_end : len(seq.input_ids)]
                loss = model(
                    input_ids=ids, attention_mask=mask, pixel_values=pixels[rows], labels=labels
                ).loss
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item() * len(rows)
            history.append(total / len(pairs))
        with hf_progress_bars_off():
            model.eval().save_pretrained(folder)
        follow_umask(folder)
    log.info(
        "trained %d epochs on %d members: caption loss %.3f -> %.3f",
        epochs,
        len(pairs),
        history[0],
        history[-1],
    )
    return history
