"""Prompt sources → one deduplicated, split prompt table.

Sources: jsonl, parquet, a Hugging Face dataset, or the built-in arithmetic generator. Every
prompt gets a stable content-hash id and a seeded split: router (the subset S every teacher
answers), pool (routed to one teacher each) or eval (held out for the student). The shifted eval
set (prompts.shifted_eval_size, persyn/sources/arithmetic_shifted.py) is added beside the source as a
fourth split, eval_shifted, so that the student is also evaluated on phrasings it never trained on.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

from persyn.sources import arithmetic, arithmetic_shifted
from persyn.sources.answers import extract_answer
from persyn.params.config import PromptsConfig
from persyn.core.errors import PersynError

TASK_FIELDS = ("family", "verifier")  # what a reasoning-gym prompt keeps for its verifier (persyn/sources/tasks.py)
Raw = tuple[str, dict[str, Any]]  # (record label for errors, source record)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # control characters but \t \n \r


def normalise(text: str) -> str:
    """The form used for deduplication and ids: case-folded, whitespace collapsed."""
    return re.sub(r"\s+", " ", text).strip().casefold()


def prompt_id(text: str) -> str:
    """A stable id from the normalised prompt text (same prompt, same id, in every run)."""
    return hashlib.sha256(normalise(text).encode("utf-8")).hexdigest()[:16]


def _read_jsonl(path: Path) -> Iterator[Raw]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise PersynError(f"{path}: file not found") from None
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        label = f"line {number}"
        try:
            record = json.loads(line.decode("utf-8"))
        except UnicodeDecodeError as error:
            raise PersynError(f"{path}: {label}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
        except json.JSONDecodeError as error:
            raise PersynError(f"{path}: {label}: not valid JSON ({error.msg}, column {error.colno})") from None
        if not isinstance(record, dict):
            raise PersynError(f"{path}: {label}: expected a JSON object, got {type(record).__name__}")
        yield label, record


def _read_parquet(path: Path) -> Iterator[Raw]:
    import polars as pl

    if not path.is_file():
        raise PersynError(f"{path}: file not found")
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several unrelated types for a bad file
        raise PersynError(f"{path}: not a readable parquet file ({error})") from None
    for index, record in enumerate(frame.iter_rows(named=True)):
        yield f"record {index}", record


def _read_hf(spec: dict[str, str]) -> Iterator[Raw]:
    import datasets

    name = spec["name"]
    try:
        table = datasets.load_dataset(
            name, spec.get("config"), split=spec["split"], revision=spec.get("revision")
        )
    except Exception as error:  # the hub client raises many types; all mean "cannot load this source"
        raise PersynError(f"hf:{name}: cannot load split '{spec['split']}' ({error})") from None
    for index, record in enumerate(table):
        yield f"record {index}", record


def _field(source: str, label: str, record: dict[str, Any], name: str, required: bool, text_only: bool = False) -> str | None:
    """A field as text; numbers become text unless `text_only` (a prompt of 5 is a broken source)."""
    value = record.get(name)
    if value is None:
        if required:
            raise PersynError(f"{source}: {label}: field '{name}': missing")
        return None
    if not text_only and isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise PersynError(f"{source}: {label}: field '{name}': expected text, got {type(value).__name__}")
    if not value.strip():
        raise PersynError(f"{source}: {label}: field '{name}': empty")
    control = CONTROL.search(value)
    if control:
        raise PersynError(f"{source}: {label}: field '{name}': control character U+{ord(control.group()):04X} at "
                          f"character {control.start()} (only newline, tab and carriage return may appear in text)")
    return value


def _prompt(source: str, label: str, record: dict[str, Any], names: str | list[str]) -> str:
    """One field, or several joined by a blank line (Alpaca: instruction, then input): the first is
    required, the others are left out where missing or empty."""
    if isinstance(names, str):
        names = [names]
    first = _field(source, label, record, names[0], required=True, text_only=True)
    rest = [_field(source, label, record, name, False, text_only=True) for name in names[1:]
            if not (record.get(name) is None or (isinstance(record.get(name), str) and not record[name].strip()))]
    return "\n\n".join([str(first), *(str(part) for part in rest)])


def read_source(config: PromptsConfig) -> tuple[str, list[dict[str, str | None]]]:
    """The configured source as [{'prompt', 'reference', 'label'}] plus a name for messages; the
    label ('line 3', 'record 3') is where a record came from, for errors."""
    if config.source == "builtin:arithmetic":
        problems = arithmetic.generate(config.count, config.seed)
        return config.source, [{**p, "label": f"problem {i}"} for i, p in enumerate(problems)]
    if config.source == "reasoning_gym":
        from persyn.sources import tasks

        return config.source, tasks.generate(config.tasks or (), config.count, config.seed)
    raws: Iterable[Raw]
    if config.source == "jsonl":
        source, raws = str(config.path), _read_jsonl(Path(str(config.path)))
    elif config.source == "parquet":
        source, raws = str(config.path), _read_parquet(Path(str(config.path)))
    else:
        source, raws = f"hf:{config.hf['name']}", _read_hf(dict(config.hf or {}))
    prompt_field = config.fields["prompt"]
    reference_field = config.fields.get("reference")
    rows = []
    for label, record in raws:
        prompt = _prompt(source, label, record, prompt_field)
        if len(prompt) > config.max_prompt_chars:
            fields = prompt_field if isinstance(prompt_field, str) else " + ".join(prompt_field)
            raise PersynError(f"{source}: {label}: field '{fields}': {len(prompt)} characters, over prompts.max_prompt_chars "
                              f"= {config.max_prompt_chars} (longer than a model's context): shorten or drop it")
        rows.append({
            "prompt": prompt,
            "reference": _field(source, label, record, reference_field, False) if reference_field else None,
            "label": label,
        })
    return source, rows


def _reference_key(reference: str | None, math: bool) -> str | None:
    """What two references of one prompt must share: under math the answer the checker reads ("#### 72"
    and "72" agree), else the text, case and spaces aside."""
    if reference is None:
        return None
    return extract_answer(reference) if math else normalise(reference)


def build(config: PromptsConfig, require_reference: bool = False) -> list[dict[str, Any]]:
    """Dedupe, cap, id and split the source; records are sorted by id so the output is stable.
    `require_reference` (quality.kind = "math") refuses a prompt without a reference the math checker
    can read here, before any teacher answers it; duplicates must agree on their reference."""
    source, rows = read_source(config)
    reference_field = config.fields.get("reference") or "reference"
    unique: dict[str, dict[str, Any]] = {}
    for row in rows:
        if require_reference and row["reference"] is None:
            raise PersynError(f"{source}: {row['label']}: field '{reference_field}': missing, and quality.kind = "
                              "'math' checks every answer against it")
        if require_reference and extract_answer(row["reference"]) is None:
            raise PersynError(f"{source}: {row['label']}: field '{reference_field}': {row['reference']!r:.40} has no "
                              "number the math checker can read (quality.kind = 'math')")
        first = unique.setdefault(prompt_id(row["prompt"]), row)
        if first is not row and (_reference_key(first["reference"], require_reference)
                                 != _reference_key(row["reference"], require_reference)):
            raise PersynError(
                f"{source}: {first['label']} and {row['label']}: field '{reference_field}': the same prompt "
                f"(after normalising case and spaces) with different references ({first['reference']!r:.40} "
                f"against {row['reference']!r:.40}); keep one")
    kept = list(unique.items())
    if config.count:
        kept = kept[: config.count]
    if len(kept) < config.router_size + config.eval_size + 1:
        raise PersynError(
            f"{source}: {len(kept)} distinct prompts, but prompts.router_size + prompts.eval_size = "
            f"{config.router_size + config.eval_size} and at least one must be left to route"
        )
    order = sorted(key for key, _ in kept)
    random.Random(config.seed).shuffle(order)
    split = {key: "eval" for key in order[: config.eval_size]}
    split.update({key: "router" for key in order[config.eval_size: config.eval_size + config.router_size]})
    split.update({key: "pool" for key in order[config.eval_size + config.router_size:]})
    shifted = _shifted(config, source, dict(kept))
    split.update({key: "eval_shifted" for key in shifted})
    return [
        {
            "id": key,
            "messages": [{"role": "user", "content": row["prompt"]}],
            "reference": row["reference"],
            "split": split[key],
            **{field: row[field] for field in TASK_FIELDS if field in row},
        }
        for key, row in sorted([*kept, *shifted.items()])
    ]


SPLITS = ("router", "pool", "eval", "eval_shifted")


def split_counts(records: list[dict[str, Any]]) -> dict[str, int]:
    """How many prompts each split holds."""
    return {split: sum(r["split"] == split for r in records) for split in SPLITS}


def describe_counts(counts: dict[str, Any]) -> str:
    """The split sizes as `persyn check` and `persyn plan` both print them, so their totals agree."""
    return (f"{sum(counts[split] for split in SPLITS)} prompts: {counts['router']} router subset S, {counts['pool']} "
            f"pool P, {counts['eval']} eval, {counts['eval_shifted']} eval_shifted")


def _shifted(config: PromptsConfig, source: str, taken: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The shifted eval set by id; a problem that is also a source prompt would be trained on, so it
    stops the build rather than being evaluated as unseen."""
    rows = {}
    for number, problem in enumerate(arithmetic_shifted.generate(config.shifted_eval_size, config.seed)):
        key = prompt_id(problem["prompt"])
        if key in taken:
            raise PersynError(f"{source}: {taken[key]['label']}: is shifted eval problem {number} "
                              f"({problem['prompt']!r:.60}); change prompts.seed or drop it from the source")
        rows[key] = {**problem, "label": f"shifted problem {number}"}
    return rows
