"""Reading a final answer out of math text, and checking it against a reference: light (no torch),
so the prompts stage can check every reference before any teacher answers."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from persyn.core.errors import PersynError

NUMBER = r"-?\$?\s?\d[\d,]*(?:\.\d+)?(?:/\d+)?"


def normalise_number(text: str) -> str | None:
    """'1,234.50' → '1234.5', '$7' → '7', '3/4' → '0.75', '7.0' → '7'; None if not a number."""
    cleaned = text.replace(",", "").replace("$", "").replace(" ", "").rstrip(".")
    try:
        if "/" in cleaned:
            numerator, denominator = cleaned.split("/")
            value = Decimal(numerator) / Decimal(denominator)
        else:
            value = Decimal(cleaned)
    except (InvalidOperation, ValueError, ZeroDivisionError):
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def _boxed(text: str) -> str | None:
    """Content of the last \\boxed{...}, with nested braces."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for position in range(begin, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            if depth == 0:
                return text[begin:position]
            depth -= 1
    return None


def extract_answer(text: str) -> str | None:
    """The final answer: \\boxed{}, then '####', then 'the answer is', else the last number."""
    text = re.sub(r"\\d?frac\{(-?\d+)\}\{(\d+)\}", r"\1/\2", text)
    candidates: list[str | None] = [_boxed(text)]
    hashes = re.findall(r"####\s*(" + NUMBER + ")", text)
    candidates.append(hashes[-1] if hashes else None)
    stated = re.findall(r"answer is[:\s]*\**\s*(" + NUMBER + ")", text, flags=re.IGNORECASE)
    candidates.append(stated[-1] if stated else None)
    for candidate in candidates:
        if candidate is not None:
            numbers = re.findall(NUMBER, candidate)
            if numbers:
                return normalise_number(numbers[-1])
    numbers = re.findall(NUMBER, text)
    return normalise_number(numbers[-1]) if numbers else None


def is_correct(response: str, reference: str) -> float:
    """1.0 if the response's final answer equals the reference's, else 0.0."""
    expected = extract_answer(reference)
    if expected is None:
        raise PersynError(f"reference '{reference[:60]}' has no number to check answers against")
    return 1.0 if extract_answer(response) == expected else 0.0


def verified(response: str, prompt: dict[str, Any], source: str) -> float:
    """A response's verified quality (0..1): its family's own verifier where the prompt carries one
    (reasoning-gym, persyn/sources/tasks.py), else its final number against the reference (1/0)."""
    if prompt.get("verifier"):
        from persyn.sources import tasks

        return tasks.verify(response, prompt["verifier"])
    if prompt["reference"] is None:
        raise PersynError(f"{source}: record {prompt['id']}: field 'reference': missing, and quality.kind = 'math' "
                          "checks every answer against it")
    return is_correct(response, prompt["reference"])
