"""The models stage under real DVC, on tiny local models in a temporary project: up to date after it ran,
and run again exactly when a local: model's weights change (the full pipeline's reruns: test_pipeline.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from test_pipeline import INSIDE

from persyn.testing.dvcproject import Project, make_project, params_toml


def identities(project: Project) -> dict[str, bytes]:
    return {str(p.relative_to(project.path)): p.read_bytes() for p in (project.path / "data/models").rglob("*.json")}


def test_models_stage_is_up_to_date_after_a_run_and_reruns_on_new_local_weights(tiny_models: dict[str, Path],
                                                                                 tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", tmp_path / "cache", params_toml(INSIDE),
                           {name: tiny_models[name] for name in INSIDE})
    assert project.repro("models") == {"models"}
    assert json.loads(project.run("dvc", "status", "--json", "models").stdout) == {}
    assert project.repro("models") == set()
    before = identities(project)
    shutil.copy(tiny_models["teacher_b"] / "model.safetensors", project.path / "models/teacher_a/model.safetensors")
    status = json.loads(project.run("dvc", "status", "--json", "models").stdout)
    assert status == {"models": [{"changed deps": {"models": "modified"}}]}
    assert project.repro("models") == {"models"}
    after = identities(project)
    assert {path for path in after if after[path] != before[path]} == {"data/models/teachers/a.json"}


def test_a_changed_model_spec_reruns_the_models_stage(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    project = make_project(tmp_path / "project", tmp_path / "cache", params_toml(INSIDE),
                           {name: tiny_models[name] for name in INSIDE})
    project.repro("models")
    project.set_param('model = "local:models/base"', 'model = "local:models/teacher_a"')
    assert project.repro("models") == {"models"}
    assert json.loads(project.file_bytes("data/models/teachers/base.json"))["spec"] == "local:models/teacher_a"
