"""persyn report on planted artifacts (a real router fitted on them), on real DVC experiments, and in
a real headless browser."""

from __future__ import annotations

import hashlib
import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from persyn import cli, report
from persyn.core import stats
from persyn.params import config
from persyn.pipeline import dataset, router, sharing
from persyn.core.errors import PersynError
from persyn.core.io import read_parquet, write_json, write_parquet
from persyn.report import sections

TEACHERS = ["gemma", "qwen", "smol"]
ATTACK = "<script>alert(1)</script>"
PLOTS = {"shares", "quality-histogram", "learnability-histogram", "router-regret", "router-top1", "calibration",
         "sweep-accuracy", "sweep-regret", "strategies", "strategies-transfer", "cost-answers", "eval-students"}
OPTIONAL_PLOTS = {"sweep-accuracy", "sweep-regret", "strategies", "strategies-transfer"}  # need experiments, or --strategies
PARAMS = """
[prompts]
source = "builtin:arithmetic"
count = 40
seed = 0
router_size = 24
eval_size = 8

[embed]
model = "local:models/encoder"

[generation]

[teachers.gemma]
model = "local:models/gemma"
prompt_template = "Question: {prompt}\\nAnswer:"

[teachers.qwen]
model = "local:models/qwen"

[teachers.smol]
model = "local:models/smol"
self_distillation = true

[students.smol]
model = "local:models/smol"

[quality]
kind = "math"

[router]
alpha = 0.4
normalisation = "zscore"
tie_margin = 0.1
epochs = 150
lr = 0.05
validation_fraction = 0.25
seed = 0

[route]
strategy = "persyn"

[assemble]
name = "planted-math"

[train]

[eval]
"""


def usage(requests: int, k: int) -> dict:
    return {"requests": requests, "prompt_tokens": 40 * requests + k, "completion_tokens": 20 * requests + k,
            "retries": 0, "cost_usd": 0.0005 * requests, "timeouts": 0}


