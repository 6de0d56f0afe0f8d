"""Assemble the personalised dataset: one routed teacher answer per prompt, HF-loadable parquet."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import polars as pl

from persyn.core import layout
from persyn.sources.answers import verified
from persyn.params.config import RouterConfig, release_spelling
from persyn.core.errors import PersynError
from persyn.pipeline.router import combined_reward
from persyn.core.schemas import check_records

def assemble(
    prompts: list[dict[str, Any]],
    routes: dict[str, list[str]],
    generated: dict[str, list[dict[str, Any]]],
    scores: list[dict[str, Any]],
    router: RouterConfig,
    drop_truncated: bool = True,
    extra: Sequence[dict[str, Any]] = (),
    unverified: str = "keep",
    attempts: bool = False,
    source: str = layout.generated("<student>", "{teacher}"),
) -> list[dict[str, Any]]:
    """One record per routed prompt. Where several teachers answered a prompt (the oracle strategy),
    the answer with the best combined reward r is kept; `scores` must then cover every answer.
    With `drop_truncated`, answers cut at max_tokens are left out (a prompt with no other answer
    then has no record). `extra` holds the fallback's answers (attempt 1, 2, ...): the first verified
    attempt is kept; with none verified, the routed answer is kept, or, with unverified = "drop", no
    record is. `attempts` adds each record's attempt (left out at route.fallback = 0, so that such a
    build keeps its bytes). `source` names a teacher's generated answers, {teacher} in it, in errors."""
    by_id = {p["id"]: p for p in prompts}
    known = {(s["id"], s["teacher"]): s for s in scores}
    routed = {(prompt_id, teacher) for teacher, ids in routes.items() for prompt_id in ids}
    candidates: dict[str, list[dict[str, Any]]] = {}
    for teacher, rows in sorted(generated.items()):
        for row in rows:
            if (row["id"], teacher) not in routed:
                raise PersynError(f"{source.format(teacher=teacher)}: record {row['id']}: field 'id': "
                                  f"not routed to {teacher} (stale file?)")
            candidates.setdefault(row["id"], []).append(row)
    missing = sorted(routed - {(row["id"], row["teacher"]) for rows in candidates.values() for row in rows})
    if missing:
        prompt_id, teacher = missing[0]
        raise PersynError(f"{source.format(teacher=teacher)}: record {prompt_id}: routed but not generated")
    if drop_truncated and candidates and all(a["finish_reason"] == "length" for rows in candidates.values() for a in rows):
        raise PersynError(f"{layout.GENERATED}: every routed answer was cut at max_tokens (finish_reason 'length'), "
                          "so no record is left; raise the teachers' max_tokens or set assemble.drop_truncated = false")
    later: dict[str, list[dict[str, Any]]] = {}
    for answer in extra:
        later.setdefault(answer["id"], []).append(answer)
    records = []
    for prompt_id, routed_answers in sorted(candidates.items()):
        prompt = by_id[prompt_id]
        answers = [{**a, "attempt": 0} for a in routed_answers] + sorted(later.get(prompt_id, []), key=lambda a: a["attempt"])
        if drop_truncated:
            answers = [a for a in answers if a["finish_reason"] != "length"]
        for answer in answers:
            answer["quality"] = answer_quality(answer, prompt, known)
        passed = [a for a in answers if a["quality"]]
        if unverified == "drop":
            answers = passed
        if not answers:
            continue
        if len(routed_answers) > 1:  # the oracle: every teacher answered; Generate-then-Select
            row = answers[0] if len(answers) == 1 else best_answer(answers, known, router)
        else:
            row = passed[0] if passed else answers[0]
        score = known.get((prompt_id, row["teacher"]), {})
        quality = row["quality"]
        records.append({
            "id": prompt_id,
            "messages": prompt["messages"] + [{"role": "assistant", "content": row["response"]}],
            "teacher": row["teacher"],
            "model": row["model"],
            "quality": quality,
            "learnability": score.get("learnability"),
            "split": prompt["split"],
            "finish_reason": row["finish_reason"],
            **({"attempt": row["attempt"]} if attempts else {}),
        })
    return records


