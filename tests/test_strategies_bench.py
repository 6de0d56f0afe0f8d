"""bench/strategies.py end to end on tiny models: a real DVC queue of 2 strategies × 2 seeds, read
back through `dvc exp show --json` and the DVC cache, then the table; and the table on planted runs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from dvcproject import make_project

from persyn.errors import PersynError
from test_pipeline import INSIDE, params_toml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import strategies as bench  # noqa: E402


def planted(strategy: str, seed: int, trained: list[int], used: int = 30, shifted: list[int] | None = None) -> bench.Run:
    metrics = {"metrics/dataset.json.generations.used": used, "metrics/dataset.json.teachers.a.share": 0.25,
               "metrics/dataset.json.teachers.base.share": 0.75, "metrics/router.json.router.regret": 0.5,
               "metrics/router.json.router.top1": 0.25, "metrics/router.json.best_single.teacher": "a",
               "metrics/router.json.best_single.regret": 0.75, "metrics/router.json.best_single.top1": 0.5,
               "metrics/router.json.random.regret": 1.0, "metrics/router.json.random.top1": 0.5}
    ids = [f"{i:016x}" for i in range(len(trained))]
    shifted_ids = [f"{i + 100:016x}" for i in range(len(shifted or []))]
    by_split = {"eval": dict(zip(ids, map(float, trained)))} | ({"eval_shifted": dict(zip(shifted_ids, map(float, shifted)))}
                                                               if shifted else {})
    return bench.Run(bench.experiment_name(strategy, seed), "0" * 40, strategy, seed, metrics, by_split,
                     {split: dict.fromkeys(scores, 0.0) for split, scores in by_split.items()})


def test_table_on_planted_runs() -> None:
    """persyn right on all 8 prompts, random on none: Δ = −1 exactly, p = 2 / 2^8; the untrained
    student (all wrong) is exactly as far below persyn."""
    runs = [planted("persyn", s, [1] * 8) for s in (0, 1)] + [planted("random", s, [0] * 8, used=40) for s in (0, 1)]
    text = bench.table(runs, *bench.comparison(runs, resamples=200))
    lines = text.splitlines()
    assert lines[2] == ("| untrained student | 2 | 0.000 [0.000, 0.000] | -1.000 [-1.000, -1.000] | 0.0078 | – | – |")
    assert lines[3] == "| persyn | 2 | 1.000 [1.000, 1.000] | – | – | 30 | a 25%, base 75% |"
    assert lines[4] == "| random | 2 | 0.000 [0.000, 0.000] | -1.000 [-1.000, -1.000] | 0.0078 | 40 | a 25%, base 75% |"
    assert "| router | 0.5000 | 0.2500 |" in text and "| best single (a) | 0.7500 | 0.5000 |" in text
    assert "shifted" not in text  # no shifted eval set in these runs: no second table


def test_shifted_table_on_planted_runs() -> None:
    """On the shifted set persyn is right on 1 of 4 prompts in both seeds and random on all 4: Δ = +0.75
    exactly, and the seed-summed differences (0, 2, 2, 2) give the exact sign-flip p = 2 / 2^3; the eval
    table is the one without the shifted set."""
    runs = [planted("persyn", s, [1] * 8, shifted=[1, 0, 0, 0]) for s in (0, 1)] + \
        [planted("random", s, [0] * 8, used=40, shifted=[1, 1, 1, 1]) for s in (0, 1)]
    lines = bench.table(runs, *bench.comparison(runs, resamples=200)).splitlines()
    assert lines[4] == "| random | 2 | 0.000 [0.000, 0.000] | -1.000 [-1.000, -1.000] | 0.0078 | 40 | a 25%, base 75% |"
    shifted = lines[lines.index("| strategy | seeds | shifted accuracy [95% CI] | Δ vs persyn [95% CI] | p |") + 2:]
    assert shifted[0].startswith("| untrained student | 2 | 0.000 [0.000, 0.000] | -0.250 [")
    assert shifted[1].startswith("| persyn | 2 | 0.250 [") and shifted[1].endswith("] | – | – |")
    assert shifted[2].startswith("| random | 2 | 1.000 [1.000, 1.000] | +0.750 [") and shifted[2].endswith(" | 0.25 |")


def test_results_file_is_what_the_report_reads(tmp_path: Path) -> None:
    """The JSON the bench writes passes `persyn report --strategies`' reader with the table's numbers."""
    from persyn.report.gather import read_strategies

    runs = [planted("persyn", s, [1] * 8) for s in (0, 1)] + [planted("random", s, [0] * 8, used=40) for s in (0, 1)]
    found = bench.results(runs, bench.compare(runs, resamples=200), "persyn", "python bench/strategies.py")
    bench.write_results(tmp_path / "results.json", found)
    read = read_strategies(tmp_path / "results.json")
    assert [r["strategy"] for r in read["strategies"]] == ["untrained student", "persyn", "random"]
    assert read["prompts"] == 8 and read["strategies"][2]["generations_used"] == 40
    assert read["strategies"][2]["difference"] == {"mean": -1.0, "low": -1.0, "high": -1.0, "p_value": 2 / 2 ** 8}
    assert "difference" not in read["strategies"][1]
    assert "eval_shifted" not in read  # no shifted eval set in these runs


def test_a_results_document_that_breaks_its_contract_is_not_written(tmp_path: Path) -> None:
    """The schema (a missing key) and what it cannot say (a mean outside its interval), before any byte."""
    runs = [planted("persyn", s, [1] * 8) for s in (0, 1)] + [planted("random", s, [0] * 8) for s in (0, 1)]
    found = bench.results(runs, bench.compare(runs, resamples=200), "persyn", "python bench/strategies.py")
    outside = json.loads(json.dumps(found))
    outside["strategies"][1]["mean"] = 2.0
    missing = json.loads(json.dumps(found))
    del missing["strategies"][0]["low"]
    for broken, message in ((outside, "record 1: field 'mean': 2.0 is outside its interval"), (missing, "low")):
        with pytest.raises(PersynError, match=message):
            bench.write_results(tmp_path / "results.json", broken)
        assert not (tmp_path / "results.json").exists()


def test_results_file_carries_the_shifted_eval_set() -> None:
    runs = [planted("persyn", s, [1] * 8, shifted=[1, 0, 0, 0]) for s in (0, 1)] + \
        [planted("random", s, [0] * 8, shifted=[1, 1, 1, 1]) for s in (0, 1)]
    shifted = bench.compare(runs, resamples=200, split="eval_shifted")
    found = bench.results(runs, bench.compare(runs, resamples=200), "persyn", "python bench/strategies.py", shifted)
    assert found["prompts"] == 8 and found["eval_shifted"]["prompts"] == 4
    rows = {r["strategy"]: r for r in found["eval_shifted"]["strategies"]}
    assert rows["random"]["mean"] == 1.0 and rows["random"]["difference"]["mean"] == 0.75
    assert rows["random"]["difference"]["p_value"] == 2 / 2 ** 3 and rows["persyn"]["mean"] == 0.25


def test_power_note_on_planted_runs() -> None:
    """Differences of exactly ±1 on half the prompts, identical in both seeds: sd = sqrt(8/7 · 0.5)
    (ddof 1 over 8 prompts), ρ = 1, no seed noise; the prompts needed follow stats.prompts_needed."""
    persyn = [planted("persyn", s, [1, 1, 1, 1, 0, 0, 0, 0]) for s in (0, 1)]
    random = [planted("random", s, [0, 0, 1, 1, 1, 1, 0, 0]) for s in (0, 1)]
    note = bench.power_note(persyn + random)
    sd = (8 / 7 * 0.5) ** 0.5
    needed = bench.stats.prompts_needed(bench.stats.Design(sd, 1.0, 0.0), 0.05, seeds=2)
    assert f"| random | {sd:.3f} | 1.00 | 0.000 | " in note and note.endswith(f" | {needed} |")


def test_comparison_refuses_unpaired_runs() -> None:
    with pytest.raises(ValueError, match="different seeds"):
        bench.comparison([planted("persyn", 0, [1, 0]), planted("random", 1, [1, 0])], resamples=10)
    with pytest.raises(ValueError, match="different eval prompts"):
        bench.comparison([planted("persyn", 0, [1, 0]), planted("random", 0, [1, 0, 1])], resamples=10)


def test_earlier_seeds_come_from_the_experiment_names() -> None:
    """--into checks the new arms' seeds against these before queuing anything."""
    names = {bench.experiment_name(label, seed): label for label in ("persyn", "fixed:a", "tie-0") for seed in (2, 0, 11)}
    assert bench.earlier_seeds(names) == [0, 2, 11]