def plant(root: Path) -> dict:
    """A built workspace: prompts, embeddings, answers and scores on S, a router fitted on them, routes,
    the dataset and its metrics. In cluster k (= i mod 3) teacher k is right and easiest to learn."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "params.toml").write_text(PARAMS)
    params = config.load(root / "params.toml", models_here=False)
    split = ["router"] * 24 + ["pool"] * 8 + ["eval"] * 8
    ids = [f"{i + 1:016x}" for i in range(40)]
    prompts = [{"id": ids[i], "messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
                "reference": str(2 * i), "split": split[i]} for i in range(40)]
    write_parquet(root / "data/prompts.parquet", prompts, "prompt")
    rng = np.random.default_rng(0)
    vectors = np.eye(3, 8)[[i % 3 for i in range(40)]] * 3 + rng.normal(0, 0.5, (40, 8))
    write_parquet(root / "data/embeddings.parquet", [{"id": ids[i], "embedding": vectors[i].tolist()} for i in range(40)],
                  "embedding")
    scores, answers, sampled = [], {}, {}
    for k, t in enumerate(TEACHERS):
        rows, sample = [], []
        for i in range(24):
            right = k == i % 3 or (i + k) % 4 == 0
            answer = f"{i} + {i} = {2 * i if right else 2 * i + 1}. The answer is {2 * i if right else 2 * i + 1}."
            if t == "smol":
                answer = f"{ATTACK} {i} | {i}\n{answer}"
            sample.append({"id": ids[i], "teacher": t, "model": f"local:models/{t}@sha256:{k:064x}",
                           "response": answer, "finish_reason": "stop", "completion_tokens": 20,
                           "request": hashlib.sha256(f"{t}{i}".encode()).hexdigest()})
            rows.append({"id": ids[i], "teacher": t, "quality": float(right),
                         "learnability": -1.5 + 0.6 * (k == i % 3) - 0.1 * ((7 * i + k) % 5),
                         "requests": [hashlib.sha256(f"score{t}{i}".encode()).hexdigest()]})
        write_parquet(root / f"data/sample/{t}.parquet", sample, "generation")
        sampled[t] = sample
        write_parquet(root / f"data/scores/smol/{t}.parquet", rows, "score")
        scores += rows
        answers[t] = {r["id"]: r["response"] for r in sample}
    embeddings = {ids[i]: vectors[i].astype(np.float32) for i in range(40)}
    fitted = router.fit(scores, embeddings, TEACHERS, params.router)
    (root / "data/router/smol").mkdir(parents=True)
    router.save(fitted, root / "data/router/smol", params.router, 8)
    write_json(root / "metrics/smol/router.json", fitted.metrics, "router_metrics")

    routed = fitted.routing.route(vectors[:32].astype(np.float32))
    by_score = {(s["id"], s["teacher"]): s for s in scores}
    records, teachers, spent, from_s = [], {}, {}, {}
    for k, t in enumerate(TEACHERS):
        mine = [i for i in range(32) if routed[i] == k]
        in_s = [i for i in mine if i < 24]
        fresh = {"teacher": t, "model": f"local:models/{t}@sha256:{k:064x}", "finish_reason": "stop", "completion_tokens": 8}
        write_parquet(root / f"data/generated/smol/{t}.parquet",
                      [sampled[t][i] if i < 24 else {**fresh, "id": ids[i], "response": f"The answer is {2 * i}.",
                                                     "request": hashlib.sha256(f"{t}{i}".encode()).hexdigest()}
                       for i in mine], "generation")
        spent[t] = [usage(24, k), usage(len(mine) - len(in_s), k)]
        from_s[t] = len(in_s)
        write_json(root / f"runs/sample@{t}.json", {"stage": f"sample@{t}", "generated": 24, "reused": 0,
                                                   "usage": spent[t][0], "finished": "-"}, "run_log")
        write_json(root / f"runs/generate@smol-{t}.json", {"stage": f"generate@smol-{t}", "generated": len(mine) - len(in_s),
                                                     "reused": len(in_s), "usage": spent[t][1], "finished": "-"}, "run_log")
        for i in mine:
            score = by_score.get((ids[i], t), {})
            records.append({"id": ids[i], "messages": prompts[i]["messages"] + [
                {"role": "assistant", "content": answers[t].get(ids[i], f"The answer is {2 * i}.")}],
                "teacher": t, "model": f"local:models/{t}@sha256:{k:064x}", "quality": score.get("quality"),
                "learnability": score.get("learnability"), "split": split[i], "finish_reason": "stop"})
        checked = [r["quality"] for r in records if r["teacher"] == t and r["quality"] is not None]
        teachers[t] = {"records": len(mine), "share": len(mine) / 32, "mean_quality": sum(checked) / len(checked)
                       if checked else None, "truncated": 0}
    (root / "data/dataset/smol").mkdir(parents=True)
    dataset.write(sorted(records, key=lambda r: r["id"]), root / "data/dataset/smol", "planted-math", 5000)
    built = {"records": 32, "routed_prompts": 32, "truncated": 0, "teachers": teachers,
             "generations": {"used": 80, "generate_then_select": 96, "saved_fraction": 1 - 80 / 96}}
    write_json(root / "metrics/smol/dataset.json", built, "dataset_metrics")
    evaluation = {"trained": {"accuracy": 0.375, "prompts": 8}, "untrained": {"accuracy": 0.125, "prompts": 8}}
    write_json(root / "metrics/smol/eval.json", evaluation, "eval_metrics")
    # the trained student right on 3 of the 8 eval prompts, the untrained one on the first of them only
    write_parquet(root / "data/eval/smol/predictions.parquet",
                  [{"id": ids[i], "split": "eval", "trained": "-", "untrained": "-", "trained_score": float(i < 35),
                    "untrained_score": float(i == 32), "requests": [f"{i:064x}", f"{i + 1:064x}"]} for i in range(32, 40)],
                  "prediction")
    return {"router": fitted.metrics, "dataset": built, "spent": spent, "from_subset": from_s}


def render(root: Path, out: Path, strategies: Path | None = None) -> tuple[str, str]:
    report.write(root, out, "planted workspace", {}, strategies)
    return (out / "index.html").read_text(), (out / "report.md").read_text()


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_markdown_shows_the_planted_metrics_and_the_page_every_plot(tmp_path: Path) -> None:
    planted = plant(tmp_path / "ws")
    page, markdown = render(tmp_path / "ws", tmp_path / "out")
    for row in ("| generations used | 80 |", "| Generate-then-Select would use | 96 |", "| saved | 16.7% |",
                "| router.alpha | 0.4 |", "| gemma | local:models/gemma@sha256:" + "0" * 64 + " |",
                "| trained | eval | 8 | 0.3750 | – |", "| untrained | eval | 8 | 0.1250 | – |"):
        assert row in markdown, row
    for t, v in planted["dataset"]["teachers"].items():
        assert f"| {t} | {v['records']} | {v['share']:.1%} | {v['mean_quality']:.4f} |" in markdown
    metrics = planted["router"]
    assert f"| router | {metrics['router']['regret']:.4f} | {metrics['router']['top1']:.4f} |" in markdown
    best = metrics["best_single"]
    assert f"| best single ({best['teacher']}) | {best['regret']:.4f} | {best['top1']:.4f} |" in markdown
    assert f"| random | {metrics['random']['regret']:.4f} | {metrics['random']['top1']:.4f} |" in markdown
    routed = section(markdown, "4. Router: regret and calibration")
    assert "Calibration on the validation prompts (the held-out ids saved with the router)" in routed
    assert f"| validation (n={metrics['prompts']}) |" in routed and "| all of S (n=24) |" in routed
    assert "refitted on all 24 prompts of S" in routed
    cost = section(markdown, "7. Cost")
    for t, (sampled, routed) in planted["spent"].items():
        tokens = [sum(u[key] for u in (sampled, routed)) for key in ("prompt_tokens", "completion_tokens", "cost_usd")]
        assert f"| {tokens[0]} | {tokens[1]} | {tokens[2]:.4f} |" in cost, t
        assert f" | {planted['from_subset'][t]} | {tokens[0]} |" in cost, t  # from S: the routed answers that were S's
    assert "no experiments yet" in section(markdown, "5. α sweep across experiments")
    rows = [line for line in section(markdown, "9. Sample records per teacher").splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + sections.SAMPLES and rows[0] == "| prompt | gemma | qwen | smol |"
    assert page.count('<figure class="plot"') == len(PLOTS - OPTIONAL_PLOTS)
    assert render(tmp_path / "ws", tmp_path / "again") == (page, markdown)  # same artifacts, same bytes


def second_student(root: Path) -> None:
    """The planted build with a student `other` beside smol: the same routed dataset and router, and an
    evaluation where the trained student is right on every eval prompt and the untrained one on none."""
    params = root / "params.toml"
    params.write_text(params.read_text().replace("[quality]", '[students.other]\nmodel = "local:models/qwen"\n\n[quality]')
                      .replace('model = "local:models/qwen"\n', 'model = "local:models/qwen"\nself_distillation = true\n', 1))
    for kind in ("data/scores", "data/router", "data/dataset", "data/generated", "metrics"):
        shutil.copytree(root / kind / "smol", root / kind / "other")
    for log in (root / "runs").glob("generate@smol-*.json"):
        shutil.copy(log, root / "runs" / log.name.replace("@smol-", "@other-"))
    predictions = read_parquet(root / "data/eval/smol/predictions.parquet", "prediction")
    write_parquet(root / "data/eval/other/predictions.parquet",
                  [{**r, "trained_score": 1.0, "untrained_score": 0.0} for r in predictions], "prediction")
    routes = {s: {t: {r["id"] for r in read_parquet(root / f"data/dataset/{s}/train-00000-of-00001.parquet",
                                                      "dataset_record") if r["teacher"] == t} for t in TEACHERS}
              for s in ("other", "smol")}
    splits = {p["id"]: p["split"] for p in read_parquet(root / "data/prompts.parquet", "prompt")}
    write_json(root / "metrics/sharing.json", sharing.summary(routes, splits, list(TEACHERS)), "sharing_metrics")


def test_two_students_side_by_side(tmp_path: Path) -> None:
    planted = plant(tmp_path)
    second_student(tmp_path)
    page, markdown = render(tmp_path, tmp_path / "out")
    compared = section(markdown, "Students side by side")
    shares = " | ".join(f"{v['share']:.1%}" for _, v in sorted(planted["dataset"]["teachers"].items()))
    regret = planted["router"]["router"]["regret"]
    assert f"| other | local:models/qwen | {shares} | {regret:.4f} (best single " in compared
    assert f"| smol | local:models/smol | {shares} | {regret:.4f} (best single " in compared
    assert "| 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | +1.000 [+1.000, +1.000], p = " in compared
    assert "| 0.375 [" in compared and "| 0.125 [" in compared
    # the same 8 pool prompts routed alike by both students: each generated once
    assert "24 prompts) once for all 2 students" in compared and "80 generations in this build against 160" in compared
    assert markdown.index("## Students side by side") < markdown.index("## other: 1. Build summary") \
        < markdown.index("## smol: 1. Build summary") < markdown.index("## 6. Strategy comparison")
    for plot in ("students-eval", "other-eval-students", "smol-eval-students", "smol-shares", "other-calibration"):
        assert f'<figure class="plot" id="{plot}">' in page, plot
    assert 'id="smol-eval"' in page and 'id="eval-students"' not in page


def test_calibration_reads_the_held_out_ids_saved_with_the_router(tmp_path: Path) -> None:
    """A changed router.seed would redraw another split: the report still shows the saved one; ids
    that do not reproduce metrics/router.json are not called held out."""
    planted = plant(tmp_path / "ws")
    (tmp_path / "ws/params.toml").write_text(PARAMS.replace("seed = 0\n\n[route]", "seed = 5\n\n[route]"))
    routed = section(render(tmp_path / "ws", tmp_path / "out")[1], "4. Router: regret and calibration")
    assert f"| validation (n={planted['router']['prompts']}) |" in routed
    meta = json.loads((tmp_path / "ws/data/router/smol/router.json").read_text())
    held = set(meta["held_out_ids"])
    meta["held_out_ids"] = [f"{i + 1:016x}" for i in range(24) if f"{i + 1:016x}" not in held][:len(held)]
    write_json(tmp_path / "ws/data/router/smol/router.json", meta, "router_model")
    routed = section(render(tmp_path / "ws", tmp_path / "again")[1], "4. Router: regret and calibration")
    assert "do not reproduce metrics/smol/router.json" in routed and "| validation (n=" not in routed


def test_the_router_view_reads_an_lm_router(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """router.head = "lm": the report routes S's prompt texts through the fine-tuned router (no embeddings)."""
    from dataclasses import replace

    from persyn.pipeline import lm_router

    plant(tmp_path / "ws")
    root = tmp_path / "ws"
    params = config.load(root / "params.toml", models_here=False)
    settings = replace(params.router, head="lm", backbone=f"local:{tiny_models['encoder']}", lm_epochs=1, lm_lr=1e-3)
    scores = [r for t in TEACHERS for r in read_parquet(root / f"data/scores/smol/{t}.parquet", "score")]
    texts = {p["id"]: lm_router.prompt_text(p) for p in read_parquet(root / "data/prompts.parquet", "prompt")}
    fitted = lm_router.fit(scores, texts, TEACHERS, settings)
    shutil.rmtree(root / "data/router/smol")
    (root / "data/router/smol").mkdir()
    router.save(fitted, root / "data/router/smol", settings, fitted.routing.dimension)
    write_json(root / "metrics/smol/router.json", fitted.metrics, "router_metrics")
    (root / "data/embeddings.parquet").unlink()  # an lm router reads none
    routed = section(render(root, tmp_path / "out")[1], "4. Router: regret and calibration")
    assert "missing input" not in routed
    assert f"| validation (n={fitted.metrics['prompts']}) |" in routed  # the held-out fit reproduces its metrics


