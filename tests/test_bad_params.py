"""Every params or prompt-file mistake is refused before any compute, by `persyn check` and by the first
stage that would run (the prompts stage, as a subprocess in a project directory): a non-zero exit, one line
on stderr naming the key or the file:line:field, no traceback, and no output written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest

from persyn import cli

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "stages" / "prompts.py"
QUESTION = "Sam has {i} apples and buys {i} more. How many apples does Sam have?"

# packaged models on CTranslate2: valid without a model on disk, and the check imports no torch
BASE = """
[prompts]
source = "builtin:arithmetic"
count = 40
seed = 0
router_size = 8
eval_size = 4
shifted_eval_size = 4

[embed]
model = "packaged:all-minilm-l6-v2"
engine = "ctranslate2"

[generation]
engine = "ctranslate2"
max_tokens = 32

[teachers.qwen]
model = "packaged:qwen2.5-coder-0.5b-instruct"

[teachers.gemma]
model = "packaged:gemma-3-270m"

[students.smol]
model = "packaged:smollm2-135m-instruct"
engine = "ctranslate2"

[quality]
kind = "math"

[router]
alpha = 0.4

[route]
strategy = "persyn"

[assemble]
name = "bad-params"

[train]

[eval]
"""
JSONL = """source = "jsonl"
path = "data/source/p.jsonl"
fields = { prompt = "question", reference = "answer" }
count = 0
seed = 0"""
ENDPOINT = 'engine = "openai"\nengine_options = { base_url = "http://127.0.0.1:9/v1" }'


def rows(count: int = 20, **changed: dict) -> list[dict]:
    """`count` distinct math prompts; `changed` replaces the row at line N (line_N=...)."""
    lines = [{"question": QUESTION.format(i=i), "answer": str(2 * i)} for i in range(count)]
    for key, row in changed.items():
        lines[int(key.removeprefix("line_")) - 1] = row
    return lines


def edit(*pairs: str) -> Callable[[str], str]:
    """A params edit: each (old, new) pair replaced once; the old text must be there."""
    def apply(text: str) -> str:
        for old, new in zip(pairs[::2], pairs[1::2]):
            assert old in text, old
            text = text.replace(old, new, 1)
        return text
    return apply


def jsonl(*pairs: str) -> Callable[[str], str]:
    """The prompts from data/source/p.jsonl (no shifted set), then the given edits."""
    return lambda text: edit('source = "builtin:arithmetic"\ncount = 40\nseed = 0', JSONL,
                             "shifted_eval_size = 4", "shifted_eval_size = 0", *pairs)(text)


CASES = {
    # issue 31
    "fixed strategy names no teacher": (edit('strategy = "persyn"', 'strategy = "fixed:nosuchteacher"'), None,
                                        "route.strategy = 'fixed:nosuchteacher' names no configured teacher "
                                        "(configured: gemma, qwen)"),
    "engine option out of range": (edit("max_tokens = 32", 'max_tokens = 32\nengine_options = { compute_type = "int3" }'),
                                   None, "teachers.gemma: engine 'ctranslate2' options: compute_type must be"),
    "unknown engine option": (edit('[students.smol]', '[students.smol]\nengine_options = { bogus = 1 }'), None,
                              "students.smol: engine 'ctranslate2' has no option 'bogus'"),
    "teacher directory missing": (edit('"packaged:qwen2.5-coder-0.5b-instruct"', '"local:models/absent"'), None,
                                  "teachers.qwen.model: local:models/absent: directory not found"),
    "student directory missing": (edit('"packaged:smollm2-135m-instruct"', '"local:/no/such/student"'), None,
                                  "students.smol.model: local:/no/such/student: directory not found"),
    "alpha is nan": (edit("alpha = 0.4", "alpha = nan"), None, "router.alpha: nan is not a finite number"),
    "tie margin is inf": (edit("alpha = 0.4", "alpha = 0.4\ntie_margin = inf"), None,
                          "router.tie_margin: inf is not a finite number"),
    "reference the checker cannot read": (jsonl(), rows(line_7={"question": "How many?", "answer": "seventy-two"}),
                                          "p.jsonl: line 7: field 'answer': 'seventy-two' has no number"),
    "control character in a prompt": (jsonl(), rows(line_3={"question": "Two\u0000plus two?", "answer": "4"}),
                                      "p.jsonl: line 3: field 'question': control character U+0000"),
    "prompt longer than the limit": (jsonl(), rows(line_5={"question": "x" * 200_000, "answer": "1"}),
                                     "p.jsonl: line 5: field 'question': 200000 characters, over prompts.max_prompt_chars"),
    "one teacher": (edit('[teachers.gemma]\nmodel = "packaged:gemma-3-270m"\n', ""), None,
                    "teachers: at least 2 needed, 1 given (qwen)"),
    "count below the splits": (jsonl("count = 0", "count = 10"), rows(100),
                               "prompts.count (10) must exceed prompts.router_size + prompts.eval_size (12)"),
    # issue 29: found mid-build before, refused with the params now (persyn/params/rules.py)
    "seconds budget on an endpoint teacher": (edit('[teachers.gemma]\nmodel = "packaged:gemma-3-270m"',
                                                   f'[teachers.gemma]\nmodel = "api:gemma"\n{ENDPOINT}',
                                                   'strategy = "persyn"',
                                                   'strategy = "persyn"\nbudget = { amount = 5, unit = "seconds" }'),
                                              None, "teacher gemma's engine (openai) is a server it cannot time"),
    "student on an endpoint": (edit('model = "packaged:smollm2-135m-instruct"\nengine = "ctranslate2"',
                                    f'model = "api:smol"\n{ENDPOINT}'),
                               None, "students.smol.engine = 'openai' cannot score log-likelihoods"),
    "reward model on an engine without one": (edit('kind = "math"', 'kind = "reward_model"\n'
                                                   'reward_model = "packaged:smollm2-135m-instruct"\nengine = "ctranslate2"'),
                                              None, "quality.engine = 'ctranslate2' cannot run a reward model"),
    "embed on an engine without an encoder": (edit('minilm-l6-v2"\nengine = "ctranslate2"',
                                                   'minilm-l6-v2"\nengine = "openai"'),
                                              None, "embed.engine = 'openai' cannot run an encoder"),
    "unknown embed engine": (edit('minilm-l6-v2"\nengine = "ctranslate2"', 'minilm-l6-v2"\nengine = "foo"'),
                             None, "embed.engine: unknown engine 'foo'"),
    "hub encoder on ctranslate2": (edit('model = "packaged:all-minilm-l6-v2"',
                                        'model = "hf:sentence-transformers/all-MiniLM-L6-v2@main"'), None,
                                   "embed: hf:sentence-transformers/all-MiniLM-L6-v2@main: engine 'ctranslate2' converts local"),
    "api model on a local engine": (edit('[teachers.qwen]\nmodel = "packaged:qwen2.5-coder-0.5b-instruct"',
                                         '[teachers.qwen]\nmodel = "api:qwen"\nengine = "transformers"'),
                                    None, "teachers.qwen: api:qwen: an api: model is served by an endpoint"),
    "vllm on the cpu": (edit('engine = "ctranslate2"\n\n[quality]', 'engine = "vllm"\n\n[quality]'),
                        None, "students.smol: packaged:smollm2-135m-instruct: engine 'vllm' runs on GPUs"),
    "shares that leave prompts without a teacher": (edit('model = "packaged:gemma-3-270m"',
                                                         'model = "packaged:gemma-3-270m"\nmax_share = 0.3',
                                                         '"packaged:qwen2.5-coder-0.5b-instruct"',
                                                         '"packaged:qwen2.5-coder-0.5b-instruct"\nmax_share = 0.4'),
                                                    None, "teachers' max_share values sum to 0.7, under 1"),
    "lm router on an endpoint backbone": (edit("alpha = 0.4", 'alpha = 0.4\nhead = "lm"\nbackbone = "api:big"'), None,
                                          "router.backbone: api:big is behind an endpoint and cannot be fine-tuned"),
    # refused before issue 31, kept refused
    "unknown key": (edit("alpha = 0.4", "alpha = 0.4\nalpah = 0.3"), None, "router.alpah: unknown key"),
    "unknown strategy": (edit('strategy = "persyn"', 'strategy = "best"'), None, "route.strategy: 'best': expected"),
    "missing reference under math": (jsonl(), rows(line_4={"question": "No reference?"}),
                                     "p.jsonl: line 4: field 'answer': missing"),
    "conflicting references": (jsonl(), rows(21, line_21={"question": QUESTION.format(i=1), "answer": "3"}),
                               "p.jsonl: line 2 and line 21: field 'answer': the same prompt"),
    "too few prompts in the file": (jsonl(), rows(12), "p.jsonl: 12 distinct prompts, but prompts.router_size"),
}


def project(tmp_path: Path, params: str, prompts: list[dict] | None) -> Path:
    """A project directory: params.toml and, where given, data/source/p.jsonl."""
    (tmp_path / "params.toml").write_text(params)
    if prompts is not None:
        (tmp_path / "data" / "source").mkdir(parents=True)
        (tmp_path / "data" / "source" / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in prompts))
    return tmp_path


def refused_in_one_line(stderr: str, expected: str) -> None:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    assert lines[0].startswith("persyn: error: ") and expected in lines[0], lines[0]


@pytest.mark.parametrize("case", CASES)
def test_a_mistake_stops_check_and_the_first_stage(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture) -> None:
    change, prompts, expected = CASES[case]
    root = project(tmp_path, change(BASE), prompts)
    monkeypatch.chdir(root)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["check"])
    assert stopped.value.code != 0
    refused_in_one_line(capsys.readouterr().err, expected)
    stage = subprocess.run([sys.executable, str(PROMPTS)], cwd=root, capture_output=True, text=True)
    assert stage.returncode != 0
    refused_in_one_line(stage.stderr, expected)
    assert not (root / "data" / "prompts.parquet").exists()


def test_the_good_base_passes_and_its_check_loads_no_model_library(tmp_path: Path) -> None:
    """The cases above differ from a valid project only by their mistake; checking the engines' options
    imports none of torch, transformers or CTranslate2 (every stage pays for what its check imports)."""
    root = project(tmp_path, BASE, None)
    probe = ("import sys; from persyn.params import config; config.load(); "
             "print(sorted({'torch', 'transformers', 'ctranslate2'} & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=root, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
    stage = subprocess.run([sys.executable, str(PROMPTS)], cwd=root, capture_output=True, text=True)
    assert stage.returncode == 0, stage.stderr
    assert (root / "data" / "prompts.parquet").is_file()


def test_references_the_checker_reads_alike_are_one_prompt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under quality.kind = "math", "#### 72" and "72" on a duplicate prompt are the same answer."""
    root = project(tmp_path, jsonl()(BASE), rows(21, line_1={"question": QUESTION.format(i=36), "answer": "#### 72"},
                                                 line_21={"question": QUESTION.format(i=36), "answer": "72"}))
    monkeypatch.chdir(root)
    cli.main(["check"])


@pytest.mark.parametrize(("beside", "shifted"), [("", 0), ("\nshifted_beside_source = true", 32)])
def test_a_file_source_gets_the_builtin_shifted_problems_only_when_asked(beside: str, shifted: int, tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture) -> None:
    """shifted_eval_size = 32 in a params.toml written for the built-in source adds nothing to your own prompts."""
    root = project(tmp_path, jsonl("shifted_eval_size = 0", f"shifted_eval_size = 32{beside}")(BASE), rows())
    monkeypatch.chdir(root)
    cli.main(["check"])
    assert f"8 pool P, 4 eval, {shifted} eval_shifted" in capsys.readouterr().out