def test_arms_from_strategies_and_variants() -> None:
    arms = bench.arms_of(["persyn", "fixed:a"], [["budget-80", "route.budget.amount=10", "route.budget.unit=tokens"]])
    assert arms == [("persyn", ["route.strategy=persyn"]), ("fixed:a", ["route.strategy=fixed:a"]),
                    ("budget-80", ["route.budget.amount=10", "route.budget.unit=tokens"])]
    with pytest.raises(SystemExit, match="KEY=VALUE"):
        bench.arms_of([], [["no-overrides"]])
    with pytest.raises(SystemExit, match="must differ"):
        bench.arms_of(["persyn"], [["persyn", "route.fallback=1"]])


def test_extra_columns_are_means_over_seeds() -> None:
    runs = [planted("persyn", s, [1, 0]) for s in (0, 1)]
    runs[0].metrics["metrics/dataset.json.records"], runs[1].metrics["metrics/dataset.json.records"] = 10, 13
    extra = ("metrics/dataset.json.records",)
    lines = bench.table(runs, *bench.comparison(runs, resamples=10, extra=extra), extra=extra).splitlines()
    assert lines[0].endswith(" | records |") and lines[3].endswith(" | 11.5 |") and lines[2].endswith(" | – |")


def test_default_strategies_cover_every_teacher() -> None:
    assert bench.strategies(["smol", "qwen"]) == ["persyn", "strongest", "random", "mix", "car", "fixed:qwen",
                                                  "fixed:smol", "oracle"]