def test_the_shifted_eval_set_has_its_own_rows_and_gain(tmp_path: Path) -> None:
    """Four shifted prompts, the trained student right on none and the untrained on one: their rows,
    and the gain on them (−0.25) beside the eval split's (+0.25), in one chart."""
    plant(tmp_path / "ws")
    root = tmp_path / "ws"
    evaluation = json.loads((root / "metrics/smol/eval.json").read_text())
    evaluation["eval_shifted"] = {"trained": {"accuracy": 0.0, "prompts": 4}, "untrained": {"accuracy": 0.25, "prompts": 4}}
    write_json(root / "metrics/smol/eval.json", evaluation, "eval_metrics")
    rows = read_parquet(root / "data/eval/smol/predictions.parquet", "prediction")
    rows += [{"id": f"{i:016x}", "split": "eval_shifted", "trained": "-", "untrained": "-", "trained_score": 0.0,
              "untrained_score": float(i == 100), "requests": [f"{i:064x}", f"{i + 1:064x}"]} for i in range(100, 104)]
    write_parquet(root / "data/eval/smol/predictions.parquet", rows, "prediction")
    page, markdown = render(root, tmp_path / "out")
    found = section(markdown, "8. Eval accuracy")
    assert "| trained | eval_shifted | 4 | 0.0000 | – |" in found and "| untrained | eval_shifted | 4 | 0.2500 | – |" in found
    assert "of the 8 eval and 4 shifted prompts" in found
    assert "Trained − untrained: +0.2500 [" in found and "generator never writes): -0.2500 [" in found
    assert page.count('<figure class="plot"') == len(PLOTS - OPTIONAL_PLOTS)  # the shifted students join the eval chart


