"""A temporary git + DVC project holding a copy of this pipeline, driven with real `dvc repro`, and the
tiny params it is built with (params_toml)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import yaml

from persyn.core import layout

ROOT = Path(__file__).resolve().parents[2]  # the checkout: persyn/testing/ is two down
COPIED = ("dvc.yaml", "stages", "persyn", "schemas", layout.SOURCE, ".dvc/config", ".dvcignore", ".gitignore",
          "requirements-models.txt", "models/README.md")  # the last two: deps of the models stage


class Project:
    def __init__(self, path: Path, cache: Path) -> None:
        self.path, self.cache = path, cache
        self.env = {**os.environ, "PERSYN_CACHE_DIR": str(cache), "DVC_NO_ANALYTICS": "1"}

    def copy(self, target: Path) -> "Project":
        """An independent copy (work tree, git, DVC cache and request cache): a test that changes
        something changes its own copy, so every test passes alone and in any order."""
        shutil.copytree(self.path, target / "project", symlinks=True)
        shutil.copytree(self.cache, target / "cache", symlinks=True)
        return Project(target / "project", target / "cache")

    def run(self, *command: str) -> subprocess.CompletedProcess:
        result = subprocess.run(command, cwd=self.path, env=self.env, capture_output=True, text=True)
        assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
        return result

    def repro(self, *extra: str) -> set[str]:
        """Run dvc repro and return the names of the stages that actually ran."""
        output = self.run("dvc", "repro", *extra).stdout
        return set(re.findall(r"Running stage '([^']+)'", output))

    def set_param(self, old: str, new: str) -> None:
        params = self.path / "params.toml"
        text = params.read_text()
        assert old in text
        params.write_text(text.replace(old, new, 1))

    def lock_hashes(self) -> dict[str, str]:
        lock = yaml.safe_load((self.path / "dvc.lock").read_text())
        return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}

    def file_bytes(self, relative: str) -> bytes:
        return (self.path / relative).read_bytes()


def make_project(path: Path, cache: Path, params: str, models: dict[str, Path] | None = None) -> Project:
    """Copy the pipeline into `path`, write its params, and commit it to a fresh git repository;
    `models` are copied to models/<name> inside it (params may name them as local:models/<name>)."""
    for name, source in (models or {}).items():
        shutil.copytree(source, path / "models" / name)
    for item in COPIED:
        source = ROOT / item
        if source.is_dir():
            shutil.copytree(source, path / item, ignore=shutil.ignore_patterns("__pycache__", "tmp"))
        elif source.exists():
            (path / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(source, path / item)
    (path / "params.toml").write_text(params)
    project = Project(path, cache)
    project.run("git", "init", "-q")
    project.run("git", "add", "-A")
    project.run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init")
    return project


def params_toml(models: dict[str, Path]) -> str:
    """The tiny pipeline's params: `models` maps encoder, teacher_a, base and student to model folders."""
    return f"""
[prompts]
source = "builtin:arithmetic"
count = 28
seed = 0
router_size = 10
eval_size = 4
shifted_eval_size = 3

[embed]
model = "local:{models['encoder']}"
batch_size = 8

[generation]
max_tokens = 8
batch_size = 4

[teachers.a]
model = "local:{models['teacher_a']}"
system_prompt = "Answer briefly."

[teachers.base]
model = "local:{models['base']}"
prompt_template = "Question: 2 + 2\\nAnswer: 4\\n\\nQuestion: {{prompt}}\\nAnswer:"
stop = ["\\nQuestion:"]

[students.student]
model = "local:{models['student']}"
batch_size = 4
max_length = 256

[quality]
kind = "math"

[router]
alpha = 0.4
normalisation = "zscore"
tie_margin = 0.05
epochs = 50
validation_fraction = 0.3

[route]
strategy = "persyn"

[assemble]
name = "tiny"
drop_truncated = false  # random tiny models rarely stop within max_tokens: keep their answers
shard_size = 7

[train]
epochs = 1
batch_size = 8
max_length = 128
lr = 0.001

[eval]
max_tokens = 8
batch_size = 4
"""
