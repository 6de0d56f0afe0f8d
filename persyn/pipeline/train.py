"""Supervised fine-tuning of the student on the assembled dataset, with the transformers Trainer.

The loss covers the response tokens only, under the student's chat template: the same tokens
that learnability scores (persyn.core.chat.response_tokens). The output layer is applied only from the
batch's first response token on: on a CPU the (tokens x vocabulary) logits of the prompt cost a
small model as much as its blocks. Optional LoRA (peft) is merged back, so the checkpoint is always
a plain Hugging Face directory.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainingArguments, set_seed

from persyn import engines
from persyn.core.chat import response_tokens
from persyn.pipeline.batching import length_batches
from persyn.params.config import StudentConfig, TrainConfig
from persyn.core.devices import cpu_bfloat16_units, pick_device, trains_in_bfloat16
from persyn.core.errors import PersynError
from persyn.core.models import resolve

log = logging.getLogger("persyn.train")
IGNORE = -100


def features(tokenizer: Any, records: list[dict[str, Any]], max_length: int, model: str) -> list[dict[str, list[int]]]:
    """input_ids with labels = input_ids on response positions and -100 elsewhere."""
    rows = []
    for record in records:
        ids, start = response_tokens(tokenizer, record["messages"][:-1], record["messages"][-1]["content"],
                                     max_length, model)
        rows.append({"input_ids": ids, "labels": [IGNORE] * start + ids[start:]})
    return rows


class PadCollator:
    """Right-pads a batch; padded positions are masked out of attention and loss."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        pad = [width - len(r["input_ids"]) for r in rows]
        return {
            "input_ids": torch.tensor([r["input_ids"] + [self.pad_id] * n for r, n in zip(rows, pad)]),
            "labels": torch.tensor([r["labels"] + [IGNORE] * n for r, n in zip(rows, pad)]),
            "attention_mask": torch.tensor([[1] * len(r["input_ids"]) + [0] * n for r, n in zip(rows, pad)]),
        }


class LengthBatches(torch.utils.data.Sampler):
    """train.batching = "length": the rows in batches of similar length (persyn.pipeline.batching), a
    new seeded order each epoch, the one short batch last (the Trainer cuts the order into batches)."""

    def __init__(self, lengths: list[int], size: int, seed: int) -> None:
        self.lengths, self.size, self.rng = np.array(lengths), size, np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Any:
        found = length_batches(np.arange(len(self.lengths)), self.lengths, self.size, self.rng)
        ordered = [b for b in found if len(b) == self.size] + [b for b in found if len(b) < self.size]
        return iter([int(row) for batch in ordered for row in batch])


class ResponseLossTrainer(Trainer):
    """Mean cross-entropy over the response tokens, as the model's own loss, with the logits computed
    (by the model's forward, `logits_to_keep`) only from the batch's earliest response token on; rows
    batched by length under train.batching = "length"."""

    def __init__(self, *args: Any, batching: str = "shuffle", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batching = batching

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        if self.batching != "length":
            return super()._get_train_sampler(train_dataset)
        rows = train_dataset if train_dataset is not None else self.train_dataset
        return LengthBatches([len(r["input_ids"]) for r in rows], self.args.per_device_train_batch_size, self.args.seed)

    def compute_loss(self, model: Any, inputs: dict[str, torch.Tensor], return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        labels = inputs["labels"]
        width = labels.shape[1]
        first = int((labels != IGNORE).int().argmax(dim=1).min())  # earliest response position in the batch
        keep = width - max(first - 1, 0)  # logits at positions first-1 … width-1 predict first … width
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], logits_to_keep=keep)
        targets = labels[:, width - keep + 1:]
        loss = F.cross_entropy(outputs.logits[:, :-1].float().flatten(0, 1), targets.flatten(),
                               ignore_index=IGNORE, reduction="sum")
        loss = loss / (num_items_in_batch if num_items_in_batch is not None else (targets != IGNORE).sum())
        return (loss, outputs) if return_outputs else loss


def freeze(model: Any, layers: int, name: str) -> None:
    """No gradient for the input embeddings (and so a tied output layer) and the `layers` lowest
    transformer blocks: the backward pass stops at the first trained block."""
    if not layers:
        return
    total = model.config.num_hidden_layers
    blocks = next((m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == total), None)
    if blocks is None:
        raise PersynError(f"train.freeze_layers: cannot find the transformer blocks of {name}")
    if layers >= total:
        raise PersynError(f"train.freeze_layers = {layers}: {name} has {total} transformer blocks, "
                          f"so at most {total - 1} can be frozen")
    for module in (model.get_input_embeddings(), *blocks[:layers]):
        for parameter in module.parameters():
            parameter.requires_grad = False


