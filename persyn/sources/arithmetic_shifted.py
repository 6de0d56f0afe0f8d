"""A second, shifted arithmetic eval set: story types and phrasings `persyn.sources.arithmetic` never uses.

The built-in generator writes "<name> has N <item>s ... How many <items> does <name> have now?"
stories about possessions. A student that scores on it may have learnt that template rather than
arithmetic; these problems (travel, temperatures, ages, shopping change, recipes, buses, tanks,
scores ...) ask the same grade-school operations in other words, with other names, so accuracy on
both sets tells the two apart. tests/test_arithmetic_shifted.py checks that no phrasing overlaps.

Each template is data: a text with named slots, a seeded draw of the numbers, and the answer as
a formula of them, so that a test can check each formula on hand-picked numbers.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

PEOPLE = ["Aiko", "Bruno", "Carmen", "Dmitri", "Esther", "Felix", "Gita", "Hamid", "Ingrid", "Jonas", "Keiko",
          "Luis", "Mirela", "Nadia", "Oscar", "Petra", "Rosa", "Stefan", "Tariq", "Valentina", "Wilma", "Zane"]

Values = dict[str, int]


@dataclass(frozen=True)
class Template:
    name: str
    text: str  # str.format slots: {p} and {q} are people, the rest are the drawn numbers
    draw: Callable[[random.Random], Values]
    answer: Callable[[Values], int]

    def render(self, values: Values, p: str, q: str) -> tuple[str, int]:
        return self.text.format(p=p, q=q, **values), self.answer(values)


def _divisible(r: random.Random, low: int, high: int, by_low: int, by_high: int) -> Values:
    """a quotient and a divisor whose product is the dividend: every division is exact."""
    quotient, divisor = r.randint(low, high), r.randint(by_low, by_high)
    return {"total": quotient * divisor, "by": divisor}


def _pizzas(r: random.Random) -> Values:
    pizzas, slices = r.randint(2, 8), r.choice([6, 8, 10, 12])
    guests = r.choice([g for g in range(2, 21) if pizzas * slices % g == 0])
    return {"pizzas": pizzas, "slices": slices, "guests": guests}


TEMPLATES: list[Template] = [
    Template("train", "A train travels at {speed} kilometres per hour for {hours} hours without stopping. What "
             "distance does it cover, in kilometres?",
             lambda r: {"speed": r.randint(4, 12) * 10, "hours": r.randint(2, 6)}, lambda v: v["speed"] * v["hours"]),
    Template("temperature", "At dawn the thermometer read {start} degrees. By noon it had risen by {up} degrees, and "
             "by midnight it had dropped {down} degrees from the noon reading. What was the midnight temperature?",
             lambda r: (lambda s, u: {"start": s, "up": u, "down": r.randint(1, s + u)})(r.randint(2, 20), r.randint(3, 15)),
             lambda v: v["start"] + v["up"] - v["down"]),
    Template("ages", "{p} is {gap} years older than {q}. In {later} years {q} will be {future}. How old is {p} today?",
             lambda r: {"gap": r.randint(2, 30), "later": r.randint(1, 9), "future": r.randint(12, 40)},
             lambda v: v["future"] - v["later"] + v["gap"]),
    Template("change", "A notebook costs {price} dollars. {p} pays for {count} notebooks with a {bill}-dollar bill. "
             "How much change should the cashier return?",
             lambda r: (lambda price, count: {"price": price, "count": count,
                                               "bill": next(b for b in (20, 50, 100) if b >= price * count)})(
                 r.randint(2, 9), r.randint(2, 10)),
             lambda v: v["bill"] - v["price"] * v["count"]),
    Template("recipe", "A soup recipe uses {per} carrots for each person. {p} cooks it for {guests} guests and also "
             "keeps {spare} carrots aside. What is the total number of carrots needed?",
             lambda r: {"per": r.randint(2, 5), "guests": r.randint(3, 12), "spare": r.randint(1, 6)},
             lambda v: v["per"] * v["guests"] + v["spare"]),
    Template("bus", "A bus leaves the depot carrying {start} passengers. At the first stop {off} get off and {on} get "
             "on. At the second stop {off2} more get off. Count the passengers still aboard.",
             lambda r: (lambda s, off, on: {"start": s, "off": off, "on": on, "off2": r.randint(1, s - off + on)})(
                 r.randint(15, 45), r.randint(1, 14), r.randint(1, 20)),
             lambda v: v["start"] - v["off"] + v["on"] - v["off2"]),
    Template("garden", "In the school garden there are {rows} rows of tulips, {per} tulips per row. {p} plants {extra} "
             "more tulips along the fence. Find the total number of tulips in the garden.",
             lambda r: {"rows": r.randint(3, 12), "per": r.randint(4, 15), "extra": r.randint(2, 30)},
             lambda v: v["rows"] * v["per"] + v["extra"]),
    Template("savings", "Each week {p} puts {weekly} euros into a piggy bank. After {weeks} weeks, {p} spends {spent} "
             "euros on a kite. What amount of money remains in the piggy bank?",
             lambda r: (lambda w, n: {"weekly": w, "weeks": n, "spent": r.randint(1, w * n)})(r.randint(3, 15),
                                                                                            r.randint(2, 10)),
             lambda v: v["weekly"] * v["weeks"] - v["spent"]),
    Template("tank", "A water tank with room for {total} litres is filled by a pipe delivering {by} litres every "
             "minute. Starting empty, after how many minutes is the tank full?",
             lambda r: _divisible(r, 4, 30, 3, 25), lambda v: v["total"] // v["by"]),
    Template("laps", "The pool is {length} metres long. {p} swims {laps} lengths in the morning and {more} lengths in "
             "the evening. What distance does {p} swim that day, in metres?",
             lambda r: {"length": r.choice([25, 50]), "laps": r.randint(2, 12), "more": r.randint(2, 12)},
             lambda v: v["length"] * (v["laps"] + v["more"])),
    Template("teams", "{total} children turn up for a football tournament, and the coach forms teams of exactly {by} "
             "players. Into how many teams are the children divided?",
             lambda r: _divisible(r, 2, 12, 5, 11), lambda v: v["total"] // v["by"]),
    Template("score", "In a basketball game {p} scored {twos} two-point baskets and {threes} three-point baskets. "
             "What were {p}'s total points?",
             lambda r: {"twos": r.randint(1, 12), "threes": r.randint(0, 8)}, lambda v: 2 * v["twos"] + 3 * v["threes"]),
    Template("library", "On Friday the library lent out {lent} novels. By Saturday, {back} of those novels were "
             "returned, and {q} borrowed {again} others. How many novels were still out on loan?",
             lambda r: (lambda lent, back: {"lent": lent, "back": back, "again": r.randint(1, 10)})(r.randint(20, 80),
                                                                                                 r.randint(1, 19)),
             lambda v: v["lent"] - v["back"] + v["again"]),
    Template("pizza", "{p} orders {pizzas} pizzas, each cut into {slices} slices, for a party of {guests} guests. "
             "Every guest eats the same number of slices and none are left. How many slices does each guest eat?",
             lambda r: _pizzas(r), lambda v: v["pizzas"] * v["slices"] // v["guests"]),
    Template("stairs", "A building has {floors} floors with {steps} steps between each floor and the next. {p} "
             "climbs from the ground floor to floor {target}. Work out how many steps {p} climbs.",
             lambda r: (lambda floors: {"floors": floors, "steps": r.randint(10, 24), "target": r.randint(2, floors)})(
                 r.randint(4, 15)),
             lambda v: v["steps"] * v["target"]),
    Template("minutes", "{p} practises the violin for {a} minutes before school and {b} minutes after dinner, on {days} "
             "consecutive days. What is the total practice time in minutes?",
             lambda r: {"a": r.randint(10, 45), "b": r.randint(10, 45), "days": r.randint(2, 7)},
             lambda v: (v["a"] + v["b"]) * v["days"]),
    Template("fence", "A rectangular field measures {w} metres by {h} metres. What length of fencing, in metres, goes "
             "all the way around it?",
             lambda r: {"w": r.randint(5, 60), "h": r.randint(5, 60)}, lambda v: 2 * (v["w"] + v["h"])),
    Template("tickets", "A cinema sold {adult} adult tickets at {ap} dollars and {child} child tickets at {cp} dollars. "
             "What was the cinema's revenue from these tickets, in dollars?",
             lambda r: {"adult": r.randint(3, 40), "ap": r.randint(8, 15), "child": r.randint(2, 30), "cp": r.randint(3, 7)},
             lambda v: v["adult"] * v["ap"] + v["child"] * v["cp"]),
]


def generate(count: int, seed: int) -> list[dict[str, str]]:
    """`count` distinct problems as {'prompt', 'reference'}; the same seed gives the same list."""
    rng = random.Random(seed)
    problems: dict[str, str] = {}
    for _ in range(count * 50):
        if len(problems) == count:
            break
        template = rng.choice(TEMPLATES)
        p, q = rng.sample(PEOPLE, 2)
        text, answer = template.render(template.draw(rng), p, q)
        problems.setdefault(text, str(answer))
    if len(problems) < count:
        raise ValueError(f"only {len(problems)} distinct shifted problems for seed {seed}; asked for {count}")
    return [{"prompt": text, "reference": answer} for text, answer in problems.items()]