@pytest.mark.slow
def test_queue_two_strategies_two_seeds(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", tmp_path / "cache", params_toml(INSIDE),
                           {name: tiny_models[name] for name in INSIDE})
    bench.build_baseline(project.path, project.env)
    arms = bench.arms_of(["persyn"], [["fallback-1", "route.fallback=1"]])
    names = bench.queue(project.path, project.env, arms, [0, 1])
    assert list(names) == ["persyn-s0", "persyn-s1", "fallback-1-s0", "fallback-1-s1"]
    assert set(bench.states(project.path, project.env)) >= set(names)  # queued, visible to dvc exp show
    bench.run_queue(project.path, project.env, list(names), jobs=1)
    runs = bench.collect(project.path, project.env, names, "student")
    assert [(r.strategy, r.seed) for r in runs] == [("persyn", 0), ("persyn", 1), ("fallback-1", 0), ("fallback-1", 1)]
    for run in runs:  # each row is the experiment's own evaluation: its predictions agree with its metrics
        assert len(run.trained["eval"]) == 4 and np.mean(list(run.trained["eval"].values())) == pytest.approx(
            run.metrics["metrics/eval.json.trained.accuracy"])
        assert len(run.trained["eval_shifted"]) == 3 and np.mean(list(run.trained["eval_shifted"].values())) == \
            pytest.approx(run.metrics["metrics/eval.json.eval_shifted.trained.accuracy"])
        assert run.metrics["params.toml.route.seed"] == run.seed
    assert [r.metrics.get("params.toml.route.fallback") for r in runs] == [None, None, 1, 1]  # the variant's override
    assert [r.metrics.get("metrics/dataset.json.fallback.attempts") for r in runs] == [None, None, 1, 1]
    extra = ("metrics/dataset.json.fallback.attempts",)
    text = bench.table(runs, *bench.comparison(runs, resamples=200, extra=extra), extra=extra)
    assert text.splitlines()[3].startswith("| persyn | 2 | ") and text.splitlines()[4].startswith("| fallback-1 | 2 | ")
    assert text.splitlines()[3].endswith(" | – |") and text.splitlines()[4].endswith(" | 1 |")
    assert "| router |" in text and "| strategy | seeds | shifted accuracy [95% CI] |" in text
    assert "| fallback-1 | " in bench.power_note(runs)
