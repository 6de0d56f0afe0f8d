"""`persyn report`: one self-contained HTML page (inline CSS and SVG) and its markdown twin for a build.

The page is built from the artifacts under a folder: the workspace itself, or what `fetch` copied
out of a git revision or DVC experiment. A section whose inputs are missing says which stage to
run instead of failing. Same artifacts, same bytes: no timestamps, seeded samples, sorted rows.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import random
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Callable, Union

import numpy as np

from persyn import config, router, svg
from persyn.errors import PersynError
from persyn.io import atomic_path, read_embeddings, read_json, read_parquet
from persyn.release import flatten, resolve_revision, run

SAMPLES = 5
ANSWER_CHARS = 600
FETCHED = ("params.toml", "metrics/*.json", "data/prompts.parquet", "data/embeddings.parquet", "data/scores/*",
           "data/sample/*", "data/generated/*.stats.json", "data/router/*", "data/dataset/*")


class NotBuilt(Exception):
    """An input of a section is missing; its one argument is the stage that makes it."""


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    svg: str


Block = Union[str, Table, Figure]  # a str is a paragraph
Part = tuple[str, str, list[Block]]  # anchor, heading, blocks


def f4(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def pct(value: float) -> str:
    return f"{value:.1%}"


@dataclass
class Choices:
    """One router's choice on every prompt of S and its confidence (softmax of its coefficients there)."""

    chosen: np.ndarray
    confidence: np.ndarray


def choices(trained: router.Router, x: np.ndarray) -> Choices:
    coefficients = trained.coefficients(x).astype(np.float64)
    probabilities = np.exp(coefficients - coefficients.max(axis=1, keepdims=True))
    chosen = coefficients.argmax(axis=1)
    return Choices(chosen, (probabilities / probabilities.sum(axis=1, keepdims=True))[np.arange(len(x)), chosen])


@dataclass
class Routing:
    """The router's view of the router subset S: combined rewards, its choices, their confidence."""

    teachers: list[str]
    ids: list[str]
    reward: np.ndarray
    chosen: np.ndarray  # the routing router's (refitted on all of S under router.refit_on_all)
    confidence: np.ndarray
    fit_on: str  # what the routing router was fit on: "all" of S or its "training" part
    held_out: Choices  # the fit that metrics/router.json measured, on every prompt of S
    validation: list[int] | None  # rows of the held-out ids saved with the router; None if they disagree with it
