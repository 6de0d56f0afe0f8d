"""router.head = "lm" on tiny random models: a backbone fine-tuned end to end with a coefficient head
learns which teacher a prompt's family needs, saves byte-stable, and routes the same after a reload."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from persyn.pipeline import lm_router, route, router
from persyn.params.config import RouteConfig, RouterConfig
from persyn.core.errors import PersynError

TEACHERS = ["a", "b"]


def family_prompts(count: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Two families in distinct words (both in the tiny tokenizers' vocabulary), alternating."""
    rng = np.random.default_rng(seed)
    family = np.arange(count) % 2
    texts = [f"Maya has {a} apples and buys {b} more apples." if f == 0 else
             f"Hiro reads {a} pages on Monday and {b} pages on Tuesday."
             for f, a, b in zip(family, rng.integers(1, 99, count), rng.integers(1, 99, count))]
    return texts, family


def planted(count: int, flipped: bool = False) -> tuple[list[str], dict[str, str], list[dict], np.ndarray]:
    """S where teacher a is right on family 0 and b on family 1 (or the reverse), learnability random."""
    texts, family = family_prompts(count, seed=0)
    right = family == (1 if flipped else 0)
    quality = np.stack([right, ~right], axis=1).astype(float)
    learn = -1 - np.random.default_rng(1).random((count, 2))
    ids = [f"{i:016x}" for i in range(count)]
    scores = [{"id": ids[i], "teacher": t, "quality": float(quality[i, k]), "learnability": float(learn[i, k])}
              for i in range(count) for k, t in enumerate(TEACHERS)]
    return ids, dict(zip(ids, texts)), scores, family


def lm_config(backbone: Path) -> RouterConfig:
    return RouterConfig(alpha=0.4, head="lm", backbone=f"local:{backbone}", lm_epochs=5, lr=0.05, lm_lr=1e-3,
                        batch_size=8, validation_fraction=0.25)


def test_batches_cover_every_prompt_once_and_pad_little() -> None:
    from persyn.pipeline.batching import length_batches as batches

    prompts, lengths = np.arange(3, 103), np.random.default_rng(0).integers(5, 500, 110)
    found = batches(prompts, lengths, 8, np.random.default_rng(1))
    assert sorted(np.concatenate(found).tolist()) == prompts.tolist() and max(map(len, found)) == 8
    assert [b.tolist() for b in found] == [b.tolist() for b in batches(prompts, lengths, 8, np.random.default_rng(1))]
    assert np.mean([np.ptp(lengths[b]) for b in found]) < 100  # a plain shuffle's batches span about 380


@pytest.mark.parametrize("backbone", ["encoder", "student"])  # mean pooling; a causal LM's last token
def test_routes_held_out_prompts_by_family(tiny_models: dict[str, Path], backbone: str) -> None:
    config = lm_config(tiny_models[backbone])
    new, family = family_prompts(20, seed=5)
    for flipped in (False, True):
        ids, texts, scores, _ = planted(40, flipped)
        fitted = lm_router.fit(scores, texts, TEACHERS, config)
        assert fitted.routing.route(new).tolist() == (family if not flipped else 1 - family).tolist()
        assert fitted.metrics["router"]["top1"] == 1.0 and fitted.metrics["routing_fit"]["on"] == "all"


