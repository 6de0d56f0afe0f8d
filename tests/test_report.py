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
from pathlib import Path

import numpy as np
import pytest

from persyn import cli, config, dataset, report, router
from persyn.io import write_json, write_parquet

TEACHERS = ["gemma", "qwen", "smol"]
ATTACK = "<script>alert(1)</script>"
PLOTS = {"shares", "quality-histogram", "learnability-histogram", "router-regret", "router-top1", "calibration",
         "sweep-accuracy", "sweep-regret", "cost-answers", "eval-students"}
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

[student]
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
    params = config.load(root / "params.toml")
    split = ["router"] * 24 + ["pool"] * 8 + ["eval"] * 8
    ids = [f"{i + 1:016x}" for i in range(40)]
    prompts = [{"id": ids[i], "messages": [{"role": "user", "content": f"What is {i} + {i}?"}],
                "reference": str(2 * i), "split": split[i]} for i in range(40)]
    write_parquet(root / "data/prompts.parquet", prompts, "prompt")
    rng = np.random.default_rng(0)
    vectors = np.eye(3, 8)[[i % 3 for i in range(40)]] * 3 + rng.normal(0, 0.5, (40, 8))
    write_parquet(root / "data/embeddings.parquet", [{"id": ids[i], "embedding": vectors[i].tolist()} for i in range(40)],
                  "embedding")
    scores, answers = [], {}
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
        write_parquet(root / f"data/scores/{t}.parquet", rows, "score")
        scores += rows
        answers[t] = {r["id"]: r["response"] for r in sample}
    embeddings = {ids[i]: vectors[i].astype(np.float32) for i in range(40)}
    fitted = router.fit(scores, embeddings, TEACHERS, params.router)
    (root / "data/router").mkdir(parents=True)
    router.save(fitted, root / "data/router", params.router, 8)
    write_json(root / "metrics/router.json", fitted.metrics, "router_metrics")

    routed = fitted.routing.route(vectors[:32].astype(np.float32))
    by_score = {(s["id"], s["teacher"]): s for s in scores}
    records, teachers, spent = [], {}, {}
    for k, t in enumerate(TEACHERS):
        mine = [i for i in range(32) if routed[i] == k]
        in_s = [i for i in mine if i < 24]
        write_json(root / f"data/sample/{t}.stats.json", {"teacher": t, "prompts": 24, "from_subset": 0}, "generation_stats")
        write_json(root / f"data/generated/{t}.stats.json", {"teacher": t, "prompts": len(mine), "from_subset": len(in_s)},
                   "generation_stats")
        spent[t] = [usage(24, k), usage(len(mine) - len(in_s), k)]
        write_json(root / f"runs/sample@{t}.json", {"stage": f"sample@{t}", "generated": 24, "reused": 0,
                                                   "usage": spent[t][0], "finished": "-"}, "run_log")
        write_json(root / f"runs/generate@{t}.json", {"stage": f"generate@{t}", "generated": len(mine) - len(in_s),
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
    (root / "data/dataset").mkdir(parents=True)
    dataset.write(sorted(records, key=lambda r: r["id"]), root / "data/dataset", "planted-math", 5000)
    built = {"records": 32, "routed_prompts": 32, "truncated": 0, "teachers": teachers,
             "generations": {"used": 80, "generate_then_select": 96, "saved_fraction": 1 - 80 / 96}}
    write_json(root / "metrics/dataset.json", built, "dataset_metrics")
    evaluation = {"trained": {"accuracy": 0.375, "prompts": 8}, "untrained": {"accuracy": 0.125, "prompts": 8}}
    write_json(root / "metrics/eval.json", evaluation, "eval_metrics")
    return {"router": fitted.metrics, "dataset": built, "spent": spent}


def render(root: Path, out: Path) -> tuple[str, str]:
    report.write(root, out, "planted workspace", [])
    return (out / "index.html").read_text(), (out / "report.md").read_text()


def section(markdown: str, title: str) -> str:
    return markdown.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]


def test_markdown_shows_the_planted_metrics_and_the_page_every_plot(tmp_path: Path) -> None:
    planted = plant(tmp_path / "ws")
    page, markdown = render(tmp_path / "ws", tmp_path / "out")
    for row in ("| generations used | 80 |", "| Generate-then-Select would use | 96 |", "| saved | 16.7% |",
                "| router.alpha | 0.4 |", "| gemma | local:models/gemma@sha256:" + "0" * 64 + " |",
                "| trained | 8 | 0.3750 | – |", "| untrained | 8 | 0.1250 | – |"):
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
    cost = section(markdown, "6. Cost")
    for t, (sampled, routed) in planted["spent"].items():
        tokens = [sum(u[key] for u in (sampled, routed)) for key in ("prompt_tokens", "completion_tokens", "cost_usd")]
        assert f"| {tokens[0]} | {tokens[1]} | {tokens[2]:.4f} |" in cost, t
    assert "no experiments yet" in section(markdown, "5. α sweep across experiments")
    rows = [line for line in section(markdown, "8. Sample records per teacher").splitlines() if line.startswith("| ")]
    assert len(rows) == 1 + report.SAMPLES and rows[0] == "| prompt | gemma | qwen | smol |"
    assert page.count('<figure class="plot"') == len(PLOTS) - 2  # no experiments: no sweep plots
    assert render(tmp_path / "ws", tmp_path / "again") == (page, markdown)  # same artifacts, same bytes


def test_calibration_reads_the_held_out_ids_saved_with_the_router(tmp_path: Path) -> None:
    """A changed router.seed would redraw another split: the report still shows the saved one; ids
    that do not reproduce metrics/router.json are not called held out."""
    planted = plant(tmp_path / "ws")
    (tmp_path / "ws/params.toml").write_text(PARAMS.replace("seed = 0\n\n[route]", "seed = 5\n\n[route]"))
    routed = section(render(tmp_path / "ws", tmp_path / "out")[1], "4. Router: regret and calibration")
    assert f"| validation (n={planted['router']['prompts']}) |" in routed
    meta = json.loads((tmp_path / "ws/data/router/router.json").read_text())
    held = set(meta["held_out_ids"])
    meta["held_out_ids"] = [f"{i + 1:016x}" for i in range(24) if f"{i + 1:016x}" not in held][:len(held)]
    write_json(tmp_path / "ws/data/router/router.json", meta, "router_model")
    routed = section(render(tmp_path / "ws", tmp_path / "again")[1], "4. Router: regret and calibration")
    assert "do not reproduce metrics/router.json" in routed and "| validation (n=" not in routed


def test_missing_inputs_name_the_stage_to_run(tmp_path: Path) -> None:
    plant(tmp_path)
    (tmp_path / "metrics/eval.json").unlink()
    shutil.rmtree(tmp_path / "data/router")
    for stats in (tmp_path / "runs").glob("*.json"):  # a run from before usage was recorded
        write_json(stats, {k: v for k, v in json.loads(stats.read_text()).items() if k != "usage"})
    page, markdown = render(tmp_path, tmp_path / "out")
    assert section(markdown, "7. Eval accuracy").strip() == "not built yet (run dvc repro evaluate)"
    assert "not built yet (run dvc repro fit_router)" in section(markdown, "4. Router: regret and calibration")
    assert section(markdown, "8. Sample records per teacher").strip() == "not built yet (run dvc repro fit_router)"
    assert "no usage recorded" in section(markdown, "6. Cost") and "cost (USD)" not in markdown
    assert '<p class="missing">not built yet (run dvc repro evaluate)</p>' in page
    assert 'id="eval-students"' not in page and 'id="calibration"' not in page and 'id="shares"' in page


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
          open("metrics/eval.json", "w"))
