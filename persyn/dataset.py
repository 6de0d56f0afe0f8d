"""Assemble the personalised dataset: one routed teacher answer per prompt, HF-loadable parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from persyn.errors import PersynError
from persyn.rewards import is_correct
from persyn.schemas import check_records

CARD = """---
configs:
- config_name: default
  data_files:
  - split: train
    path: "train-*.parquet"
---
# {name}

A personalised distillation dataset built by persyn (PerSyn, arXiv 2510.10925): every prompt was
routed to the one teacher this student learns from best, and only that teacher answered it.
{records} records; teacher shares: {shares}.
"""


def assemble(
    prompts: list[dict[str, Any]],
    routes: dict[str, list[str]],
    generated: dict[str, list[dict[str, Any]]],
    scores: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Join each routed prompt with its teacher's answer; every routed prompt must have exactly one."""
    by_id = {p["id"]: p for p in prompts}
    known = {(s["id"], s["teacher"]): s for s in scores}
    owner = {prompt_id: teacher for teacher, ids in routes.items() for prompt_id in ids}
    records = []
    for teacher, rows in sorted(generated.items()):
        source = f"data/generated/{teacher}.parquet"
        for row in rows:
            if owner.get(row["id"]) != teacher:
                raise PersynError(f"{source}: record {row['id']}: field 'id': not routed to {teacher} (stale file?)")
            prompt = by_id[row["id"]]
            score = known.get((row["id"], teacher), {})
            quality = score.get("quality")
            if quality is None and prompt["reference"] is not None:
                quality = is_correct(row["response"], prompt["reference"])
            records.append({
                "id": row["id"],
                "messages": prompt["messages"] + [{"role": "assistant", "content": row["response"]}],
                "teacher": teacher,
                "model": row["model"],
                "quality": quality,
                "learnability": score.get("learnability"),
                "split": prompt["split"],
            })
    missing = sorted(set(owner) - {r["id"] for r in records})
    if missing:
        raise PersynError(f"data/generated/{owner[missing[0]]}.parquet: record {missing[0]}: routed but not generated")
    return sorted(records, key=lambda r: r["id"])


def write(records: list[dict[str, Any]], directory: Path, name: str, shard_size: int) -> None:
    """Parquet shards named train-XXXXX-of-YYYYY plus a card, loadable by datasets.load_dataset(dir)."""
    check_records(records, "dataset_record", str(directory))
    shards = max(1, -(-len(records) // shard_size))
    for index in range(shards):
        chunk = records[index * shard_size: (index + 1) * shard_size]
        pl.DataFrame(chunk, infer_schema_length=None).write_parquet(
            directory / f"train-{index:05d}-of-{shards:05d}.parquet", compression="zstd", statistics=False
        )
    counts: dict[str, int] = {}
    for record in records:
        counts[record["teacher"]] = counts.get(record["teacher"], 0) + 1
    shares = ", ".join(f"{t} {n / len(records):.0%}" for t, n in sorted(counts.items())) if records else "none"
    (directory / "README.md").write_text(CARD.format(name=name, records=len(records), shares=shares))


def metrics(records: list[dict[str, Any]], teachers: list[str], subset_size: int,
            generation_stats: dict[str, dict[str, int]]) -> dict[str, Any]:
    """Counts, teacher shares and the generations used against Generate-then-Select (N·P)."""
    total = len(records)
    per_teacher = {}
    for teacher in teachers:
        mine = [r for r in records if r["teacher"] == teacher]
        checked = [r["quality"] for r in mine if r["quality"] is not None]
        per_teacher[teacher] = {
            "records": len(mine),
            "share": len(mine) / total if total else 0.0,
            "mean_quality": sum(checked) / len(checked) if checked else None,
            **generation_stats.get(teacher, {"generated": 0, "reused": 0}),
        }
    routed_outside_subset = sum(r["split"] == "pool" for r in records)
    used = len(teachers) * subset_size + routed_outside_subset
    select_all = len(teachers) * total
    return {
        "records": total,
        "teachers": per_teacher,
        "generations": {
            "persyn": used,
            "generate_then_select": select_all,
            "saved_fraction": 1 - used / select_all if select_all else 0.0,
        },
    }
