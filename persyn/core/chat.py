"""Chat-template token ids shared by scoring and training: one definition of "the response tokens"."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from persyn.core.errors import PersynError

Messages = list[dict[str, str]]
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")
SPECIAL_TOKENS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class FastTokenizer:
    """What the CTranslate2 engine asks of a tokenizer, from tokenizer.json (the `tokenizers` library) and
    the chat template rendered by jinja2 as transformers renders it: no torch model runs there, and
    AutoTokenizer imports torch (2-3 s a stage, issue 28). Same token ids as AutoTokenizer
    (tests/test_import_cost.py)."""

    def __init__(self, directory: Path, settings: dict[str, Any], template: str | None, compiled: Any) -> None:
        from tokenizers import Tokenizer

        self.backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
        special = {name: settings.get(name) for name in SPECIAL_TOKENS}
        self.special_tokens_map = {name: str(value["content"] if isinstance(value, dict) else value)
                                   for name, value in special.items() if value is not None}
        eos = self.special_tokens_map.get("eos_token")
        self.eos_token_id = self.backend.token_to_id(eos) if eos else None
        self.chat_template = template
        self.compiled = compiled

    def get_vocab(self) -> dict[str, int]:
        return self.backend.get_vocab(with_added_tokens=True)

    def __call__(self, text: str) -> dict[str, list[int]]:
        return {"input_ids": self.backend.encode(text).ids}

    def apply_chat_template(self, messages: Messages, add_generation_prompt: bool = False, tokenize: bool = True,
                            return_dict: bool = True) -> dict[str, list[int]]:
        """The ids of the rendered chat, with no special tokens added beyond the template's (as transformers)."""
        rendered = self.compiled.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        **self.special_tokens_map)
        return {"input_ids": self.backend.encode(rendered, add_special_tokens=False).ids}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return self.backend.decode(ids, skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.backend.id_to_token(i) for i in ids]


def _compile(template: str) -> Any:
    """transformers' chat-template environment (sandboxed, trim_blocks, lstrip_blocks, loopcontrols, its
    tojson, raise_exception and strftime_now); a template it cannot compile (the {% generation %} tag)
    raises jinja2.TemplateSyntaxError."""
    import jinja2
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None,
               sort_keys: bool = False) -> str:
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    environment = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    environment.filters["tojson"] = tojson
    environment.globals["raise_exception"] = raise_exception
    environment.globals["strftime_now"] = lambda form: datetime.now().strftime(form)
    return environment.from_string(template)


def load_tokenizer(path: str) -> Any:
    """A FastTokenizer where the directory has a tokenizer.json, one chat template (or none) that plain
    jinja2 compiles, and no decoding clean-up; AutoTokenizer otherwise."""
    directory = Path(path)
    config = directory / "tokenizer_config.json"
    settings = json.loads(config.read_text()) if config.is_file() else {}
    template = settings.get("chat_template")  # a list where the model names several templates
    jinja = directory / "chat_template.jinja"
    two_templates = jinja.is_file() and template not in (None, jinja.read_text())  # transformers chooses
    if jinja.is_file() and not two_templates:
        template = jinja.read_text()
    plain = (not two_templates and isinstance(template, (str, type(None)))
             and not settings.get("clean_up_tokenization_spaces") and not (directory / "chat_template.json").is_file()
             and not (directory / "additional_chat_templates").is_dir())
    if (directory / "tokenizer.json").is_file() and plain:
        import jinja2

        try:
            return FastTokenizer(directory, settings, template, _compile(template) if template else None)
        except jinja2.TemplateSyntaxError:
            pass
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def stop_token_ids(tokenizer: Any) -> list[int]:
    """End of sequence and every end-of-turn token the vocabulary knows: where an answer ends."""
    vocabulary = tokenizer.get_vocab()
    ends = {vocabulary[t] for t in END_OF_TURN_TOKENS if t in vocabulary}
    if tokenizer.eos_token_id is not None:  # some tokenizers define no end of sequence at all
        ends.add(tokenizer.eos_token_id)
    return sorted(ends)


def prompt_ids(tokenizer: Any, messages: Messages | None, text: str | None, model: str) -> list[int]:
    """A chat request through the chat template, or a raw completion prompt as it is."""
    if messages is not None:
        return chat_ids(tokenizer, messages, True, model)
    return list(tokenizer(text)["input_ids"])


def chat_ids(tokenizer: Any, messages: Messages, add_generation_prompt: bool, model: str) -> list[int]:
    if not tokenizer.chat_template:
        raise PersynError(f"{model} has no chat template: give this teacher a prompt_template")
    encoded = tokenizer.apply_chat_template(
        messages, add_generation_prompt=add_generation_prompt, tokenize=True, return_dict=True
    )
    return list(encoded["input_ids"])


def response_tokens(tokenizer: Any, messages: Messages, response: str, max_length: int, model: str) -> tuple[list[int], int]:
    """Token ids of chat(prompt)+response, truncated to max_length, and where the response starts.

    The response is its own tokens plus the end-of-turn token (the student must learn to stop);
    the template's newline after it is not. The prompt must render as a prefix of the whole."""
    prompt = chat_ids(tokenizer, messages, True, model)
    full = chat_ids(tokenizer, messages + [{"role": "assistant", "content": response}], False, model)
    if full[: len(prompt)] != prompt:
        raise PersynError(
            f"{model}: the chat template does not render the prompt as a prefix of prompt+response; "
            "learnability cannot be measured on response tokens only"
        )
    while len(full) > len(prompt) + 1 and not tokenizer.decode(full[-1:]).strip():
        full = full[:-1]
    if len(prompt) >= max_length:
        raise PersynError(f"{model}: prompt of {len(prompt)} tokens exceeds max_length {max_length}")
    return full[:max_length], len(prompt)


def reward_ids(tokenizer: Any, messages: Messages, response: str, max_length: int) -> list[int]:
    """The one rendering of (prompt, response) that every engine feeds a reward model.

    Token ids straight from the chat template: re-tokenising the rendered text would add the
    tokenizer's BOS a second time wherever the template writes one. A model without a template
    gets "role: content" paragraphs. Truncated on the right to max_length tokens."""
    chat = messages + [{"role": "assistant", "content": response}]
    if tokenizer.chat_template:
        ids = tokenizer.apply_chat_template(chat, tokenize=True, return_dict=True)["input_ids"]
    else:
        ids = tokenizer("\n\n".join(f"{m['role']}: {m['content']}" for m in chat))["input_ids"]
    return list(ids)[:max_length]
