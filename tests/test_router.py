from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from persyn.pipeline import router
from persyn.params.config import RouterConfig
from persyn.core.errors import PersynError


def test_zscore_and_minmax_within_prompt() -> None:
    values = np.array([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])
    z = router.normalise(values, "zscore")
    assert np.allclose(z[0], [-1.2247449, 0.0, 1.2247449]) and np.allclose(z[1], 0)
    m = router.normalise(values, "minmax")
    assert np.allclose(m[0], [0.0, 0.5, 1.0]) and np.allclose(m[1], 0)


def test_combined_reward_mixes_by_alpha() -> None:
    quality = np.array([[1.0, 0.0]])
    learn = np.array([[-2.0, -1.0]])
    assert np.allclose(router.combined_reward(quality, learn, 0.0, "minmax"), [[1.0, 0.0]])
    assert np.allclose(router.combined_reward(quality, learn, 1.0, "minmax"), [[0.0, 1.0]])
    assert np.allclose(router.combined_reward(quality, learn, 0.4, "minmax"), [[0.6, 0.4]])


def test_pairs_drop_ties_and_order_winner_first() -> None:
    reward = np.array([[0.0, 1.0, 0.05], [0.3, 0.3, 0.3]])
    pairs = router.preference_pairs(reward, tie_margin=0.1)
    assert pairs.tolist() == [[0, 1, 0], [0, 1, 2]]  # (prompt, winner, loser); 0 vs 2 is a tie
    assert len(router.preference_pairs(reward[1:], 0.0)) == 0  # all teachers tie: no pairs


