"""A seeded generator of grade-school arithmetic word problems with exact integer answers.

The embedded default task: quality is verifiable (the final answer is right or wrong), so the
pipeline runs end to end on a CPU with no reward model.
"""

from __future__ import annotations

import random
from typing import Callable

NAMES = ["Ava", "Ben", "Chloe", "Dan", "Emma", "Farid", "Grace", "Hiro", "Ines", "Jack", "Kofi", "Lena",
         "Maya", "Noah", "Olga", "Priya", "Quinn", "Ravi", "Sara", "Tom", "Uma", "Victor", "Wen", "Yusuf"]
ITEMS = ["apples", "marbles", "stickers", "pencils", "cookies", "cards", "books", "shells", "coins", "stamps"]
CONTAINERS = ["box", "bag", "jar", "crate", "basket"]

Problem = tuple[str, int]


def _add(r: random.Random, n: str, m: str, item: str) -> Problem:
    a, b = r.randint(3, 60), r.randint(2, 40)
    return f"{n} has {a} {item}. {n} buys {b} more. How many {item} does {n} have now?", a + b


def _subtract(r: random.Random, n: str, m: str, item: str) -> Problem:
    b = r.randint(2, 30)
    a = b + r.randint(1, 50)
    return f"{n} had {a} {item} and gave {b} of them to {m}. How many {item} does {n} have left?", a - b


def _multiply(r: random.Random, n: str, m: str, item: str) -> Problem:
    a, b, c = r.randint(2, 12), r.randint(2, 9), r.choice(CONTAINERS)
    return f"A {c} holds {a} {item}. How many {item} are in {b} such {c}es?" if c == "box" else \
        f"A {c} holds {a} {item}. How many {item} are in {b} {c}s?", a * b


def _divide(r: random.Random, n: str, m: str, item: str) -> Problem:
    each, friends = r.randint(2, 15), r.randint(2, 8)
    return (f"{n} shares {each * friends} {item} equally among {friends} friends. "
            f"How many {item} does each friend get?"), each


def _packs_minus(r: random.Random, n: str, m: str, item: str) -> Problem:
    a, b = r.randint(2, 9), r.randint(3, 12)
    c = r.randint(1, a * b - 1)
    return (f"{n} buys {a} packs of {item} with {b} {item} in each pack, then gives {c} {item} to {m}. "
            f"How many {item} does {n} have left?"), a * b - c


def _find_lose(r: random.Random, n: str, m: str, item: str) -> Problem:
    a, b = r.randint(5, 50), r.randint(2, 30)
    c = r.randint(1, a + b - 1)
    return f"{n} has {a} {item}, finds {b} more, and then loses {c}. How many {item} does {n} have now?", a + b - c


def _wage(r: random.Random, n: str, m: str, item: str) -> Problem:
    a, b = r.randint(5, 20), r.randint(2, 7)
    c = r.randint(1, a * b - 1)
    return (f"{n} earns {a} dollars a day for {b} days and then spends {c} dollars. "
            f"How many dollars does {n} have left?"), a * b - c


def _boxes_loose_give(r: random.Random, n: str, m: str, item: str) -> Problem:
    a, b, c = r.randint(2, 6), r.randint(3, 10), r.randint(1, 9)
    d = r.randint(1, a * b + c - 1)
    return (f"{n} has {a} boxes with {b} {item} in each box and {c} loose {item}. {n} gives {d} {item} to {m}. "
            f"How many {item} does {n} have now?"), a * b + c - d


def _pages(r: random.Random, n: str, m: str, item: str) -> Problem:
    a = r.randint(5, 30)
    b = r.randint(1, 2 * a - 1)
    return (f"{n} reads {a} pages on Monday, twice as many on Tuesday, and {b} fewer pages on Wednesday than on "
            f"Tuesday. How many pages does {n} read in the three days?"), a + 2 * a + (2 * a - b)


def _split_bags(r: random.Random, n: str, m: str, item: str) -> Problem:
    friends = r.randint(2, 6)
    a, b = r.randint(1, 5), r.randint(2, 8)
    total = a * b
    c = friends * r.randint(total // friends + 1, total // friends + 6) - total
    return (f"{n} has {a} bags with {b} {item} in each bag and buys {c} more {item}. {n} shares all the {item} "
            f"equally among {friends} friends. How many {item} does each friend get?"), (total + c) // friends


TEMPLATES: list[Callable[[random.Random, str, str, str], Problem]] = [
    _add, _subtract, _multiply, _divide, _packs_minus, _find_lose, _wage, _boxes_loose_give, _pages, _split_bags,
]


def generate(count: int, seed: int) -> list[dict[str, str]]:
    """`count` problems as {'prompt', 'reference'}; the same seed gives the same list."""
    rng = random.Random(seed)
    problems = []
    for _ in range(count):
        template = rng.choice(TEMPLATES)
        name, other = rng.sample(NAMES, 2)
        text, answer = template(rng, name, other, rng.choice(ITEMS))
        problems.append({"prompt": text, "reference": str(answer)})
    return problems
