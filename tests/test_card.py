"""The dataset card: one builder for assemble and release, with Hub metadata the Hub's own reader accepts."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import DatasetCard, DatasetCardData

from persyn.params import config
from persyn.pipeline import card, dataset
from persyn.project import release
from persyn.params.config import tomllib
from persyn.core.errors import PersynError
from persyn.core.models import PACKAGED

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"gemma": "packaged:gemma-3-270m@sha256:" + "a" * 64, "qwen": "hf:Qwen/Qwen2.5-0.5B-Instruct@abc123"}
SUMMARY = {
    "records": 3,
    "teachers": {"gemma": {"records": 1, "share": 1 / 3, "mean_quality": 1.0},
                 "qwen": {"records": 2, "share": 2 / 3, "mean_quality": 0.5},
                 "qwen_steps": {"records": 0, "share": 0.0, "mean_quality": None}},
    "generations": {"used": 10, "generate_then_select": 18, "saved_fraction": 8 / 18},
}


def params(**assemble: str) -> config.Params:
    raw = tomllib.loads((ROOT / "params.toml").read_text())
    raw["assemble"].update(assemble)
    return config.parse(raw).for_student("smol")


def records() -> list[dict]:
    return [{"id": f"{i:016x}", "messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}],
             "teacher": teacher, "model": MODELS[teacher], "quality": 1.0, "learnability": None, "split": "pool",
             "finish_reason": "stop"} for i, teacher in enumerate(["gemma", "qwen", "qwen"])]


def metadata(text: str) -> dict:
    """The header as huggingface_hub reads it, also through DatasetCardData itself."""
    data = DatasetCard(text).data.to_dict()
    assert DatasetCardData(**data).to_dict() == data
    return data


def test_the_built_card_carries_hub_metadata_and_loads(tmp_path: Path) -> None:
    text = card.build(params(), "persyn-math-smol", SUMMARY, card.teacher_models(records()))
    data = metadata(text)
    assert data["language"] == ["en"] and data["task_categories"] == ["text-generation"]
    assert data["tags"] == ["persyn", "distillation", "synthetic", "routing-persyn"]
    assert data["size_categories"] == ["n<1K"] and data["source_datasets"] == ["original"]
    assert data["pretty_name"] == "persyn-math-smol"
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "train-*.parquet"}]
    assert "- prompts from `original`\n- strategy `persyn`, α = 0.4" in text
    assert "- student `packaged:smollm2-135m-instruct`" in text
    assert "| qwen | `hf:Qwen/Qwen2.5-0.5B-Instruct@abc123` | 2 | 66.7% | 0.5 |" in text
    assert "generations used 10 against 18 for Generate-then-Select" in text
    dataset.write(records(), tmp_path, text, 5000)
    import datasets

    assert len(datasets.load_dataset(str(tmp_path), split="train")) == 3


def test_each_teacher_licence_appears() -> None:
    text = card.build(params(), "persyn-math-smol", SUMMARY, MODELS)
    assert f"| gemma | `{MODELS['gemma']}` | gemma | [Gemma Terms of Use](https://ai.google.dev/gemma/terms) |" in text
    assert "| qwen | `hf:Qwen/Qwen2.5-0.5B-Instruct@abc123` | unknown: see the model's card | " \
           "[model card](https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct) |" in text
    assert "| qwen_steps | – | – (no records) | – |" in text
    assert all(p.license in card.TERMS for p in PACKAGED.values())  # every packaged model's terms are linked
    assert card.teacher_license("packaged:smollm2-135m-instruct@sha256:0+chat_template:ab") == "apache-2.0"
    assert card.teacher_license("local:my-model@sha256:0") == card.teacher_license("api:m") == card.UNKNOWN


def test_license_other_points_at_the_licences_section() -> None:
    other = metadata(card.build(params(), "d", SUMMARY, MODELS))
    assert other["license"] == "other" and other["license_name"] == "persyn-teacher-terms"
    assert other["license_link"] == "README.md#teachers-and-their-licences"
    assert "\n## Teachers and their licences\n" in card.build(params(), "d", SUMMARY, MODELS)
    chosen = metadata(card.build(params(license="apache-2.0"), "d", SUMMARY, MODELS))
    assert chosen["license"] == "apache-2.0" and "license_name" not in chosen and "license_link" not in chosen


def test_source_datasets_name_the_prompt_source() -> None:
    hub = SimpleNamespace(source="hf", hf={"name": "openai/gsm8k", "split": "train"})
    assert card.source_dataset(hub) == "openai/gsm8k"  # type: ignore[arg-type]
    assert card.source_dataset(SimpleNamespace(source="reasoning_gym", hf=None)) == "reasoning-gym"  # type: ignore[arg-type]
    assert {card.source_dataset(SimpleNamespace(source=s, hf=None))  # type: ignore[arg-type]
            for s in ("builtin:arithmetic", "jsonl", "parquet")} == {"original"}


def test_same_params_same_bytes(tmp_path: Path) -> None:
    texts = [card.build(params(), "d", SUMMARY, card.teacher_models(rows)) for rows in (records(), records()[::-1])]
    assert texts[0] == texts[1]
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        dataset.write(records(), tmp_path / name, texts[0], 5000)
    assert (tmp_path / "a/README.md").read_bytes() == (tmp_path / "b/README.md").read_bytes()


def test_the_released_card_is_the_same_card_with_the_release_facts() -> None:
    metrics = {"dataset": SUMMARY, "router": {"router": {"regret": 0.1, "top1": 0.5}, "best_single": {"regret": 0.2},
                                             "random": {"regret": 0.3}, "pairwise_accuracy": 0.75},
               "eval": {"trained": {"accuracy": 0.5}, "eval_shifted": {"trained": 0.25, "untrained": 0.125}}}
    provenance = {"teachers": MODELS, "git_commit": "c0ffee", "dvc_lock_sha256": "f" * 64}
    text = release.card("persyn-math-smol", "1.0.0", params(), metrics, provenance)
    data = metadata(text)
    assert data["pretty_name"] == "persyn-math-smol v1.0.0" and data["language"] == ["en"]
    assert data["license_link"] == card.LICENSE_LINK and data["source_datasets"] == ["original"]
    assert data["configs"][0]["data_files"] == [{"split": "train", "path": "data/train-*.parquet"}]
    assert data["persyn"]["router_regret"] == 0.1 and data["persyn"]["records"] == 3
    assert "[Gemma Terms of Use](https://ai.google.dev/gemma/terms)" in text
    assert "- on the shifted eval set: after 0.25; before 0.125\n- git commit `c0ffee`" in text
    assert text.endswith("`provenance.json` beside this card has the full params, metrics and file checksums.\n")


def test_size_categories_are_the_hubs() -> None:
    assert [card.size_category(n) for n in (5, 999, 1000, 50_000, 2_000_000, 10**13)] == [
        "n<1K", "n<1K", "1K<n<10K", "10K<n<100K", "1M<n<10M", "n>1T"]


@pytest.mark.parametrize("hub", [True, False], ids=["huggingface_hub", "by-hand"])
def test_a_card_the_hub_would_misread_is_one_error_line(hub: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    if not hub:
        monkeypatch.setitem(sys.modules, "huggingface_hub", None)  # not importable: the same rules by hand
    good = card.build(params(), "d", SUMMARY, MODELS)
    assert card.check(good, "d") == DatasetCard(good).data.to_dict()
    header = good.split("---\n")[1]
    bad = {
        "not a mapping": ("---\n- a\n- b\n---\n# d\n", "the card's YAML header is not Hub metadata"),
        "no language": (good.replace("language:\n- en\n", ""), "dataset card header: missing language"),
        "size": (good.replace("- n<1K", "- n>1M"), "size_categories ['n>1M'] is not one of the Hub's"),
        "license other": (good.replace("license_name: persyn-teacher-terms\n", ""), "license 'other' needs a license_name"),
        "no header": (good.replace(f"---\n{header}---\n", ""), "missing license, language"),
    }
    for text, message in bad.values():
        with pytest.raises(PersynError, match=re.escape(message)) as caught:
            card.check(text, "data/dataset/smol/README.md")
        assert "\n" not in str(caught.value) and str(caught.value).startswith("data/dataset/smol/README.md: ")