def test_missing_inputs_name_the_stage_to_run(tmp_path: Path) -> None:
    plant(tmp_path)
    (tmp_path / "metrics/smol/eval.json").unlink()
    shutil.rmtree(tmp_path / "data/router/smol")
    for log in (tmp_path / "runs").glob("*.json"):  # a run from before usage was recorded
        write_json(log, {k: v for k, v in json.loads(log.read_text()).items() if k != "usage"})
    page, markdown = render(tmp_path, tmp_path / "out")
    assert section(markdown, "8. Eval accuracy").strip() == \
        "missing input: metrics/smol/eval.json is not in this workspace (run dvc repro evaluate, or dvc pull)"
    router = section(markdown, "4. Router: regret and calibration")  # its table is there: metrics/ is in git
    assert "| router |" in router and "not built" not in router
    assert router.strip().endswith("missing input: data/router/smol is not in this workspace "
                                   "(run dvc repro fit_router, or dvc pull)")
    assert section(markdown, "9. Sample records per teacher").strip() == \
        "missing input: data/router/smol is not in this workspace (run dvc repro fit_router, or dvc pull)"
    assert "no usage recorded" in section(markdown, "7. Cost") and "cost (USD)" not in markdown
    assert '<p class="missing">missing input: metrics/smol/eval.json is not in this workspace' in page
    assert 'id="eval-students"' not in page and 'id="calibration"' not in page and 'id="shares"' in page


