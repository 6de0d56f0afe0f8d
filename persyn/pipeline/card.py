"""The dataset card (README.md) that `assemble` writes beside the shards and `persyn release` ships.

One builder for both, so a user of `datasets.load_dataset` and a reader on the Hub see the same
metadata: license (with a pointer to the teachers' own terms when it is "other"), language, tags,
task and size categories, source datasets and configs, then how the data was made and each
teacher's licence. Same params and records, same bytes: nothing in it depends on the clock.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import yaml

from persyn.params.config import Params, PromptsConfig
from persyn.core.errors import PersynError
from persyn.core.models import PACKAGED

SIZES = ("n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B", "1B<n<10B",
         "10B<n<100B", "100B<n<1T", "n>1T")  # the Hub's size_categories
LICENCES = "Teachers and their licences"  # the section license_link points at
LICENSE_NAME = "persyn-teacher-terms"
LICENSE_LINK = "README.md#" + LICENCES.lower().replace(" ", "-")
UNKNOWN = "unknown: see the model's card"
TERMS = {
    "apache-2.0": ("Apache License 2.0", "https://www.apache.org/licenses/LICENSE-2.0"),
    "gemma": ("Gemma Terms of Use", "https://ai.google.dev/gemma/terms"),
}
REQUIRED = ("license", "language", "tags", "task_categories", "size_categories", "pretty_name", "source_datasets",
            "configs")
LICENSE_ID = re.compile(r"^[a-z0-9][a-z0-9.-]*$")  # the Hub's form for a license_name, like my-license-1.0
LANGUAGE = re.compile(r"^[a-z]{2,3}$")  # an ISO 639-1/2/3 code
# huggingface_hub.repocard's header pattern, "exact same regex as in the Hub server"
HEADER = re.compile(r"^(\s*---(?:\r\n|\r|\n))([\S\s]*?)((?:\r\n|\r|\n)---[ \t]*(\r\n|\n|$))")


def size_category(records: int) -> str:
    """The Hugging Face size_categories bucket."""
    for power, label in enumerate(SIZES[:-1], start=3):
        if records < 10 ** power:
            return label
    return SIZES[-1]


def source_dataset(prompts: PromptsConfig) -> str:
    """Where the prompts came from, as the Hub's source_datasets names it."""
    if prompts.source == "hf":
        return (prompts.hf or {})["name"]
    return "reasoning-gym" if prompts.source == "reasoning_gym" else "original"


