"""Prompt embeddings from a frozen encoder, pooled as its sentence-transformers config says
(mean pooling when there is none, or CLS), then L2-normalised. The encoder runs on embed.engine:
CTranslate2 (the default's: the same vectors without importing torch and transformers, most of this
stage's time on a CPU) or transformers; the doctor and the router read pooling_mode without either."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from persyn import engines
from persyn.params.config import EmbedConfig
from persyn.core.models import ResolvedModel, resolve

log = logging.getLogger("persyn.embed")


def pooling_mode(model: ResolvedModel) -> str:
    """'cls' or 'mean', from a sentence-transformers 1_Pooling/config.json where there is one."""
    config = Path(model.path) / "1_Pooling" / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def pool(hidden: np.ndarray, attention_mask: np.ndarray, mode: str) -> np.ndarray:
    """One unit vector per row of a batch's last hidden states: the first token's ("cls") or the mean
    over the real tokens ("mean")."""
    if mode == "cls":
        pooled = hidden[:, 0]
    else:
        mask = attention_mask[..., None].astype(hidden.dtype)
        pooled = (hidden * mask).sum(1) / np.maximum(mask.sum(1), 1)
    return pooled / np.maximum(np.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def encode(texts: Sequence[str], config: EmbedConfig) -> tuple[np.ndarray, ResolvedModel]:
    """One unit-length float32 vector per text, computed in batches of similar length."""
    model = resolve(config.model)
    log.info("embedding %d prompts with %s on %s", len(texts), model.identity, config.engine)
    encoder = engines.load_encoder(config.engine, model, config.device, config.max_length)
    try:
        pooling = pooling_mode(model)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors: np.ndarray | None = None
        for start in tqdm(range(0, len(order), config.batch_size), desc="embed", unit="batch"):
            batch = order[start: start + config.batch_size]
            pooled = pool(*encoder.hidden_states([texts[i] for i in batch]), pooling)
            if vectors is None:
                vectors = np.zeros((len(texts), pooled.shape[1]), dtype=np.float32)
            vectors[batch] = pooled
    finally:
        encoder.close()
    return (np.zeros((0, 0), dtype=np.float32) if vectors is None else vectors), model