def figure(page: str, plot_id: str) -> str:
    """The <figure> of one plot in a page."""
    start = page.index(f'<figure class="plot" id="{plot_id}">')
    return page[start:page.index("</figure>", start)]


def test_eval_accuracy_carries_bootstrap_intervals_and_the_paired_gain(tmp_path: Path) -> None:
    plant(tmp_path)
    page, markdown = render(tmp_path, tmp_path / "out")
    trained, untrained = stats.mean_ci([1.0] * 3 + [0.0] * 5), stats.mean_ci([1.0] + [0.0] * 7)
    assert (trained.estimate, untrained.estimate) == (0.375, 0.125) and trained.low < 0.375 < trained.high
    # two prompts right only after training, none only before: the exact two-sided sign-flip p is 2/4
    assert "Trained − untrained: +0.2500 [" in markdown and "p = 0.5 (sign-flip test over prompts, exact)" in markdown
    drawn = figure(page, "eval-students")
    for name, found in (("trained", trained), ("untrained", untrained)):
        assert f"{found.estimate:.3f} [{found.low:.3f}, {found.high:.3f}]</text>" in drawn, name


PLANTED_STRATEGIES = [("untrained student", 0.09, 0.06, 0.12), ("persyn", 0.42, 0.38, 0.46),
                      ("random", 0.35, 0.30, 0.40), ("fixed:gemma", 0.31, 0.27, 0.36)]


