"""Chat-template token ids shared by scoring and training: one definition of "the response tokens"."""

from __future__ import annotations

from typing import Any

from persyn.errors import PersynError

Messages = list[dict[str, str]]
END_OF_TURN_TOKENS = ("<|im_end|>", "<end_of_turn>", "<|eot_id|>", "<|endoftext|>")


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