"""
STAGE = """stages:
  sweep:
    cmd: python sweep.py
    deps: [sweep.py]
    params:
      - params.toml:
          - router.alpha
    metrics:
      - metrics/eval.json:
          cache: false
metrics:
  - metrics/router.json
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
    assert "| router.alpha | 0.8 |" in markdown and "| trained | 8 | 0.4500 | – |" in markdown
    sweep = section(markdown, "5. α sweep across experiments")
    assert "| baseline (" in sweep and "| 0.4 | persyn | 0.3500 | " in sweep
    assert "| high | 0.8 | persyn | 0.4500 | " in sweep and "| low | 0.0 | persyn | 0.2500 | " in sweep
    page = (tmp_path / "high/index.html").read_text()
    assert 'id="sweep-accuracy"' in page and page.count("<circle class=\"mark\"") >= 3
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
    page = report.report(swept_repo, None, tmp_path / "out")
    result = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                             page.as_uri()], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    figures = Figures()
    figures.feed(result.stdout)
    assert set(figures.found) == PLOTS
    for plot_id, attrs in figures.found.items():
        width, height = (int(v) for v in attrs.get("data-rendered", "0x0").split("x"))
        assert width > 0 and height > 0 and int(attrs.get("data-marks", "0")) > 0, (plot_id, attrs)