PLANTED_SHIFTED = [("untrained student", 0.05, 0.03, 0.07), ("persyn", 0.12, 0.09, 0.15),
                   ("random", 0.13, 0.10, 0.16), ("fixed:gemma", 0.11, 0.08, 0.14)]


def plant_strategies(path: Path) -> Path:
    rows = [{"strategy": name, "draws": 5, "mean": mean, "low": low, "high": high} for name, mean, low, high
            in PLANTED_STRATEGIES]
    rows[1].update(generations_used=900, records=240.0, verified_records=120.0)
    rows[2]["difference"] = {"mean": -0.07, "low": -0.11, "high": -0.03, "p_value": 0.0012, "holm_p": 0.0036,
                             "tost_p": 0.9, "mde": 0.05, "verdict": "worse"}
    shifted = [{"strategy": name, "draws": 5, "mean": mean, "low": low, "high": high} for name, mean, low, high
               in PLANTED_SHIFTED]
    shifted[2]["difference"] = {"mean": 0.01, "low": -0.04, "high": 0.06, "p_value": 0.71}
    write_json(path, {"metric": "accuracy", "prompts": 500, "reference": "persyn", "strategies": rows,
                      "command": "python bench/strategies.py --draws 5",
                      "design": {"draws": 5, "margin": 0.03, "alpha": 0.05},
                      "positive_control": {"arm": "gold", "against": "strongest", "mean": 0.02, "low": -0.03,
                                           "high": 0.07, "p_value": 0.42, "passed": False},
                      "transfer": {"prompts": 600, "families": ["lcm"], "strategies": shifted}})
    return path


def drawn_at(svg: str, role: str) -> dict[str, list[float]]:
    """Label → the x coordinates Vega drew a mark of `role` at: a point's centre, an error bar's two ends."""
    found: dict[str, list[float]] = {}
    pattern = rf'aria-label="[^"]*label: ([^;"]+)[^"]*" role="graphics-symbol" aria-roledescription="{role}" ' \
              r'transform="translate\(([\d.]+),[\d.]+\)"(?: x2="([\d.]+)")?'
    for label, x, length in re.findall(pattern, svg):
        found[html.unescape(label)] = [float(x)] + ([float(x) + float(length)] if length else [])
    return found


