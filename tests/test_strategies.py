import numpy as np
import pytest

from persyn.pipeline import route
from persyn.params.config import RouteConfig
from persyn.core.errors import PersynError
from persyn.pipeline.router import Router

TEACHERS = ["big", "mid", "small"]
IDS = [f"{i:016x}" for i in range(200)]


def router_preferring(index_by_sign: tuple[int, int]) -> Router:
    """A linear head on 1-d embeddings: teacher index_by_sign[0] for x > 0, index_by_sign[1] for x < 0."""
    weight = np.zeros((3, 1), dtype=np.float32)
    weight[index_by_sign[0], 0], weight[index_by_sign[1], 0] = 1.0, -1.0
    return Router(TEACHERS, "linear", [(weight, np.zeros(3, dtype=np.float32))])


def scores(quality: dict[str, float], learnability: dict[str, float]) -> list[dict]:
    """Synthetic subset rewards: four prompts per teacher at the given means."""
    return [{"id": f"{i:016x}", "teacher": t, "quality": quality[t], "learnability": learnability[t]}
            for t in TEACHERS for i in range(4)]


SCORES = scores({"big": 0.8, "mid": 0.5, "small": 0.2}, {"big": -3.0, "mid": -0.5, "small": -0.4})
X = np.linspace(-1, 1, len(IDS)).reshape(-1, 1)


def picks(strategy: str, **extra) -> list[list[int]]:
    return route.choose(RouteConfig(strategy=strategy, **extra), IDS, router_preferring((0, 2)), X, SCORES)


def test_persyn_follows_the_router() -> None:
    chosen = [c[0] for c in picks("persyn")]
    assert chosen == [2] * 100 + [0] * 100


def test_single_teacher_strategies() -> None:
    assert {c[0] for c in picks("strongest")} == {0}  # best mean quality
    assert {c[0] for c in picks("fixed:mid")} == {1}
    # car: quality / (1 + beta * loss): big 0.8/4 = 0.2, mid 0.5/1.5 = 0.33, small 0.2/1.4 = 0.14
    assert {c[0] for c in picks("car", car_beta=1.0)} == {1}
    assert {c[0] for c in picks("car", car_beta=0.0)} == {0}  # no loss discount: the strongest


def test_random_and_mix_are_seeded() -> None:
    first = picks("random", seed=3)
    assert first == picks("random", seed=3) != picks("random", seed=4)
    assert {c[0] for c in first} == {0, 1, 2}
    mix = [c[0] for c in picks("mix", seed=1, mix_ratio=0.25)]
    assert set(mix) == {0, 2}  # strongest and weakest only
    assert 0.15 < mix.count(0) / len(mix) < 0.35


def test_oracle_asks_every_teacher() -> None:
    assert picks("oracle") == [[0, 1, 2]] * len(IDS)


def test_unknown_fixed_teacher() -> None:
    with pytest.raises(PersynError, match="route.strategy: unknown teacher 'huge'"):
        picks("fixed:huge")


def test_assign_covers_router_and_pool_only() -> None:
    prompts = [{"id": i, "split": s} for i, s in zip(IDS[:6], ["router", "pool", "eval", "pool", "router", "eval"])]
    embeddings = dict(zip(IDS, X))
    assignment = route.assign(RouteConfig("fixed:small"), prompts, router_preferring((0, 2)), embeddings, SCORES)
    assert assignment == {"big": [], "mid": [], "small": sorted([IDS[0], IDS[1], IDS[3], IDS[4]])}