def with_lora(model: Any, config: TrainConfig) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ModuleNotFoundError:
        raise PersynError("train.lora_r > 0 needs peft: pip install peft") from None
    lora = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules="all-linear", task_type="CAUSAL_LM")
    return get_peft_model(model, lora)


def warmup_steps(examples: int, config: TrainConfig) -> int:
    """warmup_ratio as a step count (TrainingArguments spells it differently across versions)."""
    per_epoch = math.ceil(examples / (config.batch_size * config.grad_accum))
    return int(config.warmup_ratio * math.ceil(per_epoch * config.epochs))


def train(records: list[dict[str, Any]], student: StudentConfig, config: TrainConfig, out: Path,
          source: str) -> tuple[dict[str, Any], list[dict[str, float]]]:
    """Fine-tune on the records (read from `source`), save the checkpoint into `out`, return summary
    metrics and the per-step loss."""
    if not records:
        raise PersynError(f"{source}: no records to train on")
    set_seed(config.seed)
    model_ref = resolve(student.model, student.chat_template)
    device = pick_device(student.device)
    tokenizer = AutoTokenizer.from_pretrained(model_ref.path, revision=model_ref.revision)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_ref.path, revision=model_ref.revision, dtype=torch.float32)
    if config.lora_r:
        model = with_lora(model, config)
    freeze(model, config.freeze_layers, model_ref.identity)
    cpu_units = cpu_bfloat16_units() if device == "cpu" else None
    bf16 = trains_in_bfloat16(config.precision, device, cpu_units)
    if bf16 and device == "cpu" and cpu_units is None:
        log.warning("train.precision = 'bfloat16' on a CPU without AMX or AVX512-BF16: torch emulates it, "
                    "15-21x slower than float32 (bench/train_bench.py); 'auto' would choose float32")
    rows = features(tokenizer, records, config.max_length, student.model)
    log.info("fine-tuning %s on %d records (%d response tokens) on %s in %s, %d lowest blocks frozen, batches by %s",
             model_ref.identity, len(rows), sum(sum(label != IGNORE for label in r["labels"]) for r in rows), device,
             "bfloat16" if bf16 else "float32", config.freeze_layers, config.batching)
    with tempfile.TemporaryDirectory(prefix="persyn-train-") as scratch:
        arguments = TrainingArguments(
            output_dir=scratch, num_train_epochs=config.epochs, learning_rate=config.lr,
            per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.grad_accum,
            warmup_steps=warmup_steps(len(rows), config), weight_decay=config.weight_decay, lr_scheduler_type="linear",
            seed=config.seed, data_seed=config.seed, logging_steps=1, save_strategy="no", report_to=[],
            use_cpu=device == "cpu", bf16=bf16, remove_unused_columns=False,
            dataloader_num_workers=0,
        )
        trainer = ResponseLossTrainer(model=model, args=arguments, train_dataset=rows,
                                      data_collator=PadCollator(tokenizer.pad_token_id), batching=config.batching)
        result = trainer.train()
    if config.lora_r:
        model = model.merge_and_unload()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    curve = [{"step": int(e["step"]), "loss": float(e["loss"])} for e in trainer.state.log_history if "loss" in e]
    summary = {
        "records": len(rows),
        "response_tokens": int(sum(sum(label != IGNORE for label in r["labels"]) for r in rows)),
        "steps": int(result.global_step),
        "epochs": float(config.epochs),
        "first_loss": curve[0]["loss"] if curve else None,
        "final_loss": curve[-1]["loss"] if curve else None,
        "mean_loss": float(result.training_loss),
        "lora_r": config.lora_r,
        "freeze_layers": config.freeze_layers,
        "precision": "bfloat16" if bf16 else "float32",
        "batching": config.batching,
    }
    return summary, curve


def prepare_answering(checkpoint: Path, student: StudentConfig) -> None:
    """Convert the checkpoint for the student's engine now (CTranslate2: once per checkpoint), while torch
    and transformers are loaded: in the evaluate stage the conversion would pay for their import too."""
    model = resolve(f"local:{checkpoint}", student.chat_template)
    engines.prepare(student.engine, model, student.device, student.engine_options, ["generate"])