def test_fit_save_load_route_round_trip(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """Same params, same bytes; the reloaded routers give the fitted routers' coefficients, and route
    sends every pool prompt where the fitted router does."""
    config = lm_config(tiny_models["encoder"])
    ids, texts, scores, _ = planted(40)
    fitted = lm_router.fit(scores, texts, TEACHERS, config)
    for name, result in (("one", fitted), ("two", lm_router.fit(scores, texts, TEACHERS, config))):
        (tmp_path / name).mkdir()
        router.save(result, tmp_path / name, config, result.routing.dimension)
    for name in ("router.json", "head.safetensors", "held_out.safetensors"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    loaded, meta = lm_router.load(tmp_path / "one")
    held, _ = lm_router.load(tmp_path / "one", "held_out")
    assert meta["head"] == "lm" and meta["backbone"]["spec"] == config.backbone and meta["dimension"] == 32
    pool, _ = family_prompts(24, seed=9)
    assert np.array_equal(loaded.coefficients(pool), fitted.routing.coefficients(pool))
    assert np.array_equal(held.coefficients(pool), fitted.held_out.coefficients(pool))
    prompts = [{"id": f"{i + 100:016x}", "split": "pool", "messages": [{"role": "user", "content": t}]}
               for i, t in enumerate(pool)]
    routed = route.assign(RouteConfig(), prompts, loaded, {p["id"]: p["messages"][0]["content"] for p in prompts}, scores)
    expected = fitted.routing.route(pool)
    assert routed == {t: sorted(p["id"] for p, k in zip(prompts, expected) if k == i) for i, t in enumerate(TEACHERS)}
    with pytest.raises(PersynError, match="reads prompt texts, not embeddings"):
        loaded.coefficients(np.zeros((2, 32), dtype=np.float32))
    with pytest.raises(PersynError, match="router.head = 'lm' is no head over embeddings: fit and load it with "
                                          "persyn.pipeline.lm_router"):
        router.load(tmp_path / "one")


def test_a_changed_backbone_is_refused_on_load(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from persyn.testing import tiny

    backbone = tiny.encoder(tmp_path / "encoder")
    config = replace(lm_config(backbone), refit_on_all=False, lm_epochs=1)
    ids, texts, scores, _ = planted(16)
    fitted = lm_router.fit(scores, texts, TEACHERS, config)
    (tmp_path / "router").mkdir()
    router.save(fitted, tmp_path / "router", config, fitted.routing.dimension)
    tiny.encoder(backbone, seed=1)
    with pytest.raises(PersynError, match="the router was fine-tuned from local:encoder@sha256:.*re-run fit_router"):
        lm_router.load(tmp_path / "router")


def test_held_out_comparison_on_verified_correctness(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """From a build's files: the family oracle and both routers get every held-out prompt right, the best
    single teacher at most half of them (the family its training folds hold more of, held out less);
    the verified rule changes nothing here (no prompt is all wrong)."""
    from persyn.core import io
    from persyn.science import router_eval

    ids, texts, scores, family = planted(40)
    prompts = [{"id": i, "messages": [{"role": "user", "content": texts[i]}], "reference": None, "split": "router",
                "family": f"f{f}"} for i, f in zip(ids, family)]
    io.write_parquet(tmp_path / "data/prompts.parquet", prompts, "prompt")
    for teacher in TEACHERS:
        io.write_parquet(tmp_path / f"data/scores/smol/{teacher}.parquet",
                         [{**s, "requests": []} for s in scores if s["teacher"] == teacher], "score")
    io.write_parquet(tmp_path / "data/embeddings.parquet",
                     [{"id": i, "embedding": [1.0 - f, float(f), 0.5]} for i, f in zip(ids, family)], "embedding")
    data = router_eval.from_build(tmp_path, "smol", TEACHERS)
    assert data.families == [f"f{f}" for f in family] and data.texts[1] == texts[ids[1]]
    config = replace(lm_config(tiny_models["encoder"]), epochs=100, lr=0.1)
    result = router_eval.compare(data, TEACHERS, config, ["all", "verified"], k=2)
    accuracy = {name: row["accuracy"]["mean"] for name, row in result["methods"].items()}
    single = accuracy.pop("best single teacher")
    assert accuracy == {"lm router (all pairs)": 1.0, "lm router (verified pairs)": 1.0, "linear head (all pairs)": 1.0,
                        "linear head (verified pairs)": 1.0, "family oracle": 1.0} and single <= 0.5
    oracle = result["methods"]["family oracle"]
    assert oracle["regret"] == {"mean": 0.0, "low": 0.0, "high": 0.0}
    assert np.isclose(oracle["vs_best_single"]["mean"], 1 - single) and oracle["vs_best_single"]["p"] < 0.01
    assert result["methods"]["best single teacher"]["top1"]["mean"] == single
    table = router_eval.markdown(result)
    assert "| family oracle | 1.000 [1.000, 1.000] | 0.000 [0.000, 0.000] | 1.000 [1.000, 1.000] |" in table


def test_route_stage_reads_prompt_texts_for_an_lm_router(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """route.from_artifacts (the route stage) on a saved lm router: the pool goes where the fitted router sends it."""
    from persyn.core import io
    from persyn.params import config

    raw = config.read(Path(__file__).resolve().parents[1] / "params.toml")
    raw["teachers"] = {t: {"model": f"local:{tiny_models['teacher_a']}"} for t in TEACHERS}
    raw["router"].update(head="lm", backbone=f"local:{tiny_models['encoder']}", lm_epochs=3, lr=0.05, lm_lr=1e-3,
                         batch_size=8)
    params = config.parse(raw).for_student("smol")
    ids, texts, scores, _ = planted(40)
    pool, _ = family_prompts(12, seed=3)
    prompts = [{"id": i, "messages": [{"role": "user", "content": texts[i]}], "reference": None, "split": "router"}
               for i in ids] + [{"id": f"{k + 500:016x}", "messages": [{"role": "user", "content": t}], "reference": None,
                                 "split": "pool"} for k, t in enumerate(pool)]
    io.write_parquet(tmp_path / "data/prompts.parquet", prompts, "prompt")
    fitted = lm_router.fit(scores, {p["id"]: lm_router.prompt_text(p) for p in prompts}, TEACHERS, params.router)
    (tmp_path / "data/router/smol").mkdir(parents=True)
    router.save(fitted, tmp_path / "data/router/smol", params.router, fitted.routing.dimension)
    for teacher in TEACHERS:
        records = [s for s in scores if s["teacher"] == teacher]
        io.write_parquet(tmp_path / f"data/scores/smol/{teacher}.parquet", [{**s, "requests": []} for s in records], "score")
        io.write_parquet(tmp_path / f"data/sample/{teacher}.parquet",
                         [{"id": s["id"], "teacher": teacher, "model": "m", "response": "4", "finish_reason": "stop",
                           "completion_tokens": 1, "request": "0" * 64} for s in records], "generation")
    routing = route.from_artifacts(params, "smol", tmp_path)
    expected = fitted.routing.route([texts[i] for i in ids] + pool)
    assert routing.order == {p["id"]: [TEACHERS[k], TEACHERS[1 - k]] for p, k in zip(prompts, expected)}
