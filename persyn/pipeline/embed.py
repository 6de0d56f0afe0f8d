"""Prompt embeddings from a frozen encoder, pooled as its sentence-transformers config says
(mean pooling when there is none, or CLS), then L2-normalised. torch and transformers are imported
where the encoder loads: the doctor and the router read pooling_mode without paying for them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tqdm import tqdm

from persyn.params.config import EmbedConfig
from persyn.core.devices import pick_device
from persyn.core.models import ResolvedModel, resolve

log = logging.getLogger("persyn.embed")


def pooling_mode(model: ResolvedModel) -> str:
    """'cls' or 'mean', from a sentence-transformers 1_Pooling/config.json where there is one."""
    config = Path(model.path) / "1_Pooling" / "config.json"
    if config.is_file() and json.loads(config.read_text()).get("pooling_mode_cls_token"):
        return "cls"
    return "mean"


def pool(hidden: Any, attention_mask: Any, mode: str) -> Any:
    """One vector per row of a batch's last hidden states: the first token ("cls"), the last real token
    ("last", right padding: a causal LM) or the mean over the real tokens ("mean")."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        import torch

        return hidden[torch.arange(len(hidden)), attention_mask.sum(1) - 1]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


def encode(texts: Sequence[str], config: EmbedConfig) -> tuple[np.ndarray, ResolvedModel]:
    """One unit-length float32 vector per text, computed in batches of similar length."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    with torch.inference_mode():
        model = resolve(config.model)
        device = pick_device(config.device)
        log.info("embedding %d prompts with %s", len(texts), model.identity)
        tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision)
        encoder = AutoModel.from_pretrained(model.path, revision=model.revision, dtype=torch.float32).to(device).eval()
        pooling = pooling_mode(model)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        vectors = np.zeros((len(texts), encoder.config.hidden_size), dtype=np.float32)
        for start in tqdm(range(0, len(order), config.batch_size), desc="embed", unit="batch"):
            batch = order[start: start + config.batch_size]
            encoded = tokenizer([texts[i] for i in batch], padding=True, truncation=True,
                                max_length=config.max_length, return_tensors="pt").to(device)
            pooled = pool(encoder(**encoded).last_hidden_state, encoded["attention_mask"], pooling)
            vectors[batch] = torch.nn.functional.normalize(pooled, dim=-1).cpu().numpy()
        return vectors, model