def test_strategy_comparison_draws_the_planted_intervals(tmp_path: Path) -> None:
    plant(tmp_path)
    page, markdown = render(tmp_path, tmp_path / "out", plant_strategies(tmp_path / "strategies.json"))
    table = section(markdown, "6. Strategy comparison")
    assert "4 arms on the same 500 eval prompts, from strategies.json (python bench/strategies.py" in table
    assert "beyond ±0.03" in table
    assert "Positive control, gold − strongest: +0.020 [-0.030, +0.070], p 0.42: failed" in table
    assert "| persyn | 5 | 0.420 [0.380, 0.460] | – | – | – | 240 (120) | 900 |" in table
    assert "| random | 5 | 0.350 [0.300, 0.400] | -0.070 [-0.110, -0.030] | 0.0036 | worse | – | – |" in table
    assert "on the 600 transfer prompts no arm trains on" in table and "and lcm, left out of training)" in table
    assert "| random | 5 | 0.130 [0.100, 0.160] | +0.010 [-0.040, +0.060] | 0.71 | – | – | – |" in table
    shifted = drawn_at(figure(page, "strategies-transfer"), "point")
    assert list(shifted) == [name for name, *_ in PLANTED_SHIFTED]
    drawn = figure(page, "strategies")
    points, bars = drawn_at(drawn, "point"), drawn_at(drawn, "errorbar")
    assert list(points) == list(bars) == [name for name, *_ in PLANTED_STRATEGIES]  # top to bottom, as given
    # on the 0–1 accuracy axis every mark sits at one pixels-per-unit scale times its planted number
    scale = points["persyn"][0] / 0.42
    for name, mean, low, high in PLANTED_STRATEGIES:
        assert points[name][0] == pytest.approx(scale * mean, abs=0.6), name
        assert bars[name] == pytest.approx([scale * low, scale * high], abs=0.6), name
    assert render(tmp_path, tmp_path / "again", tmp_path / "strategies.json") == (page, markdown)


@pytest.mark.parametrize("change, message", [
    (lambda r: r["strategies"][1].update(mean=0.5), "strategies.json: record 1: field 'mean': 0.5 is outside its "
                                                    "interval [0.38, 0.46]"),
    (lambda r: r["strategies"][2]["difference"].update(high=-0.09), "record 2: field 'difference.mean': -0.07 is outside"),
    (lambda r: r["strategies"][3].update(strategy="persyn"), "record 3: field 'strategy': 'persyn' appears twice"),
    (lambda r: r["strategies"][0].update(colour="red"), "strategies.json: strategies.0.colour: unknown key"),
    (lambda r: r["strategies"][0].pop("low"), "strategies.json: strategies.0.low: missing"),
    (lambda r: r["transfer"]["strategies"][3].update(strategy="random"),
     "record transfer 3: field 'strategy': 'random' appears twice"),
    (lambda r: r["transfer"]["strategies"][1].update(low=0.2), "record transfer 1: field 'mean': 0.12 is outside"),
    (lambda r: r["strategies"][2]["difference"].update(verdict="maybe"), "strategies.2.difference.verdict"),
])
def test_a_bad_strategy_comparison_is_one_error_and_no_report(tmp_path: Path, change: Callable[[dict], object],
                                                             message: str) -> None:
    plant(tmp_path / "ws")
    path = plant_strategies(tmp_path / "strategies.json")
    results = json.loads(path.read_text())
    change(results)
    path.write_text(json.dumps(results))
    with pytest.raises(PersynError, match=re.escape(message)):
        render(tmp_path / "ws", tmp_path / "out", path)
    assert not (tmp_path / "out").exists()


def test_same_artifacts_same_bytes_in_another_process(tmp_path: Path) -> None:
    """vl-convert lays text out with its own built-in font, not this machine's: a fresh process gives the
    same page, byte for byte."""
    plant(tmp_path / "ws")
    strategies = plant_strategies(tmp_path / "strategies.json")
    page, _ = render(tmp_path / "ws", tmp_path / "out", strategies)
    code = (f"from pathlib import Path; from persyn import report; report.write(Path({str(tmp_path / 'ws')!r}), "
            f"Path({str(tmp_path / 'other')!r}), 'planted workspace', {{}}, Path({str(strategies)!r}))")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "other/index.html").read_text() == page
    assert page.count("<svg") == len(PLOTS - {"sweep-accuracy", "sweep-regret"})
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "").replace(
        'xmlns:xlink="http://www.w3.org/1999/xlink"', "") and "https://" not in page


def test_answers_are_escaped(tmp_path: Path) -> None:
    plant(tmp_path)
    page, markdown = render(tmp_path, tmp_path / "out")
    assert ATTACK not in page and ATTACK not in markdown
    assert "&lt;script&gt;alert(1)&lt;/script&gt; " in page
    assert re.search(r"\| &lt;script&gt;alert\(1\)&lt;/script&gt; \d+ \\\| \d+<br>", markdown)
    assert page.count("<script>") == 1  # only the render check, which the page's CSP allows by hash


