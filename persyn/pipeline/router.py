"""The PerSyn router: rewards → pairwise preferences → a Bradley–Terry coefficient head.

For each router-subset prompt, quality and learnability are normalised across teachers, mixed as
r = (1-α)·r_q + α·r_l, and every teacher pair with a gap above the tie margin becomes a label
(under router.pairs = "verified", only a pair with a verified-right answer in it). A head gives
π(x) ∈ R^teachers with P(B≻A|x) = σ(π_B − π_A): linear or mlp over frozen prompt embeddings, or
router.head = "lm", a backbone fine-tuned end to end on the prompt text (persyn.pipeline.lm_router, which
fits and loads through this module; this one does not import it, so the stages that only mix
rewards do not depend on the backbone code).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from persyn.core import layout
from persyn.params.config import RouterConfig
from persyn.core.errors import PersynError
from persyn.core.io import read_json, write_json

def normalise(values: np.ndarray, method: str) -> np.ndarray:
    """Normalise each row (one prompt, all teachers); a row with no spread becomes zeros."""
    values = values.astype(np.float64)
    if method == "zscore":
        centred = values - values.mean(axis=1, keepdims=True)
        spread = values.std(axis=1, keepdims=True)
    else:
        centred = values - values.min(axis=1, keepdims=True)
        spread = values.max(axis=1, keepdims=True) - values.min(axis=1, keepdims=True)
    safe = np.where(spread > 1e-12, spread, 1.0)
    return np.where(spread > 1e-12, centred / safe, 0.0)


def combined_reward(quality: np.ndarray, learnability: np.ndarray, alpha: float, method: str) -> np.ndarray:
    """r = (1-α)·norm(r_q) + α·norm(r_l), per prompt across teachers."""
    return (1 - alpha) * normalise(quality, method) + alpha * normalise(learnability, method)


def preference_pairs(reward: np.ndarray, tie_margin: float) -> np.ndarray:
    """Rows (prompt, winner, loser) for every teacher pair whose reward gap exceeds the margin."""
    pairs = []
    teachers = reward.shape[1]
    for prompt, row in enumerate(reward):
        for a in range(teachers):
            for b in range(a + 1, teachers):
                gap = row[b] - row[a]
                if abs(gap) > tie_margin:
                    pairs.append((prompt, b, a) if gap > 0 else (prompt, a, b))
    return np.array(pairs, dtype=np.int64).reshape(-1, 3)


def verified(quality: np.ndarray) -> np.ndarray:
    """Answers verified right: full credit (math's 1, a verifier's 1.0). Partial credit does not count,
    since some verifiers give a well-formed wrong answer 0.01 and an all-wrong prompt must give no pairs."""
    return quality >= 1


def training_pairs(reward: np.ndarray, quality: np.ndarray, config: RouterConfig) -> np.ndarray:
    """The pairs the router learns from: every pair past the tie margin, or under router.pairs =
    "verified" only those with at least one verified-right answer (learnability then ranks right
    answers against each other and against wrong ones, never two wrong ones)."""
    pairs = preference_pairs(reward, config.tie_margin)
    if config.pairs == "all":
        return pairs
    right = verified(quality)
    return pairs[right[pairs[:, 0], pairs[:, 1]] | right[pairs[:, 0], pairs[:, 2]]]


# A head is its Linear layers as (weight out×in, bias) pairs, ReLU between them; the saved names are
# torch's (a Linear's "weight"/"bias", an mlp's "0.*" and "2.*"), so a router saved by either loads.
Layers = list[tuple[np.ndarray, np.ndarray]]
NAMES = {"linear": [""], "mlp": ["0.", "2."]}


def require_embedding_head(kind: str) -> None:
    if kind not in NAMES:
        raise PersynError(f"router.head = '{kind}' is no head over embeddings: fit and load it with persyn.pipeline.lm_router")


def make_head(kind: str, dimension: int, teachers: int, hidden: int, rng: np.random.Generator) -> Layers:
    """A fresh head, initialised as torch.nn.Linear is: weight and bias uniform in ±1/√fan_in."""
    require_embedding_head(kind)
    widths = [dimension, teachers] if kind == "linear" else [dimension, hidden, teachers]
    layers = []
    for fan_in, fan_out in zip(widths, widths[1:]):
        bound = 1 / np.sqrt(fan_in)
        layers.append((rng.uniform(-bound, bound, (fan_out, fan_in)).astype(np.float32),
                       rng.uniform(-bound, bound, fan_out).astype(np.float32)))
    return layers


def forward(layers: Layers, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's input, then the output π (ReLU between layers)."""
    states = [np.asarray(x, dtype=np.float32)]
    for depth, (weight, bias) in enumerate(layers):
        out = states[-1] @ weight.T + bias
        states.append(np.maximum(out, 0) if depth < len(layers) - 1 else out)
    return states


