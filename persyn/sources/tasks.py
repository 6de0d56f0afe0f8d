"""reasoning-gym task families as a prompt source, and each family's own verifier as quality.

`prompts.source = "reasoning_gym"` draws `prompts.count` prompts from the families listed in
`prompts.tasks` (family name, weight, the family's own config), each family with a seed derived from
prompts.seed and its name, so adding a family leaves the others' prompts as they were. Every prompt
keeps its family and, in the `verifier` field, what reasoning-gym's `score_answer` reads: the family,
its config and the entry (question, answer, metadata) as sorted JSON, so a prompt is verified
without params.

The teachers are asked (in their system prompt) to end with a line `Answer: <answer>`; `extract`
takes the final answer from `<answer>…</answer>` (reasoning-gym's own format), else the last
`Answer:` line, else `the answer is …`, else `\\boxed{…}`, else the last non-empty line; an answer
written as a calculation keeps what follows its last '='. The family's `score_answer` then gives 0..1
(partial credit where the family gives it: reasoning-gym's default gives len(reference)/len(answer)
when the answer contains the reference). A prompt counts as answered right at 1.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from typing import Any, Iterable

from persyn.core.errors import PersynError


def _gym() -> Any:
    """reasoning_gym, imported where it is used (it takes about a second to import)."""
    try:
        import reasoning_gym
    except ModuleNotFoundError:
        raise PersynError("prompts.source = 'reasoning_gym' needs the reasoning-gym package: "
                          "pip install 'reasoning-gym==0.1.25'") from None
    return reasoning_gym


def family_seed(seed: int, family: str) -> int:
    """A family's generator seed: stable across runs and independent of the other families."""
    return int(hashlib.sha256(f"{seed}:{family}".encode()).hexdigest()[:8], 16)


def allocate(count: int, weights: list[float]) -> list[int]:
    """`count` split by weight, largest remainder first (ties to the earlier task): sums to `count`."""
    total = sum(weights)
    exact = [count * w / total for w in weights]
    shares = [int(x) for x in exact]
    by_remainder = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in by_remainder[: count - sum(shares)]:
        shares[i] += 1
    return shares


@functools.lru_cache(maxsize=None)
def _dataset(family: str, config_json: str, size: int = 1, seed: int = 0) -> Any:
    """The family's dataset under a config; a name or config reasoning-gym refuses is one error."""
    gym = _gym()
    from reasoning_gym.factory import DATASETS

    if family not in DATASETS:
        close = sorted(name for name in DATASETS if family.split("_")[0] in name)[:5]
        hint = f" (similar: {', '.join(close)})" if close else f" ({len(DATASETS)} families: see reasoning_gym.factory.DATASETS)"
        raise PersynError(f"params.toml: prompts.tasks: unknown reasoning-gym family '{family}'{hint}")
    try:
        return gym.create_dataset(family, size=size, seed=seed, **json.loads(config_json))
    except (TypeError, ValueError, AssertionError, KeyError) as error:
        raise PersynError(f"params.toml: prompts.tasks: family '{family}': bad config "
                          f"{config_json}: {error or type(error).__name__}") from None


def _config_json(config: dict[str, Any]) -> str:
    return json.dumps(config, sort_keys=True)


def check_tasks(tasks: Iterable[dict[str, Any]]) -> None:
    """Every family exists and accepts its config: caught at `persyn check`, before any model loads."""
    seen: set[str] = set()
    for task in tasks:
        family = task["family"]
        if family in seen:
            raise PersynError(f"params.toml: prompts.tasks: family '{family}' is listed twice; list it once")
        seen.add(family)
        _dataset(family, _config_json(task.get("config", {})))


def generate(tasks: Iterable[dict[str, Any]], count: int, seed: int) -> list[dict[str, Any]]:
    """`count` prompts over the tasks by weight, as {prompt, reference, family, verifier, label}.
    An entry whose own reference the family's verifier does not accept after the JSON round trip
    cannot be verified: it stops the build naming the family."""
    tasks = list(tasks)
    rows = []
    for task, size in zip(tasks, allocate(count, [float(t.get("weight", 1.0)) for t in tasks])):
        if size == 0:
            continue
        family, config = task["family"], task.get("config", {})
        dataset = _dataset(family, _config_json(config), size, family_seed(seed, family))
        for index in range(size):
            entry = json.loads(json.dumps(dict(dataset[index]), sort_keys=True, default=list))
            verifier = json.dumps({"family": family, "config": config, "entry": entry}, sort_keys=True)
            if dataset.score_answer(answer=entry["answer"], entry=entry) < 1.0:
                raise PersynError(f"params.toml: prompts.tasks: family '{family}': entry {index} cannot be verified (the "
                                  f"family's verifier gives its own reference {entry['answer']!r:.40} less than 1): "
                                  "change the family's config or leave the family out")
            rows.append({"prompt": entry["question"], "reference": str(entry["answer"]), "family": family,
                         "verifier": verifier, "label": f"{family} entry {index}"})
    return rows


def _strip(answer: str) -> str:
    """An extracted answer without markdown emphasis, surrounding quotes or a closing full stop; an
    answer written as a calculation ('15 - 93 = -78') keeps what follows its last '='."""
    answer = answer.strip().strip("*").strip()
    if "=" in answer:
        answer = answer.rsplit("=", 1)[1].strip()
    if len(answer) > 1 and answer[0] == answer[-1] and answer[0] in "\"'`":
        answer = answer[1:-1].strip()
    return answer[:-1].rstrip() if answer.endswith(".") else answer


def extract(response: str) -> str | None:
    """The final answer of a response (see the module docstring for the order); None if empty."""
    tagged = re.findall(r"<answer>(.*?)</answer>", response, flags=re.DOTALL | re.IGNORECASE)
    if tagged:
        return _strip(tagged[-1])
    lines = re.findall(r"^\s*[*#>-]*\s*(?:final\s+)?answer\s*[:：]\s*(.+?)\s*$", response, flags=re.IGNORECASE | re.MULTILINE)
    if lines:
        return _strip(lines[-1])
    stated = re.findall(r"the (?:final )?answer is[:\s]*(.+?)\s*$", response, flags=re.IGNORECASE | re.MULTILINE)
    if stated:
        return _strip(stated[-1])
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", response)
    if boxed:
        return _strip(boxed[-1])
    rest = [line for line in response.splitlines() if line.strip()]
    return _strip(rest[-1]) if rest else None


def verify(response: str, verifier: str) -> float:
    """The family's own score (0..1) of the response's final answer: 0 where there is none, and where the
    verifier cannot read it (prime_factorization's raises ValueError on "x"): a teacher's odd answer is
    wrong, not the end of the build."""
    found = json.loads(verifier)
    dataset = _dataset(found["family"], _config_json(found["config"]))
    answer = extract(response)
    if answer is None:
        return 0.0
    try:
        return float(dataset.score_answer(answer=answer, entry=found["entry"]))
    except Exception:  # reasoning-gym's verifiers raise many types on answers they cannot parse
        return 0.0