def planted(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three clusters of prompts; in cluster k, teacher k is best (quality) and easiest (learnability)."""
    rng = np.random.default_rng(seed)
    centres = np.eye(3, 16) * 3
    cluster = rng.integers(0, 3, n)
    x = centres[cluster] + rng.normal(0, 0.5, (n, 16))
    quality = rng.random((n, 3)) * 0.3
    quality[np.arange(n), cluster] += 1.0
    learn = -2 + rng.random((n, 3))
    learn[np.arange(n), cluster] += 0.5
    return x.astype(np.float32), quality, learn, cluster


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_router_recovers_planted_best_teacher(head: str) -> None:
    config = RouterConfig(alpha=0.4, head=head, epochs=200, lr=0.05, tie_margin=0.1, validation_fraction=0.3)
    teachers = ["a", "b", "c"]
    x, quality, learn, cluster = planted(300, seed=0)
    ids = [f"{i:016x}" for i in range(len(x))]
    scores = [{"id": ids[i], "teacher": t, "quality": float(quality[i, k]), "learnability": float(learn[i, k])}
              for i in range(len(x)) for k, t in enumerate(teachers)]
    fitted = router.fit(scores, dict(zip(ids, x)), teachers, config)
    trained, metrics = fitted.routing, fitted.metrics
    x_new, _, _, cluster_new = planted(200, seed=1)
    assert (trained.route(x_new) == cluster_new).mean() > 0.95
    assert metrics["router"]["top1"] > 0.9
    assert metrics["pairwise_accuracy"] > 0.75  # pairs among the two non-best teachers are noise
    assert metrics["router"]["regret"] < metrics["best_single"]["regret"] < metrics["random"]["regret"] + 0.5
    assert metrics["evaluated_on"] == "validation" and metrics["prompts"] == 90
    assert abs(sum(metrics["shares"].values()) - 1) < 1e-9


def test_training_is_seeded() -> None:
    x, quality, learn, _ = planted(60, seed=2)
    reward = router.combined_reward(quality, learn, 0.4, "zscore")
    pairs = router.preference_pairs(reward, 0.1)
    config = RouterConfig(alpha=0.4, epochs=20)
    first = router.train(x, pairs, ["a", "b", "c"], config).coefficients(x)
    assert np.array_equal(first, router.train(x, pairs, ["a", "b", "c"], config).coefficients(x))


def test_no_pairs_is_a_clear_error() -> None:
    with pytest.raises(PersynError, match="no preference pairs"):
        router.train(np.zeros((2, 4)), np.zeros((0, 3), dtype=np.int64), ["a", "b"], RouterConfig(alpha=0.4))


def test_metrics_by_hand() -> None:
    """Two prompts, two teachers; the head is set so that it routes both prompts to teacher 0."""
    trained = router.Router(["a", "b"], "linear", [(np.zeros((2, 1), np.float32), np.array([1.0, 0.0], np.float32))])
    reward = np.array([[1.0, 0.0], [0.0, 2.0]])
    pairs = router.preference_pairs(reward, 0.1)
    metrics = router.evaluate(trained, np.zeros((2, 1)), reward, pairs, best_single=1)
    assert metrics["pairwise_accuracy"] == 0.5
    assert metrics["router"] == {"regret": 1.0, "top1": 0.5}
    assert metrics["best_single"] == {"teacher": "b", "regret": 0.5, "top1": 0.5}
    assert metrics["random"] == {"regret": 0.75, "top1": 0.5}
    assert metrics["shares"] == {"a": 1.0, "b": 0.0}


def test_unknown_teacher_in_scores() -> None:
    scores = [{"id": "0" * 16, "teacher": "zed", "quality": 1.0, "learnability": -1.0}]
    with pytest.raises(PersynError, match="record 0000000000000000: field 'teacher': unknown teacher 'zed'"):
        router.reward_matrices(scores, ["a", "b"], "data/scores")


def scored(x: np.ndarray, quality: np.ndarray, learn: np.ndarray, teachers: list[str]) -> tuple[list[str], list[dict]]:
    ids = [f"{i:016x}" for i in range(len(x))]
    return ids, [{"id": ids[i], "teacher": t, "quality": float(quality[i, k]), "learnability": float(learn[i, k])}
                 for i in range(len(x)) for k, t in enumerate(teachers)]


def test_refit_routes_with_all_of_s_and_measures_the_held_out_fit() -> None:
    """Cluster 2 (teacher c best) is planted only in the held-out prompts: the held-out fit never sees
    c win, so only the router refitted on all of S sends cluster 2 to c; the metrics are exactly
    those of the held-out-only fit on the held-out prompts, whether or not the router is refitted."""
    teachers = ["a", "b", "c"]
    config = RouterConfig(alpha=0.4, epochs=200, lr=0.05, validation_fraction=0.3)
    x, quality, learn, cluster = planted(200, seed=5)
    validation, training = router.split(len(x), config)
    cluster[:] = np.where(np.isin(np.arange(len(x)), validation), 2, cluster % 2)
    x = (np.eye(3, 16) * 3)[cluster].astype(np.float32) + np.random.default_rng(6).normal(0, 0.5, (len(x), 16)).astype(np.float32)
    quality = np.random.default_rng(7).random((len(x), 3)) * 0.3
    quality[np.arange(len(x)), cluster] += 1.0
    ids, scores = scored(x, quality, learn, teachers)
    fitted = router.fit(scores, dict(zip(ids, x)), teachers, config)
    reward = router.combined_reward(quality, learn, config.alpha, config.normalisation)
    on_all = router.train(x, router.preference_pairs(reward, config.tie_margin), teachers, config)
    held = router.train(x[training], router.preference_pairs(reward[training], config.tie_margin), teachers, config)
    assert np.array_equal(fitted.routing.coefficients(x), on_all.coefficients(x))
    assert np.array_equal(fitted.held_out.coefficients(x), held.coefficients(x))
    assert (fitted.routing.route(x[validation]) == 2).mean() > 0.95
    assert (fitted.held_out.route(x[validation]) == 2).mean() < 0.05
    expected = router.evaluate(held, x[validation], reward[validation],
                               router.preference_pairs(reward[validation], config.tie_margin),
                               int(reward[training].mean(axis=0).argmax()))
    assert {k: fitted.metrics[k] for k in expected} == expected
    assert fitted.metrics["router"]["top1"] < 0.05 and fitted.metrics["prompts"] == len(validation) == 60
    assert fitted.metrics["routing_fit"] == {"on": "all", "prompts": 200,
                                             "pairs": len(router.preference_pairs(reward, config.tie_margin))}
    assert fitted.held_out_ids == [ids[i] for i in validation]
    kept = router.fit(scores, dict(zip(ids, x)), teachers, replace(config, refit_on_all=False))
    assert kept.routing is kept.held_out and kept.fit_on == "training"
    assert kept.metrics["routing_fit"] == {"on": "training", "prompts": 140, "pairs": fitted.metrics["train_pairs"]}
    assert {k: v for k, v in kept.metrics.items() if k != "routing_fit"} == \
        {k: v for k, v in fitted.metrics.items() if k != "routing_fit"}


def test_save_and_load_roundtrip(tmp_path) -> None:
    x, quality, learn, _ = planted(30, seed=4)
    teachers = ["a", "b", "c"]
    config = RouterConfig(alpha=0.4, head="mlp", hidden=8, epochs=5, validation_fraction=0.3)
    ids, scores = scored(x, quality, learn, teachers)
    fitted = router.fit(scores, dict(zip(ids, x)), teachers, config)
    router.save(fitted, tmp_path, config, x.shape[1])
    loaded, meta = router.load(tmp_path)
    held, _ = router.load(tmp_path, "held_out")
    assert meta["teachers"] == teachers and np.allclose(loaded.coefficients(x), fitted.routing.coefficients(x))
    assert np.allclose(held.coefficients(x), fitted.held_out.coefficients(x))
    assert not np.allclose(held.coefficients(x), loaded.coefficients(x))
    assert meta["fit_on"] == "all" and meta["held_out_ids"] == [ids[i] for i in router.split(30, config)[0]]
    assert len(meta["held_out_ids"]) == 9
    (tmp_path / "router.json").write_text('{"teachers": ["a"], "head": "linear"}')
    with pytest.raises(PersynError, match="router.json: .*missing|router.json: teachers"):
        router.load(tmp_path)


def test_verified_pairs_drop_all_wrong_prompts_with_two_teachers() -> None:
    """Right/wrong, wrong/wrong, right/right, wrong/right: only the all-wrong prompt loses its pair."""
    quality = np.array([[1.0, 0.0], [0.0, 0.0], [1.0, 1.0], [0.0, 1.0]])
    learn = np.array([[-1.0, -2.0], [-1.0, -2.0], [-2.0, -1.0], [-1.0, -2.0]])
    reward = router.combined_reward(quality, learn, 0.4, "zscore")
    every = router.training_pairs(reward, quality, RouterConfig(alpha=0.4))
    kept = router.training_pairs(reward, quality, RouterConfig(alpha=0.4, pairs="verified"))
    assert every[:, 0].tolist() == [0, 1, 2, 3]
    assert kept.tolist() == every[every[:, 0] != 1].tolist()


def test_verified_pairs_drop_wrong_against_wrong_with_three_teachers() -> None:
    """One right answer of three: its two pairs stay, the pair of the two wrong answers goes; a
    partial credit (0.5, 0.01) is not verified right."""
    quality = np.array([[0.0, 1.0, 0.0], [0.5, 0.01, 0.0]])
    learn = np.array([[-1.0, -3.0, -2.0], [-1.0, -3.0, -2.0]])
    reward = router.combined_reward(quality, learn, 0.4, "zscore")
    every = router.training_pairs(reward, quality, RouterConfig(alpha=0.4))
    kept = router.training_pairs(reward, quality, RouterConfig(alpha=0.4, pairs="verified"))
    assert len(every) == 6
    assert sorted(map(tuple, kept.tolist())) == [(0, 1, 0), (0, 1, 2)]


def test_fit_records_what_verified_pairs_dropped() -> None:
    x, quality, learn, _ = planted(60, seed=8)
    quality = (quality > 1).astype(float)  # the planted best teacher right, the others wrong
    quality[:10] = 0.0  # ten all-wrong prompts
    teachers = ["a", "b", "c"]
    ids, scores = scored(x, quality, learn, teachers)
    reward = router.combined_reward(quality, learn, 0.4, "zscore")
    every = router.preference_pairs(reward, 0.1)
    wrong_pairs = sum(quality[p, win] < 1 and quality[p, lose] < 1 for p, win, lose in every)
    config = RouterConfig(alpha=0.4, epochs=5, pairs="verified")
    metrics = router.fit(scores, dict(zip(ids, x)), teachers, config).metrics
    assert metrics["pair_rule"] == {"rule": "verified", "dropped_pairs": wrong_pairs,
                                    "dropped_prompts": len(set(every[every[:, 0] < 10, 0].tolist()))}
    assert metrics["routing_fit"]["pairs"] == len(every) - wrong_pairs
    assert router.fit(scores, dict(zip(ids, x)), teachers, replace(config, pairs="all")).metrics["pair_rule"] == \
        {"rule": "all", "dropped_pairs": 0, "dropped_prompts": 0}


def test_verified_pairs_need_a_verifiable_quality() -> None:
    from persyn.params import config

    raw = config.read(Path(__file__).resolve().parents[1] / "params.toml")
    raw["router"]["pairs"] = "verified"
    config.parse(raw)
    raw["quality"].update(kind="reward_model", reward_model="packaged:all-minilm-l6-v2")
    with pytest.raises(PersynError, match=r"^params.toml: router.pairs = 'verified' needs a verifiable quality"):
        config.parse(raw)


@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_the_numpy_head_trains_as_torch_adamw_does(head: str) -> None:
    """From the same initial weights, router.train's gradients and AdamW steps give what torch's autograd
    and torch.optim.AdamW give (the head was fitted with torch before it was numpy)."""
    import torch

    x, quality, learn, _ = planted(40, seed=2)
    config = RouterConfig(alpha=0.4, head=head, hidden=8, epochs=60, lr=0.05, weight_decay=0.01)
    pairs = router.preference_pairs(router.combined_reward(quality, learn, 0.4, "zscore"), 0.1)
    fitted = router.train(x, pairs, ["a", "b", "c"], config)
    start = router.make_head(head, x.shape[1], 3, 8, np.random.default_rng(config.seed))
    linears = [torch.nn.Linear(w.shape[1], w.shape[0]) for w, _ in start]
    with torch.no_grad():
        for linear, (weight, bias) in zip(linears, start):
            linear.weight.copy_(torch.from_numpy(weight))
            linear.bias.copy_(torch.from_numpy(bias))
    network = torch.nn.Sequential(linears[0], torch.nn.ReLU(), linears[1]) if head == "mlp" else linears[0]
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    inputs, (prompt, winner, loser) = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(pairs).T
    for _ in range(config.epochs):
        optimiser.zero_grad()
        coefficients = network(inputs)
        margin = coefficients[prompt, winner] - coefficients[prompt, loser]
        torch.nn.functional.binary_cross_entropy_with_logits(margin, torch.ones_like(margin)).backward()
        optimiser.step()
    with torch.no_grad():
        expected = network(inputs).numpy()
    assert np.allclose(fitted.coefficients(x), expected, atol=1e-4)
    assert not np.allclose(router.Router(["a", "b", "c"], head, start).coefficients(x), expected, atol=1e-2)
