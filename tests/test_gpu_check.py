"""bench/gpu_check.py's CPU-checkable half: its params are valid persyn params for both engines, and
its comparison fails on a different answer or a learnability gap above 1e-3."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import polars as pl
import pytest

from persyn.params import config

# bench/ is no package: load the script from its file, as `python bench/gpu_check.py` runs it
SPEC = importlib.util.spec_from_file_location("gpu_check", Path(__file__).resolve().parents[1] / "bench/gpu_check.py")
gpu_check = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(gpu_check)


@pytest.mark.parametrize("engine", ["vllm", "transformers"])
def test_params_put_every_model_role_on_the_engine(engine: str, tmp_path: Path) -> None:
    (tmp_path / "params.toml").write_text(gpu_check.params_toml(tmp_path / "models", engine))
    params = config.load(tmp_path / "params.toml", models_here=False)  # the models are built on the GPU machine
    roles = [t.sampling for t in params.teachers.values()] + [*params.students.values(), params.quality]
    assert len(roles) == 4 and all(r.engine == engine and r.device == "cuda" for r in roles)
    assert all(r.engine_options["dtype"] == "float32" for r in roles) and params.quality.kind == "reward_model"


def fake_project(path: Path, answers: list[str], learnability: list[float]) -> Path:
    for stage in ("sample", "scores/student"):
        (path / "data" / stage).mkdir(parents=True)
    ids = [f"p{i}" for i in range(len(answers))]
    pl.DataFrame({"id": ids, "response": answers}).write_parquet(path / "data/sample/a.parquet")
    pl.DataFrame({"id": ids, "learnability": learnability, "quality": [1.5] * len(ids)}).write_parquet(
        path / "data/scores/student/a.parquet")
    return path


def test_comparison_and_table(tmp_path: Path) -> None:
    reference = fake_project(tmp_path / "vllm", ["7", "12"], [-2.0, -3.0])
    close = fake_project(tmp_path / "close", ["7", "12"], [-2.0004, -3.0])
    assert all(ok for _, ok, _, _ in gpu_check.compare(reference, close))
    far = gpu_check.compare(reference, fake_project(tmp_path / "far", ["7", "12"], [-2.002, -3.0]))
    assert [ok for _, ok, _, _ in far] == [True, False, True]
    other = gpu_check.compare(reference, fake_project(tmp_path / "other", ["7", "13"], [-2.0, -3.5]))
    assert other[0][1] is False and other[0][3] == "1/2 router-subset answers identical" and other[1][1] is True
    results = tmp_path / "results.tsv"
    assert not gpu_check.append(results, far)
    shown = gpu_check.table(results)
    assert "learnability within 0.001  FAILED" in shown and shown.endswith("2/3 checks passed")