class Build:
    """One build's artifacts under `root`, each read (and schema-checked) once, on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.params = config.load(root / "params.toml")
        self.teachers = sorted(self.params.teachers)

    def path(self, relative: str, stage: str) -> Path:
        if not (self.root / relative).exists():
            raise NotBuilt(stage)
        return self.root / relative

    def json(self, relative: str, stage: str) -> dict[str, Any]:
        """Metrics and stats unvalidated, so that builds from before the `usage` blocks still read."""
        return read_json(self.path(relative, stage))

    @cached_property
    def scores(self) -> dict[str, list[dict[str, Any]]]:
        return {t: read_parquet(self.path(f"data/scores/{t}.parquet", "score"), "score") for t in self.teachers}

    @cached_property
    def samples(self) -> dict[str, dict[str, dict[str, Any]]]:
        return {t: {r["id"]: r for r in read_parquet(self.path(f"data/sample/{t}.parquet", "sample"), "generation")}
                for t in self.teachers}

    @cached_property
    def routing(self) -> Routing:
        directory = self.path("data/router", "fit_router")
        trained, meta = router.load(directory)
        scores = [r for t in trained.teachers for r in self.scores[t]]
        ids, quality, learn = router.reward_matrices(scores, trained.teachers, "data/scores")
        reward = router.combined_reward(quality, learn, self.params.router.alpha, self.params.router.normalisation)
        embeddings = read_embeddings(self.path("data/embeddings.parquet", "embed"))
        x = np.stack([embeddings[i] for i in ids])
        routed, held = choices(trained, x), choices(router.load(directory, "held_out")[0], x)
        return Routing(trained.teachers, ids, reward, routed.chosen, routed.confidence, meta["fit_on"], held,
                       self.held_out(ids, reward, held, meta["held_out_ids"]))

    def held_out(self, ids: list[str], reward: np.ndarray, held: Choices, saved: list[str]) -> list[int] | None:
        """Rows of the held-out ids saved with the router; kept only if the held-out fit's regret on them
        equals the one in metrics/router.json, so the label never claims what it is not."""
        metrics = self.json("metrics/router.json", "fit_router")
        row = {prompt: i for i, prompt in enumerate(ids)}
        validation = sorted(row[i] for i in saved if i in row)
        regret = (reward.max(axis=1) - reward[np.arange(len(reward)), held.chosen])[validation]
        if (metrics["evaluated_on"] == "validation" and len(validation) == len(saved) == metrics["prompts"]
                and np.isclose(regret.mean(), metrics["router"]["regret"])):
            return validation
        return None


def attempt(blocks: Callable[[], list[Block]]) -> list[Block]:
    try:
        return blocks()
    except NotBuilt as missing:
        return [f"not built yet (run dvc repro {missing.args[0]})"]


def summary(build: Build) -> list[Block]:
    params = build.params

    def identity(teacher: str) -> str:
        try:
            return next(iter(build.samples[teacher].values()))["model"]
        except (NotBuilt, StopIteration):
            return params.teachers[teacher].model

    def generations() -> list[Block]:
        built = build.json("metrics/dataset.json", "assemble")
        g = built["generations"]
        return [Table(["dataset", "value"], [["records", str(built["records"])], ["generations used", str(g["used"])],
                                             ["Generate-then-Select would use", str(g["generate_then_select"])],
                                             ["saved", pct(g["saved_fraction"])]])]

    settings = [["student", params.student.model], ["router.alpha", str(params.router.alpha)],
                ["router.normalisation", params.router.normalisation], ["route.strategy", params.route.strategy]]
    return [Table(["setting", "value"], settings),
            Table(["teacher", "model identity"], [[t, identity(t)] for t in build.teachers]), *attempt(generations)]


def shares(build: Build) -> list[Block]:
    teachers = build.json("metrics/dataset.json", "assemble")["teachers"]
    names = sorted(teachers)
    return [Figure(svg.bars("shares", "Share of dataset records per teacher", names,
                            {"share": [teachers[t]["share"] for t in names]}, pct)),
            Table(["teacher", "records", "share", "mean quality"],
                  [[t, str(teachers[t]["records"]), pct(teachers[t]["share"]), f4(teachers[t]["mean_quality"])]
                   for t in names])]


def rewards(build: Build) -> list[Block]:
    quality = {t: [r["quality"] for r in build.scores[t]] for t in build.teachers}
    learn = {t: [r["learnability"] for r in build.scores[t]] for t in build.teachers}
    return ["Raw rewards of every teacher's answers on the router subset S (data/scores), before normalisation.",
            Figure(svg.histogram("quality-histogram", "Quality per teacher", quality, "raw quality r_q")),
            Figure(svg.histogram("learnability-histogram", "Learnability per teacher (student's mean token "
                                 "log-likelihood)", learn, "raw learnability r_l")),
            Table(["teacher", "answers", "mean quality", "mean learnability"],
                  [[t, str(len(quality[t])), f4(float(np.mean(quality[t]))), f4(float(np.mean(learn[t])))]
                   for t in build.teachers])]


def router_section(build: Build) -> list[Block]:
    metrics = build.json("metrics/router.json", "fit_router")
    best = metrics["best_single"]
    labels = ["router", f"best single ({best['teacher']})", "random"]
    choices = [metrics["router"], best, metrics["random"]]
    refit = metrics.get("routing_fit", {})
    routes = (f" The router that routes was then refitted on all {refit['prompts']} prompts of S "
              "(router.refit_on_all)." if refit.get("on") == "all" and metrics["evaluated_on"] == "validation" else "")
    return [f"On the {metrics['prompts']} {metrics['evaluated_on']} prompts of S (router trained on "
            f"{metrics['train_prompts']}); regret = oracle r − chosen r, top-1 = chose an oracle teacher. "
            f"Pairwise accuracy {f4(metrics['pairwise_accuracy'])} on {metrics['pairs']} pairs.{routes}",
            Figure(svg.bars("router-regret", "Mean regret (lower is better)", labels,
                            {"regret": [c["regret"] for c in choices]}, f4)),
            Figure(svg.bars("router-top1", "Top-1 agreement with the oracle teacher", labels,
                            {"top-1": [c["top1"] for c in choices]}, f4, top=1.0)),
            Table(["choice", "regret", "top-1"], [[n, f4(c["regret"]), f4(c["top1"])] for n, c in zip(labels, choices)]),
            *attempt(lambda: calibration(build))]


def calibration(build: Build) -> list[Block]:
    """Confidence of the router's choice (softmax over its coefficients) against how often it was
    the best teacher by combined reward r, in five equal-width bins from 1/N to 1: the held-out fit on
    the held-out prompts (out of sample), and apart the routing router on what it was fit on."""
    routing, held = build.routing, build.routing.validation
    rows_all = np.arange(len(routing.ids))
    best = routing.reward.max(axis=1)
    everything = list(range(len(routing.ids)))
    routed = (routing.chosen, routing.confidence)
    if held is None:
        groups = {"all router-subset prompts (routing router)": (everything, *routed)}
    else:
        rest = everything if routing.fit_on == "all" else [i for i in everything if i not in held]
        groups = {f"validation (n={len(held)})": (held, routing.held_out.chosen, routing.held_out.confidence),
                  f"{'all of S' if routing.fit_on == 'all' else 'training'} (n={len(rest)})": (rest, *routed)}
    edges = np.linspace(1 / len(routing.teachers), 1, 6)
    series: dict[str, list[tuple[float, float, str]]] = {}
    rows = []
    for name, (members, chosen, confidences) in groups.items():
        hit = np.isclose(routing.reward[rows_all, chosen], best)
        confidence, correct = confidences[members], hit[members]
        bins = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, len(edges) - 2)
        series[name] = []
        for b in sorted(set(bins.tolist())):
            inside = bins == b
            x, y, n = float(confidence[inside].mean()), float(correct[inside].mean()), int(inside.sum())
            series[name].append((x, y, f"{n} prompts, confidence {x:.2f}, best {y:.2f}"))
            rows.append([name, f"{edges[b]:.2f}–{edges[b + 1]:.2f}", str(n), f4(x), f4(y)])
    fitted = "all of S" if routing.fit_on == "all" else "the training prompts"
    which = ("all router-subset prompts, by the routing router: the held-out ids saved with the router do not "
             "reproduce metrics/router.json" if held is None else
             "the validation prompts (the held-out ids saved with the router), by the fit that metrics/router.json "
             f"measured, and apart {fitted}, by the routing router fitted on them (in sample)")
    return [f"Calibration on {which}.",
            Figure(svg.lines("calibration", "Router calibration: confidence of its choice vs how often it was best",
                             series, "predicted confidence", "observed: chosen teacher was best", (0, 1), (0, 1),
                             diagonal=True)),
            Table(["prompts", "confidence bin", "count", "mean confidence", "observed best"], rows)]


def sweep(experiments: list[dict[str, Any]]) -> list[Block]:
    if not experiments:
        return ["no experiments yet (try dvc exp run -S 'params.toml:router.alpha=0.2', then persyn report again)"]
    by_alpha: dict[float, list[dict[str, Any]]] = {}
    for row in experiments:
        if row["strategy"] == "persyn" and row["alpha"] is not None:
            by_alpha.setdefault(row["alpha"], []).append(row)
    blocks: list[Block] = []
    for key, plot_id, label in (("accuracy", "sweep-accuracy", "eval accuracy (trained)"),
                                ("regret", "sweep-regret", "router regret")):
        points = [(alpha, float(np.mean([r[key] for r in rows])), ", ".join(r["name"] for r in rows))
                  for alpha, rows in sorted(by_alpha.items()) if all(r[key] is not None for r in rows)]
        if points:
            blocks.append(Figure(svg.lines(plot_id, f"{label} against α (route.strategy = persyn; mean per α)",
                                           {label: points}, "router.alpha", label)))
    return [*blocks, Table(["experiment", "α", "strategy", "eval accuracy", "router regret", "generations used"],
                           [[r["name"], str(r["alpha"]), r["strategy"], f4(r["accuracy"]), f4(r["regret"]),
                             "–" if r["used"] is None else str(r["used"])] for r in experiments])]


def cost(build: Build) -> list[Block]:
    """This workspace's last run of each generation stage, from its run log (runs/*.json, not versioned)."""
    stats = {(t, stage): build.json(f"runs/{stage}@{t}.json", stage)
             for t in build.teachers for stage in ("sample", "generate")}
    usage = any("usage" in s for s in stats.values())
    header = ["teacher", "S answers: generated / reused", "routed: generated / reused", "from S"]
    rows, fresh, reused = [], [], []
    for t in build.teachers:
        sample, routed = stats[(t, "sample")], stats[(t, "generate")]
        fresh.append(float(sample["generated"] + routed["generated"]))
        reused.append(float(sample["reused"] + routed["reused"]))
        rows.append([t, f"{sample['generated']} / {sample['reused']}", f"{routed['generated']} / {routed['reused']}",
                     str(build.json(f"data/generated/{t}.stats.json", "generate")["from_subset"])])
        if usage:
            spent = [s["usage"] for s in (sample, routed) if "usage" in s]
            rows[-1] += [str(sum(u["prompt_tokens"] for u in spent)), str(sum(u["completion_tokens"] for u in spent)),
                         f"{sum(u['cost_usd'] for u in spent):.4f}"]
    note = "" if usage else " These run logs predate token and cost accounting (no usage recorded)."
    return [f"Answers per teacher in this workspace's last run of each stage (sample@T on S, then generate@T on its "
            f"routed prompts; from the run logs in runs/, which are not versioned): generated now, or reused from the "
            f"request cache; routed answers from S are reused as they are.{note}",
            Figure(svg.bars("cost-answers", "Answers per teacher: generated now vs reused from the request cache",
                            build.teachers, {"generated now": fresh, "reused from cache": reused}, lambda v: f"{v:.0f}")),
            Table(header + (["prompt tokens", "completion tokens", "cost (USD)"] if usage else []), rows)]


