"""Issue 28: a stage pays for torch and transformers only where it runs a torch model. Checked by what a
fresh process has imported (no timings), and the CTranslate2 engine's light tokenizer against AutoTokenizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from persyn.core import chat
from persyn.sources import arithmetic
from persyn.core.errors import PersynError
from persyn.testing import tiny

ROOT = Path(__file__).resolve().parent.parent
HEAVY = {"torch", "transformers", "ray", "ctranslate2", "datasets", "reasoning_gym"}
# every stage script: those that run a torch model (embed, fit_router, route, train) import it where it
# loads, after the params are checked (bench/stage_overhead.py times them)
LIGHT = ("prompts", "models", "embed", "sample", "score", "fit_router", "route", "generate", "fallback", "sharing",
         "assemble", "train", "evaluate")
PROBE = """import runpy, sys
from persyn.params import config
for stage in sys.argv[2:]:
    runpy.run_path(f"stages/{{stage}}.py", run_name="stage")
config.load(sys.argv[1])
print(sorted(set({heavy}) & set(sys.modules)))"""


@pytest.mark.parametrize("engine", ["ctranslate2", "transformers"])
def test_light_stages_import_no_model_library_before_a_model_loads(engine: str, tmp_path: Path) -> None:
    """The stage scripts' imports and config.load of the default params, with every engine set to `engine`:
    the transformers engine's options are checked in every stage, without importing torch."""
    params = tmp_path / "params.toml"
    params.write_text((ROOT / "params.toml").read_text().replace('engine = "ctranslate2"', f'engine = "{engine}"'))
    probe = PROBE.format(heavy=sorted(HEAVY))
    loaded = subprocess.run([sys.executable, "-c", probe, str(params), *LIGHT], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert loaded.stdout.strip() == "[]"


def test_embed_and_engines_import_no_model_library() -> None:
    probe = (f"import sys; import persyn.pipeline.embed, persyn.engines.transformers, persyn.engines.ctranslate2; "
             f"print(sorted(set({sorted(HEAVY)}) & set(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"


@pytest.mark.parametrize("bos", [False, True])
def test_the_light_tokenizer_gives_autotokenizers_ids(bos: bool, tmp_path: Path) -> None:
    """Prompts, chats, response tokens, decoding: the same as AutoTokenizer, with and without a BOS."""
    tiny.chat_tokenizer(tmp_path, bos)
    fast, auto = chat.load_tokenizer(str(tmp_path)), AutoTokenizer.from_pretrained(tmp_path)
    assert isinstance(fast, chat.FastTokenizer)
    assert fast.get_vocab() == auto.get_vocab() and chat.stop_token_ids(fast) == chat.stop_token_ids(auto)
    for problem in arithmetic.generate(20, seed=5):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": problem["prompt"]}]
        answer = f"{problem['reference']} apples. The answer is {problem['reference']}."
        assert chat.prompt_ids(fast, None, problem["prompt"], "tiny") == chat.prompt_ids(auto, None, problem["prompt"], "tiny")
        assert chat.prompt_ids(fast, messages, None, "tiny") == chat.prompt_ids(auto, messages, None, "tiny")
        ids, start = chat.response_tokens(auto, messages, answer, 512, "tiny")
        assert chat.response_tokens(fast, messages, answer, 512, "tiny") == (ids, start)
        assert fast.convert_ids_to_tokens(ids) == auto.convert_ids_to_tokens(ids)
        for skip in (False, True):
            assert fast.decode(ids, skip_special_tokens=skip) == auto.decode(ids, skip_special_tokens=skip)


def test_a_base_model_has_no_template(tiny_models: dict[str, Path]) -> None:
    base = chat.load_tokenizer(str(tiny_models["base"]))
    assert isinstance(base, chat.FastTokenizer) and not base.chat_template
    with pytest.raises(PersynError, match="prompt_template"):
        chat.prompt_ids(base, [{"role": "user", "content": "Q"}], None, "base")


def test_a_template_plain_jinja2_cannot_compile_falls_back_to_autotokenizer(tmp_path: Path) -> None:
    tiny.chat_tokenizer(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(
        tiny.CHATML.replace("{{ message['content'] }}", "{% generation %}{{ message['content'] }}{% endgeneration %}"))
    assert not isinstance(chat.load_tokenizer(str(tmp_path)), chat.FastTokenizer)