class Trained(Protocol):
    """What fit, evaluate and save need of a router: a Router here, or a persyn.pipeline.lm_router.LMRouter."""

    teachers: list[str]

    @property
    def dimension(self) -> int: ...

    def coefficients(self, inputs: Any) -> np.ndarray: ...

    def route(self, inputs: Any) -> np.ndarray: ...

    def save_weights(self, path: Path) -> None: ...


@dataclass
class Router:
    """A trained coefficient head over embeddings (numpy: fitting and routing import no torch) and the
    teacher order its outputs follow."""

    teachers: list[str]
    kind: str
    layers: Layers

    @property
    def dimension(self) -> int:
        return int(self.layers[0][0].shape[1])

    def coefficients(self, embeddings: np.ndarray) -> np.ndarray:
        return forward(self.layers, embeddings)[-1]

    def route(self, embeddings: np.ndarray) -> np.ndarray:
        """Index of the chosen teacher per prompt; ties go to the first teacher in order."""
        return self.coefficients(embeddings).argmax(axis=1)

    def save_weights(self, path: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {}
        for prefix, (weight, bias) in zip(NAMES[self.kind], self.layers):
            tensors |= {f"{prefix}weight": np.ascontiguousarray(weight), f"{prefix}bias": np.ascontiguousarray(bias)}
        save_file(tensors, str(path))


def require_pairs(pairs: np.ndarray) -> None:
    if len(pairs) == 0:
        raise PersynError(
            "router: no preference pairs (every teacher tied on every training prompt, or under router.pairs = "
            "'verified' no answer verified right); lower router.tie_margin or enlarge prompts.router_size"
        )


def gradients(layers: Layers, x: np.ndarray, pairs: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """d loss / d (weight, bias) per layer, loss = mean over pairs of −log σ(π_winner − π_loser)."""
    states = forward(layers, x)
    prompt, winner, loser = pairs[:, 0], pairs[:, 1], pairs[:, 2]
    coefficients = states[-1]
    margin = coefficients[prompt, winner] - coefficients[prompt, loser]
    slope = (-0.5 * (1 - np.tanh(margin / 2)) / len(pairs)).astype(np.float32)  # d loss / d margin = −σ(−margin)/n
    upstream = np.zeros_like(coefficients)
    np.add.at(upstream, (prompt, winner), slope)
    np.add.at(upstream, (prompt, loser), -slope)
    found = []
    for depth in range(len(layers) - 1, -1, -1):
        weight, _ = layers[depth]
        found.append((upstream.T @ states[depth], upstream.sum(axis=0)))
        if depth:
            upstream = (upstream @ weight) * (states[depth] > 0)
    return found[::-1]


def train(inputs: np.ndarray, pairs: np.ndarray, teachers: list[str], config: RouterConfig) -> Router:
    """Fit the head over the embeddings: full-batch Bradley–Terry loss, AdamW as torch steps it (betas
    0.9 and 0.999, eps 1e-8, decoupled weight decay), seeded."""
    require_pairs(pairs)
    layers = make_head(config.head, inputs.shape[1], len(teachers), config.hidden, np.random.default_rng(config.seed))
    x = np.asarray(inputs, dtype=np.float32)
    parameters = [array for layer in layers for array in layer]
    first = [np.zeros_like(p) for p in parameters]
    second = [np.zeros_like(p) for p in parameters]
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    for step in range(1, config.epochs + 1):
        grads = [g for layer in gradients(layers, x, pairs) for g in layer]
        for k, grad in enumerate(grads):
            first[k] = beta1 * first[k] + (1 - beta1) * grad
            second[k] = beta2 * second[k] + (1 - beta2) * grad * grad
            denominator = np.sqrt(second[k] / (1 - beta2 ** step)) + eps
            decayed = parameters[k] * (1 - config.lr * config.weight_decay)
            parameters[k] = (decayed - config.lr / (1 - beta1 ** step) * first[k] / denominator).astype(np.float32)
        layers = list(zip(parameters[::2], parameters[1::2]))
    return Router(teachers, config.head, layers)


def evaluate(router: Trained, inputs: np.ndarray, reward: np.ndarray, pairs: np.ndarray,
             best_single: int) -> dict[str, object]:
    """Held-out pairwise accuracy, top-1 agreement with the oracle teacher, regret and shares."""
    coefficients = router.coefficients(inputs)
    routed = coefficients.argmax(axis=1)
    best = reward.max(axis=1)
    rows = np.arange(len(reward))

    def summary(choice_reward: np.ndarray, agree: np.ndarray) -> dict[str, float]:
        return {"regret": float((best - choice_reward).mean()), "top1": float(agree.mean())}

    at_best = np.isclose(reward, best[:, None])
    pairwise = (coefficients[pairs[:, 0], pairs[:, 1]] > coefficients[pairs[:, 0], pairs[:, 2]]).mean() if len(pairs) else None
    return {
        "prompts": int(len(reward)),
        "pairs": int(len(pairs)),
        "pairwise_accuracy": None if pairwise is None else float(pairwise),
        "router": summary(reward[rows, routed], at_best[rows, routed]),
        "best_single": {"teacher": router.teachers[best_single], **summary(reward[:, best_single], at_best[:, best_single])},
        "random": summary(reward.mean(axis=1), at_best.mean(axis=1)),
        "shares": {t: float((routed == i).mean()) for i, t in enumerate(router.teachers)},
    }


def reward_matrices(scores: list[dict], teachers: list[str], source: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Prompt ids answered by every teacher, with quality and learnability as prompt × teacher arrays."""
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for record in scores:
        if record["teacher"] not in teachers:
            raise PersynError(f"{source}: record {record['id']}: field 'teacher': unknown teacher '{record['teacher']}'")
        table.setdefault(record["id"], {})[record["teacher"]] = (record["quality"], record["learnability"])
    ids = sorted(i for i, row in table.items() if len(row) == len(teachers))
    if len(ids) < 2:
        raise PersynError(f"{source}: fewer than 2 prompts were scored for every teacher ({', '.join(teachers)})")
    quality = np.array([[table[i][t][0] for t in teachers] for i in ids])
    learn = np.array([[table[i][t][1] for t in teachers] for i in ids])
    return ids, quality, learn


def split(count: int, config: RouterConfig) -> tuple[list[int], list[int]]:
    """Seeded validation and training rows of S; fit saves the validation ids with the router."""
    order = list(range(count))
    random.Random(config.seed).shuffle(order)
    held = int(round(count * config.validation_fraction))
    return sorted(order[:held]), sorted(order[held:])


@dataclass
class Fit:
    """What fit_router keeps: the router that routes, the one its held-out metrics measure (the same
    object when it was not refitted), the held-out prompt ids of S, and the metrics."""

    routing: Trained
    held_out: Trained
    held_out_ids: list[str]
    metrics: dict[str, object]

    @property
    def fit_on(self) -> str:
        return "all" if self.routing is not self.held_out or not self.held_out_ids else "training"


def stacked(inputs: dict[str, np.ndarray] | dict[str, str], ids: list[str], config: RouterConfig) -> np.ndarray:
    """The router's inputs for `ids` as rows: embeddings as a matrix, or (head lm) prompt texts."""
    missing = [i for i in ids if i not in inputs]
    if missing:
        where = f"{layout.PROMPTS}: no prompt" if config.head == "lm" else f"{layout.EMBEDDINGS}: no embedding for prompt"
        raise PersynError(f"{where} {missing[0]}")
    return np.array([inputs[i] for i in ids], dtype=object) if config.head == "lm" else np.stack([inputs[i] for i in ids])


def fit(scores: list[dict], inputs: dict[str, np.ndarray] | dict[str, str], teachers: list[str], config: RouterConfig,
        source: str = layout.SCORES, trainer: Callable[..., Trained] = train) -> Fit:
    """Split S into train/validation (seeded), train on one, report metrics on the other; then, with
    router.refit_on_all, fit the routing router again on all of S: the held-out measurement is of
    the recipe, and routing gets every labelled prompt. `inputs` maps prompt ids to embeddings, or
    under head lm to prompt texts (lm_router.fit passes its trainer)."""
    ids, quality, learn = reward_matrices(scores, teachers, source)
    x = stacked(inputs, ids, config)
    reward = combined_reward(quality, learn, config.alpha, config.normalisation)
    validation, training = split(len(ids), config)
    train_pairs = training_pairs(reward[training], quality[training], config)
    held_out = trainer(x[training], train_pairs, teachers, config)
    best_single = int(reward[training].mean(axis=0).argmax())
    evaluated = validation or training
    metrics = evaluate(held_out, x[evaluated], reward[evaluated],
                       training_pairs(reward[evaluated], quality[evaluated], config), best_single)
    routing, routing_pairs = held_out, train_pairs
    kept, every = training_pairs(reward, quality, config), preference_pairs(reward, config.tie_margin)
    if config.refit_on_all and validation:
        routing_pairs = kept
        routing = trainer(x, routing_pairs, teachers, config)
    result = Fit(routing, held_out, [ids[i] for i in validation], metrics)
    metrics.update({
        "evaluated_on": "validation" if validation else "training",
        "alpha": config.alpha,
        "train_prompts": len(training),
        "train_pairs": int(len(train_pairs)),
        "routing_fit": {"on": result.fit_on, "prompts": len(ids) if result.fit_on == "all" else len(training),
                        "pairs": int(len(routing_pairs))},
        "tied_prompts": int(sum(not len(preference_pairs(reward[[i]], config.tie_margin)) for i in range(len(ids)))),
        "pair_rule": {"rule": config.pairs, "dropped_pairs": int(len(every) - len(kept)),
                      "dropped_prompts": len(set(every[:, 0].tolist()) - set(kept[:, 0].tolist()))},
        "mean_quality": {t: float(quality[:, k].mean()) for k, t in enumerate(teachers)},
        "mean_learnability": {t: float(learn[:, k].mean()) for k, t in enumerate(teachers)},
    })
    return result


HEADS = {"routing": "head.safetensors", "held_out": "held_out.safetensors"}


def save(fitted: Fit, directory: Path, config: RouterConfig, dimension: int) -> None:
    """Both routers' weights as safetensors (stable bytes; identical files when not refitted; under
    head lm the whole fine-tuned backbone), the held-out ids (so the report reads the split instead
    of redrawing it) and the settings that rebuild a router."""
    for which, trained in (("routing", fitted.routing), ("held_out", fitted.held_out)):
        trained.save_weights(directory / HEADS[which])
    meta = {"teachers": fitted.routing.teachers, "head": config.head, "hidden": config.hidden,
            "dimension": dimension, "alpha": config.alpha, "fit_on": fitted.fit_on,
            "held_out_ids": fitted.held_out_ids}
    if config.head == "lm":
        meta["backbone"] = fitted.routing.settings()
    write_json(directory / "router.json", meta, "router_model")


def load(directory: Path, which: str = "routing") -> tuple[Router, dict]:
    """The routing router (fit on all of S under router.refit_on_all), or with which="held_out" the fit
    whose measurement on meta["held_out_ids"] is the router metrics; lm_router.load loads every head."""
    from safetensors.numpy import load_file

    meta = read_json(directory / "router.json", "router_model")
    require_embedding_head(meta["head"])
    tensors = load_file(str(directory / HEADS[which]))
    layers = [(tensors[f"{prefix}weight"], tensors[f"{prefix}bias"]) for prefix in NAMES[meta["head"]]]
    return Router(meta["teachers"], meta["head"], layers), meta
