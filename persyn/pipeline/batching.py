"""How requests and rows are cut into batches: batches of similar length in a seeded random order (what
the LM router and the student's training run through a model, so that a batch pads little and the
order is still a shuffle), and requests in batches of even size (what the request cache computes)."""

from __future__ import annotations

import math
from typing import Sequence, TypeVar

import numpy as np

T = TypeVar("T")


def even_batches(items: Sequence[T], most: int) -> list[list[T]]:
    """`items` in order, in as few batches as `most` per batch allows, their sizes differing by at most
    one: 38 requests at 32 are two batches of 19, not 32 and a batch of 6 that decodes as long as a
    full one with the cores half idle."""
    count, total = math.ceil(len(items) / most), len(items)
    return [list(items[total * k // count: total * (k + 1) // count]) for k in range(count)]


def length_batches(items: np.ndarray, lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch's batches of `items` (row indices into `lengths`): a seeded shuffle, sorted by length
    within windows of 8 batches, the batches then in a seeded order. A batch pads little: on 225 prompts
    of four reasoning-gym families the LM router's backbone runs 47% of the tokens a plain shuffle's
    batches pad to; on the default's 121 training records, 74%."""
    order = rng.permutation(items)
    windows = np.split(order, range(8 * size, len(order), 8 * size))
    order = np.concatenate([w[np.argsort(lengths[w], kind="stable")] for w in windows])
    found = [order[i: i + size] for i in range(0, len(order), size)]
    return [found[i] for i in rng.permutation(len(found))]