def answer_quality(answer: dict[str, Any], prompt: dict[str, Any], scores: dict[tuple[str, str], dict[str, Any]]) -> float | None:
    """The scored quality of an answer on S, else its verified quality (None: nothing to check it against)."""
    quality = scores.get((answer["id"], answer["teacher"]), {}).get("quality")
    if quality is None and (prompt["reference"] is not None or prompt.get("verifier")):
        quality = verified(answer["response"], prompt, layout.PROMPTS)
    return quality


def best_answer(answers: list[dict[str, Any]], scores: dict[tuple[str, str], dict[str, Any]],
                router: RouterConfig) -> dict[str, Any]:
    """Generate-then-Select: the answer with the highest r = (1-α)·norm(r_q) + α·norm(r_l)."""
    rows = [scores[(a["id"], a["teacher"])] for a in answers]
    reward = combined_reward(np.array([[r["quality"] for r in rows]]), np.array([[r["learnability"] for r in rows]]),
                             router.alpha, router.normalisation)
    return answers[int(reward[0].argmax())]


def release_name(dataset_name: str, student: str) -> str:
    """One student's dataset: assemble.name and the student, spelt as a GTO artifact name allows."""
    return f"{dataset_name}-{release_spelling(student)}"


def write(records: list[dict[str, Any]], directory: Path, card: str, shard_size: int) -> None:
    """Parquet shards named train-XXXXX-of-YYYYY plus the card (README.md, persyn.pipeline.card.build), loadable
    by datasets.load_dataset(dir)."""
    check_records(records, "dataset_record", str(directory))
    shards = max(1, -(-len(records) // shard_size))
    for index in range(shards):
        chunk = records[index * shard_size: (index + 1) * shard_size]
        pl.DataFrame(chunk, infer_schema_length=None).write_parquet(
            directory / f"train-{index:05d}-of-{shards:05d}.parquet", compression="zstd", statistics=False
        )
    (directory / "README.md").write_text(card)


def read(directory: Path) -> list[dict[str, Any]]:
    """The assembled dataset's records, schema-checked."""
    shards = sorted(directory.glob("train-*.parquet"))
    if not shards:
        raise PersynError(f"{directory}: no train-*.parquet shards (run assemble first)")
    records = [r for shard in shards for r in pl.read_parquet(shard).to_dicts()]
    check_records(records, "dataset_record", str(directory))
    return records


def metrics(records: list[dict[str, Any]], routes: dict[str, list[str]], prompts: list[dict[str, Any]],
            generated: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Facts about the dataset: counts, teacher shares, truncated answers, and the generations the
    strategy needs against Generate-then-Select (N·P). Never counters of the run (generated now,
    reused, cost: runs/*.json), so that the same params give the same bytes whatever the cache held."""
    total = len(records)
    teachers = sorted(routes)
    pool = {p["id"] for p in prompts if p["split"] == "pool"}
    subset_size = sum(p["split"] == "router" for p in prompts)
    per_teacher = {}
    for teacher in teachers:
        mine = [r for r in records if r["teacher"] == teacher]
        checked = [r["quality"] for r in mine if r["quality"] is not None]
        per_teacher[teacher] = {
            "records": len(mine),
            "share": len(mine) / total if total else 0.0,
            "mean_quality": sum(checked) / len(checked) if checked else None,
            "truncated": sum(row["finish_reason"] == "length" for row in generated[teacher]),
        }
    used = len(teachers) * subset_size + sum(len(set(ids) & pool) for ids in routes.values())
    select_all = len(teachers) * (subset_size + len(pool))  # every teacher answers every routed prompt (as plan counts)
    return {
        "records": total,
        "routed_prompts": len({row["id"] for rows in generated.values() for row in rows}),
        "truncated": sum(t["truncated"] for t in per_teacher.values()),
        "teachers": per_teacher,
        "generations": {
            "used": used,
            "generate_then_select": select_all,
            "saved_fraction": 1 - used / select_all if select_all else 0.0,
        },
    }