GIT = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
       "DVC_NO_ANALYTICS": "1"}
SWEEP = """import json
try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib
alpha = tomllib.load(open("params.toml", "rb"))["router"]["alpha"]
json.dump({"trained": {"accuracy": 0.25 + alpha / 4, "prompts": 8}, "untrained": {"accuracy": 0.125, "prompts": 8}},
          open("metrics/smol/eval.json", "w"))
"""
STAGE = """stages:
  sweep:
    cmd: python sweep.py
    deps: [sweep.py]
    params:
      - params.toml:
          - router.alpha
    metrics:
      - metrics/smol/eval.json:
          cache: false
metrics:
  - metrics/smol/router.json
"""


@pytest.fixture(scope="module")
def swept_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC repository holding the planted build, whose one stage turns router.alpha into an eval
    accuracy, and two experiments: high (α = 0.8) and low (α = 0)."""
    repo = tmp_path_factory.mktemp("repo")
    plant(repo)
    (repo / "sweep.py").write_text(SWEEP)
    (repo / "dvc.yaml").write_text(STAGE)
    env = {**os.environ, **GIT}
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "repro", "-q"], ["git", "add", "-A"],
                    ["git", "commit", "-qm", "build"],
                    ["dvc", "exp", "run", "-q", "-n", "high", "-S", "params.toml:router.alpha=0.8"],
                    ["dvc", "exp", "run", "-q", "-n", "low", "-S", "params.toml:router.alpha=0.0"]):
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}: {result.stdout}{result.stderr}"
    return repo


@pytest.mark.slow  # real dvc experiments
def test_alpha_sweep_and_a_report_of_an_experiment(swept_repo: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(swept_repo)
    cli.main(["report", "--rev", "high", "--out", str(tmp_path / "high")])
    markdown = (tmp_path / "high/report.md").read_text()
    assert markdown.splitlines()[2].startswith("high (git commit ")
    assert "| router.alpha | 0.8 |" in markdown and "| trained | eval | 8 | 0.4500 | – |" in markdown
    sweep = section(markdown, "5. α sweep across experiments")
    assert "| baseline (" in sweep and "| 0.4 | persyn | 0.3500 | " in sweep
    assert "| high | 0.8 | persyn | 0.4500 | " in sweep and "| low | 0.0 | persyn | 0.2500 | " in sweep
    page = (tmp_path / "high/index.html").read_text()
    assert figure(page, "sweep-accuracy").count('aria-roledescription="point"') == 3  # α = 0, 0.4, 0.8
    with pytest.raises(SystemExit) as stopped:
        cli.main(["report", "--rev", "no-such-experiment", "--out", str(tmp_path / "none")])
    assert stopped.value.code == 2 and not (tmp_path / "none").exists()


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--window-size=1200,4000"]


class Figures(html.parser.HTMLParser):
    """id → attributes of every <figure class="plot"> in a dumped DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.found: dict[str, dict[str, str]] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {k: v or "" for k, v in attrs}
        if tag == "figure" and values.get("class") == "plot":
            self.found[values["id"]] = values


@pytest.mark.slow  # real dvc experiments and a browser
def test_plots_render_in_a_headless_browser(swept_repo: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or (
        "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None)
    if browser is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium); the page's plots were not rendered")
    page = report.report(swept_repo, None, tmp_path / "out", plant_strategies(tmp_path / "strategies.json"))
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = Figures()
    figures.feed(result.stdout)
    assert set(figures.found) == PLOTS
    for plot_id, attrs in figures.found.items():
        width, height = (int(v) for v in attrs.get("data-rendered", "0x0").split("x"))
        assert width > 0 and height > 0 and int(attrs.get("data-marks", "0")) > 0, (plot_id, attrs)
