"""Tiny random models built on the spot: a chat causal LM, a sentence encoder, a reward classifier.

Each gets a tokenizer trained here on arithmetic text, so the tests need no hub and no packages
beyond transformers and tokenizers. `vllm=True` gives head size 32 instead of 8: in float32 vLLM
has only its Triton attention (head size >= 32) and FlexAttention (rejects head sizes under 16).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (BertConfig, BertModel, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification,
                          PreTrainedTokenizerFast)

from persyn.sources import arithmetic

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIALS = ["<pad>", "<|im_start|>", "<|im_end|>", "<s>", "[CLS]", "[SEP]", "[UNK]"]
# hidden size, heads, key-value heads, MLP width: the defaults, and a shape vLLM loads in float32
SIZES = {False: (32, 4, 2, 64), True: (64, 2, 2, 128)}


def corpus() -> list[str]:
    problems = arithmetic.generate(400, seed=123)
    return [p["prompt"] + " The answer is " + p["reference"] + "." for p in problems] + [
        "system user assistant Question: Answer: Solve step by step."
    ]


def chat_tokenizer(directory: Path, bos: bool = False) -> PreTrainedTokenizerFast:
    """`bos=True` behaves like Llama 3: the template writes BOS and plain tokenising adds one too."""
    backend = Tokenizer(models.BPE(unk_token=None))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.train_from_iterator(corpus(), trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    if bos:
        backend.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", SPECIALS.index("<s>"))])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>",
                                        bos_token="<s>")
    tokenizer.chat_template = "{{ bos_token }}" + CHATML if bos else CHATML
    tokenizer.save_pretrained(directory)
    return tokenizer


def causal_lm(directory: Path, seed: int, chat: bool = True, vllm: bool = False) -> Path:
    """A 2-layer Llama; `chat=False` gives a base model without a chat template."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = chat_tokenizer(directory)
    if not chat:
        tokenizer.chat_template = None
        (directory / "chat_template.jinja").unlink(missing_ok=True)
        tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    hidden, heads, kv_heads, width = SIZES[vllm]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=width, num_hidden_layers=2,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=512,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                         bos_token_id=tokenizer.bos_token_id)
    LlamaForCausalLM(config).save_pretrained(directory)
    return directory


def reward_model(directory: Path, seed: int = 0, vllm: bool = False, bos: bool = False, scale: float = 1.0) -> Path:
    """A 1-layer Llama classifier; `scale` multiplies its score head (logits beyond a sigmoid's range)."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = chat_tokenizer(directory, bos)
    torch.manual_seed(seed)
    hidden, heads, kv_heads, width = SIZES[vllm]
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=width, num_hidden_layers=1,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    network = LlamaForSequenceClassification(config)
    with torch.no_grad():
        network.score.weight.mul_(scale)
    network.save_pretrained(directory)
    return directory


def encoder(directory: Path, seed: int = 0) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator(corpus(), trainers.WordPieceTrainer(vocab_size=300, special_tokens=SPECIALS))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                        position_embedding_type="absolute")  # as hub BERT configs say it (CTranslate2 reads it)
    BertModel(config).save_pretrained(directory)
    return directory


def gemma3_lm(directory: Path, seed: int = 4) -> Path:
    """A 2-layer Gemma 3 text model with a 16-token sliding window (CTranslate2 cannot score it)."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = chat_tokenizer(directory)
    tokenizer.unk_token = "[UNK]"  # CTranslate2's converter writes the unknown token into its config
    tokenizer.save_pretrained(directory)
    torch.manual_seed(seed)
    config = Gemma3TextConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                              num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512,
                              sliding_window=16, pad_token_id=tokenizer.pad_token_id,
                              eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    Gemma3ForCausalLM(config).save_pretrained(directory)
    return directory
