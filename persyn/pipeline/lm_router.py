"""The paper's router (router.head = "lm"): a small pretrained model fine-tuned end to end with a
coefficient head, one output per teacher, under the Bradley–Terry loss −log σ(π_winner − π_loser).
That is the P2L design PerSyn uses (on Qwen2.5-1.5B). Unlike the linear and mlp heads over frozen
embeddings it reads the prompt text, so fine-tuning can learn what a frozen encoder does not show.

The backbone is pooled as the embed stage pools an encoder (its sentence-transformers config, else
mean), or at the last non-pad token for a causal LM, then L2-normalised: at step 0 the head reads
what the linear head reads when router.backbone is embed.model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from persyn.pipeline import router
from persyn.pipeline.batching import length_batches
from persyn.params.config import RouterConfig
from persyn.pipeline.embed import pooling_mode
from persyn.core.errors import PersynError
from persyn.core.io import read_json
from persyn.core.models import ResolvedModel, resolve


def prompt_text(prompt: dict[str, Any]) -> str:
    """What the router reads of a prompt: its messages' contents, as the embed stage encodes them."""
    return "\n".join(m["content"] for m in prompt["messages"])


def pool(hidden: torch.Tensor, attention_mask: torch.Tensor, mode: str) -> torch.Tensor:
    """One vector per row of a batch's last hidden states, differentiably: the first token ("cls"), the
    last real token ("last", right padding: a causal LM) or the mean over the real tokens ("mean"), as
    persyn.pipeline.embed pools the frozen encoder's states."""
    if mode == "cls":
        return hidden[:, 0]
    if mode == "last":
        return hidden[torch.arange(len(hidden)), attention_mask.sum(1) - 1]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)


class Network(torch.nn.Module):
    """Backbone → pooled unit vector → Linear(hidden, teachers): π(x), one coefficient per teacher."""

    def __init__(self, backbone: torch.nn.Module, teachers: int, pooling: str) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = torch.nn.Linear(backbone.config.hidden_size, teachers)
        self.pooling = pooling

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return self.head(torch.nn.functional.normalize(pool(hidden, attention_mask, self.pooling), dim=-1))


@dataclass
class LMRouter:
    """A fine-tuned network, its tokenizer, and the teacher order its outputs follow."""

    teachers: list[str]
    network: Network
    tokenizer: Any
    model: ResolvedModel
    max_length: int
    batch_size: int
    device: str

    @property
    def dimension(self) -> int:
        return self.network.head.in_features

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer([str(t) for t in texts], padding=True, truncation=True, max_length=self.max_length,
                                 return_tensors="pt")
        return {k: encoded[k].to(self.device) for k in ("input_ids", "attention_mask")}

    @torch.no_grad()
    def coefficients(self, texts: Sequence[str]) -> np.ndarray:
        """π per prompt text, in batches of similar length."""
        if not all(isinstance(t, str) for t in texts):
            raise PersynError("router.head = 'lm' reads prompt texts, not embeddings")
        self.network.eval()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), len(self.teachers)), dtype=np.float32)
        for start in range(0, len(order), self.batch_size):
            batch = order[start: start + self.batch_size]
            out[batch] = self.network(**self.encode([texts[i] for i in batch])).float().cpu().numpy()
        return out

    def route(self, texts: Sequence[str]) -> np.ndarray:
        """Index of the chosen teacher per prompt; ties go to the first teacher in order."""
        return self.coefficients(texts).argmax(axis=1)

    def save_weights(self, path: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.network.state_dict().items()}, str(path))

    def settings(self) -> dict[str, Any]:
        """What data/router/<s>/router.json keeps to rebuild it: the backbone (checked on load)."""
        return {"spec": self.model.spec, "identity": self.model.identity, "max_length": self.max_length,
                "batch_size": self.batch_size}


def build(model: ResolvedModel, teachers: list[str], max_length: int, batch_size: int, device: str,
          pretrained: bool = True) -> LMRouter:
    """The backbone (its pretrained weights, or only its shape when saved weights follow) and a fresh head."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model.path, revision=model.revision)
    config = AutoConfig.from_pretrained(model.path, revision=model.revision)
    causal = any(a.endswith("ForCausalLM") for a in config.architectures or [])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "right"
    backbone = (AutoModel.from_pretrained(model.path, revision=model.revision, dtype=torch.float32) if pretrained
                else AutoModel.from_config(config, dtype=torch.float32))
    network = Network(backbone, len(teachers), "last" if causal else pooling_mode(model)).to(device)
    return LMRouter(teachers, network, tokenizer, model, max_length, batch_size, device)


def train(texts: Sequence[str], pairs: np.ndarray, teachers: list[str], config: RouterConfig) -> LMRouter:
    """Fine-tune backbone and head together, seeded: each step takes router.batch_size prompts
    (persyn.pipeline.batching) and averages the Bradley–Terry loss over all of their pairs. The backbone learns at
    router.lm_lr, the fresh head at router.lr."""
    from persyn.core.devices import pick_device

    router.require_pairs(pairs)
    torch.manual_seed(config.seed)
    fitted = build(resolve(config.backbone), teachers, config.max_length, config.batch_size, pick_device(config.device))
    network = fitted.network
    optimiser = torch.optim.AdamW([{"params": network.backbone.parameters(), "lr": config.lm_lr},
                                   {"params": network.head.parameters(), "lr": config.lr}],
                                  weight_decay=config.weight_decay)
    prompts = np.unique(pairs[:, 0])
    lengths = np.array([len(t) for t in texts])
    rng = np.random.default_rng(config.seed)
    network.train()
    for _ in range(config.lm_epochs):
        for batch in length_batches(prompts, lengths, config.batch_size, rng):
            row = {int(p): k for k, p in enumerate(batch)}
            chosen = pairs[np.isin(pairs[:, 0], batch)]
            coefficients = network(**fitted.encode([texts[p] for p in batch]))
            rows = torch.as_tensor([row[int(p)] for p in chosen[:, 0]], device=fitted.device)
            winner, loser = (torch.as_tensor(chosen[:, i], device=fitted.device) for i in (1, 2))
            margin = coefficients[rows, winner] - coefficients[rows, loser]
            loss = torch.nn.functional.binary_cross_entropy_with_logits(margin, torch.ones_like(margin))
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    network.eval()
    return fitted


def fit(scores: list[dict], texts: dict[str, str], teachers: list[str], config: RouterConfig) -> router.Fit:
    """router.fit (split, held-out metrics, refit on all of S) with this module's trainer."""
    return router.fit(scores, texts, teachers, config, trainer=train)


def load(directory: Path, which: str = "routing", device: str = "cpu") -> tuple[router.Trained, dict]:
    """Any saved router (routing or held_out), an lm one on `device`; its backbone spec must still
    resolve to the identity it was fine-tuned from."""
    from safetensors.torch import load_file

    from persyn.core.devices import pick_device

    meta = read_json(directory / "router.json", "router_model")
    if meta["head"] != "lm":
        return router.load(directory, which)
    backbone = meta["backbone"]
    model = resolve(backbone["spec"])
    if model.identity != backbone["identity"]:
        raise PersynError(f"{directory / 'router.json'}: the router was fine-tuned from {backbone['identity']}, but "
                          f"{backbone['spec']} is now {model.identity}: re-run fit_router")
    loaded = build(model, meta["teachers"], backbone["max_length"], backbone["batch_size"], pick_device(device),
                   pretrained=False)
    loaded.network.load_state_dict(load_file(str(directory / router.HEADS[which])))
    loaded.network.eval()
    return loaded, meta