def teacher_models(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Each teacher's model identity, as its records carry it."""
    return {r["teacher"]: r["model"] for r in sorted(records, key=lambda r: r["id"])}


def teacher_license(model: str) -> str:
    """A model's own licence from its identity: a packaged model's is known, any other's is on its card."""
    kind, _, rest = model.partition(":")
    packaged = PACKAGED.get(re.split(r"[@+]", rest)[0]) if kind == "packaged" else None
    return packaged.license if packaged and packaged.license else UNKNOWN


def licence_row(teacher: str, model: str | None) -> str:
    """A teacher's row in the licences table: its model, licence and where to read the terms (its
    licence's text, or a hub model's card)."""
    if model is None:
        return f"| {teacher} | – | – (no records) | – |"
    licence = teacher_license(model)
    terms = "–"
    if licence in TERMS:
        terms = "[{}]({})".format(*TERMS[licence])
    elif model.startswith("hf:"):
        terms = f"[model card](https://huggingface.co/{model.removeprefix('hf:').split('@')[0]})"
    return f"| {teacher} | `{model}` | {licence} | {terms} |"


def header_of(text: str) -> dict[str, Any]:
    """The card's metadata as the Hub reads it: huggingface_hub's DatasetCard where it is installed,
    else its rules by hand (the Hub's header pattern, a YAML mapping with string keys, no nulls)."""
    try:
        from huggingface_hub import DatasetCard
    except ImportError:
        match = HEADER.search(text)
        data = (yaml.safe_load(match.group(2)) if match else None) or {}
        if not isinstance(data, dict) or not all(isinstance(key, str) for key in data):
            raise ValueError("repo card metadata block should be a dict with string keys")
        return {key: value for key, value in data.items() if value is not None}
    return DatasetCard(text).data.to_dict()


def check(text: str, where: str) -> dict[str, Any]:
    """Read the header back as the Hub does and hold it to the Hub's rules, so that no card the Hub
    would misread is written; returns the metadata."""
    try:
        data = header_of(text)
    except (ValueError, TypeError, yaml.YAMLError) as error:
        raise PersynError(f"{where}: the card's YAML header is not Hub metadata: {' '.join(str(error).split())}")
    missing = [key for key in REQUIRED if not data.get(key)]
    problems = [
        (bool(missing), f"missing {', '.join(missing)}"),
        (not missing and not set(data["size_categories"]) <= set(SIZES),
         f"size_categories {data.get('size_categories')} is not one of the Hub's ({', '.join(SIZES)})"),
        (not missing and not all(LANGUAGE.match(str(code)) for code in data["language"]),
         f"language {data.get('language')} is not a list of ISO 639 codes"),
        (data.get("license") == "other" and not (LICENSE_ID.match(str(data.get("license_name", "")))
                                                 and data.get("license_link")),
         "license 'other' needs a license_name (lowercase, like my-license-1.0) and a license_link"),
    ]
    failed = [message for bad, message in problems if bad]
    if failed:
        raise PersynError(f"{where}: dataset card header: {failed[0]}")
    return data


def build(params: Params, name: str, summary: dict[str, Any], models: dict[str, str], *, title: str = "",
          data_files: str = "train-*.parquet", facts: Sequence[str] = (), extra: dict[str, Any] | None = None,
          footer: str = "") -> str:
    """The card of one student's dataset, checked: `summary` is its dataset metrics (dataset.metrics),
    `models` each teacher's model identity. A release adds its title, where the shards sit, more
    facts for "How it was made", extra header keys and a footer."""
    title = title or name
    licence = params.assemble.license
    header = {
        "license": licence,
        **({"license_name": LICENSE_NAME, "license_link": LICENSE_LINK} if licence == "other" else {}),
        "language": ["en"],
        "tags": ["persyn", "distillation", "synthetic", f"routing-{params.route.strategy.replace(':', '-').lower()}"],
        "task_categories": ["text-generation"],
        "size_categories": [size_category(summary["records"])],
        "pretty_name": title,
        "source_datasets": [source_dataset(params.prompts)],
        "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": data_files}]}],
        **(extra or {}),
    }
    teachers = summary["teachers"]
    rows = "\n".join(
        f"| {t} | `{models.get(t, '–')}` | {v['records']} | {v['share']:.1%} | "
        f"{'–' if v['mean_quality'] is None else round(v['mean_quality'], 3)} |" for t, v in teachers.items())
    licences = "\n".join(licence_row(t, models.get(t)) for t in teachers)
    generations = summary["generations"]
    lines = "\n".join(f"- {fact}" for fact in [
        f"prompts from `{header['source_datasets'][0]}`",
        f"strategy `{params.route.strategy}`, α = {params.router.alpha} (r = (1-α)·quality + α·learnability, "
        f"{params.router.normalisation} within each prompt)",
        f"student `{params.student.model}`",
        f"{summary['records']} records; generations used {generations['used']} against "
        f"{generations['generate_then_select']} for Generate-then-Select",
        *facts,
    ])
    text = f"""---
{yaml.safe_dump(header, sort_keys=False).strip()}
---
# {title}

A personalised distillation dataset built by [persyn](https://arxiv.org/abs/2510.10925) (PerSyn):
a router chose, per prompt, the teacher whose answer the student `{params.student.name}` learns
from best, and only that teacher answered ("Route then Generate").

## How it was made

{lines}

| teacher | model identity | records | share | mean quality |
|---|---|---|---|---|
{rows}

## {LICENCES}

Every answer here was written by one of these teachers, so each teacher's own terms decide what you
may do with its answers; this card's `license: {licence}` does not lift them.

| teacher | model | licence | terms |
|---|---|---|---|
{licences}
""" + (f"\n{footer}\n" if footer else "")
    check(text, f"dataset card of {name}")
    return text