def evaluation(build: Build) -> list[Block]:
    result = build.json("metrics/eval.json", "evaluate")
    students = ["trained", "untrained"]
    key = "accuracy" if result["trained"].get("accuracy") is not None else "mean_reward"
    title = f"Eval {key.replace('_', ' ')}: the student after vs before fine-tuning"
    return [Figure(svg.bars("eval-students", title, students, {key: [result[s][key] for s in students]}, f4,
                            top=1.0 if key == "accuracy" else None)),
            Table(["student", "prompts", "accuracy", "mean reward"],
                  [[s, str(result[s]["prompts"]), f4(result[s].get("accuracy")), f4(result[s].get("mean_reward"))]
                   for s in students]),
            *([f"lm-evaluation-harness: {json.dumps(result['lm_eval'], sort_keys=True)}"] if "lm_eval" in result else [])]


def samples(build: Build) -> list[Block]:
    routing = build.routing
    prompts = {p["id"]: p for p in read_parquet(build.path("data/prompts.parquet", "prompts"), "prompt")}
    shards = sorted((build.root / "data/dataset").glob("train-*.parquet"))  # not assembled yet: no dataset marks
    held = {r["id"]: r["teacher"] for shard in shards for r in read_parquet(shard, "dataset_record")}
    scores = {(r["id"], t): r for t in routing.teachers for r in build.scores[t]}
    rows = []
    for i in sorted(random.Random(0).sample(range(len(routing.ids)), min(SAMPLES, len(routing.ids)))):
        prompt = prompts[routing.ids[i]]
        question = next(m["content"] for m in reversed(prompt["messages"]) if m["role"] == "user")
        rows.append([f"{question}\nreference: {prompt['reference']}"])
        for k, t in enumerate(routing.teachers):
            answer, score = build.samples[t][prompt["id"]]["response"], scores[(prompt["id"], t)]
            marks = [m for m, on in (("router's choice", k == routing.chosen[i]),
                                     ("in the dataset", held.get(prompt["id"]) == t),
                                     ("best by r", np.isclose(routing.reward[i, k], routing.reward[i].max()))) if on]
            rows[-1].append(answer[:ANSWER_CHARS] + (" …" if len(answer) > ANSWER_CHARS else "")
                            + f"\n— quality {score['quality']:.4g} · learnability {score['learnability']:.4f}"
                            + (f"\n◆ {', '.join(marks)}" if marks else ""))
    return [f"{len(rows)} router-subset prompts (seeded), every teacher's answer side by side.",
            Table(["prompt", *routing.teachers], rows)]


