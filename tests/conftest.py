from __future__ import annotations

from pathlib import Path

import pytest

from persyn.testing import tiny


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $PERSYN_CACHE_DIR: no request or model cache leaks between tests."""
    root = tmp_path_factory.mktemp("persyn-cache")
    monkeypatch.setenv("PERSYN_CACHE_DIR", str(root))
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "student": tiny.causal_lm(root / "student", seed=0),
        "teacher_a": tiny.causal_lm(root / "teacher_a", seed=1),
        "teacher_b": tiny.causal_lm(root / "teacher_b", seed=2),
        "base": tiny.causal_lm(root / "base", seed=3, chat=False),
        "encoder": tiny.encoder(root / "encoder"),
        "reward": tiny.reward_model(root / "reward"),
    }