def sections(build: Build, experiments: list[dict[str, Any]]) -> list[Part]:
    return [("summary", "1. Build summary", summary(build)),
            ("teacher-shares", "2. Teacher shares", attempt(lambda: shares(build))),
            ("rewards", "3. Reward distributions per teacher", attempt(lambda: rewards(build))),
            ("router", "4. Router: regret and calibration", attempt(lambda: router_section(build))),
            ("alpha-sweep", "5. α sweep across experiments", sweep(experiments)),
            ("cost", "6. Cost", attempt(lambda: cost(build))),
            ("eval", "7. Eval accuracy", attempt(lambda: evaluation(build))),
            ("samples", "8. Sample records per teacher", attempt(lambda: samples(build)))]


STYLE = ("body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:1150px;margin:2em auto;padding:0 1em}"
         "table{border-collapse:collapse;margin:.6em 0 1.2em}th,td{border:1px solid #ccc;padding:4px 8px;"
         "text-align:left;vertical-align:top;white-space:pre-wrap}th{background:#f3f3f3}figure.plot{margin:1em 0}"
         "figcaption{color:#555;font-size:12px}svg text{font:12px system-ui,sans-serif;fill:#222}"
         ".missing{color:#a33}nav a{margin-right:1em}")


def render_html(title: str, subtitle: str, parts: list[Part]) -> str:
    """Everything escaped; the page's CSP forbids any script but the render check (allowed by hash)."""
    policy = f"sha256-{base64.b64encode(hashlib.sha256(svg.RENDER_CHECK.encode()).digest()).decode()}"
    e = html.escape
    out = [f'<!doctype html><html lang="en"><head><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" '
           f"content=\"default-src 'none'; style-src 'unsafe-inline'; script-src '{policy}'\"><title>{e(title)}</title>"
           f"<style>{STYLE}</style></head><body><h1>{e(title)}</h1><p>{e(subtitle)}</p><nav>"
           + "".join(f'<a href="#{anchor}">{e(name)}</a>' for anchor, name, _ in parts) + "</nav>"]
    for anchor, name, blocks in parts:
        out.append(f'<section id="{anchor}"><h2>{e(name)}</h2>')
        for block in blocks:
            if isinstance(block, Figure):
                out.append(block.svg)
            elif isinstance(block, Table):
                out.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in block.header) + "</tr>" + "".join(
                    "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block.rows) + "</table>")
            else:
                missing = ' class="missing"' if block.startswith("not built yet") else ""
                out.append(f"<p{missing}>{e(block)}</p>")
        out.append("</section>")
    return "\n".join(out) + f"\n<script>{svg.RENDER_CHECK}</script></body></html>\n"


def render_markdown(title: str, subtitle: str, parts: list[Part]) -> str:
    """The same sections, the plots' numbers as tables; text HTML-escaped, since renderers pass HTML through."""

    def cell(text: str) -> str:
        return html.escape(text, quote=False).replace("|", "\\|").replace("\n", "<br>")

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(cell(c) for c in cells) + " |"

    out = [f"# {title}\n\n{subtitle}\n"]
    for _, name, blocks in parts:
        out.append(f"## {name}\n")
        for block in blocks:
            if isinstance(block, Table):
                out.append("\n".join([line(block.header), "|" + "---|" * len(block.header), *map(line, block.rows)]) + "\n")
            elif isinstance(block, str):
                out.append(cell(block) + "\n")
    return "\n".join(out)


def write(root: Path, out: Path, subtitle: str, experiments: list[dict[str, Any]]) -> Path:
    """Render the build under `root` into out/index.html and out/report.md (atomically)."""
    build = Build(root)
    title = f"persyn report: {build.params.assemble.name}"
    parts = sections(build, experiments)
    for name, text in (("index.html", render_html(title, subtitle, parts)),
                       ("report.md", render_markdown(title, subtitle, parts))):
        with atomic_path(out / name) as scratch:
            scratch.write_text(text, encoding="utf-8")
    return out / "index.html"


# The edge that meets git and DVC: what was built at another revision, and the experiments.

def fetch(repo: Path, rev: str, target: Path) -> str:
    """Copy what the report reads, as it was at a git revision or DVC experiment, into `target`; its commit."""
    from dvc.api import DVCFileSystem

    resolved = resolve_revision(repo, rev)
    fs = DVCFileSystem(str(repo), rev=resolved)
    for path in sorted(p for pattern in FETCHED for p in fs.glob(pattern) if fs.isfile(p)):
        (target / path).parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(path, str(target / path))
        except FileNotFoundError:
            raise PersynError(f"report: {rev}: {path} is not in the DVC cache (dvc pull, or build it)") from None
    return run(["git", "rev-parse", resolved], repo).strip()


def experiments(repo: Path) -> list[dict[str, Any]]:
    """α, strategy and headline metrics of the baseline commit and its DVC experiments (`dvc exp show`);
    empty when there are no experiments."""
    rows = []
    for baseline in json.loads(run(["dvc", "exp", "show", "--json"], repo) or "[]"):
        runs = sorted((r for exp in baseline.get("experiments") or [] for r in exp.get("revs", [])),
                      key=lambda r: r["name"] or r["rev"])
        if baseline["rev"] == "workspace" or not runs:
            continue
        for entry, name in [(baseline, f"baseline ({baseline['name'] or baseline['rev'][:7]})"),
                            *((r, r["name"] or r["rev"][:7]) for r in runs)]:
            data = entry.get("data") or {}
            got = flatten({path: value.get("data", {}) for group in ("params", "metrics")
                           for path, value in (data.get(group) or {}).items()})
            rows.append({"name": name, "alpha": got.get("params.toml.router.alpha"),
                         "strategy": got.get("params.toml.route.strategy", "persyn"),
                         "accuracy": got.get("metrics/eval.json.trained.accuracy"),
                         "regret": got.get("metrics/router.json.router.regret"),
                         "used": got.get("metrics/dataset.json.generations.used")})
    return rows


def report(repo: Path, rev: str | None, out: Path) -> Path:
    """The report of the workspace (rev None) or of a git revision / DVC experiment, into `out`."""
    found = experiments(repo)
    if rev is None:
        return write(repo, out, f"workspace (git HEAD {run(['git', 'rev-parse', 'HEAD'], repo).strip()})", found)
    with tempfile.TemporaryDirectory(prefix="persyn-report-") as folder:
        commit = fetch(repo, rev, Path(folder))
        return write(Path(folder), out, f"{rev} (git commit {commit})", found)
