"""Held-out router comparison on verified correctness, from a build's scored router subset S.

Reads data/prompts.parquet (texts and families), data/scores/<student>/*.parquet and
data/embeddings.parquet under --root, cuts S into --folds seeded folds (--repeats times), and for
every held-out prompt compares the LM router (router.head = "lm", router.backbone from the params),
the linear head, the best single teacher and the family oracle, each router under the pair rules
given (--pairs; default both where quality is verifiable): accuracy, regret and top-1 on verified
correctness, regret and top-1 on the proxy r, and the accuracy difference from the best single
teacher, with 95% intervals (persyn/science/router_eval.py). Prints a markdown table, the LM router's time,
and writes the JSON.

    python bench/router_bench.py --params params.toml --student smol --folds 4 --repeats 1
    python bench/router_bench.py --no-lm          # the quick look: no fine-tuning
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from persyn.params import config
from persyn.science import router_eval
from persyn.core.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default="params.toml")
    parser.add_argument("--root", type=Path, default=Path("."), help="the build whose data/ is read")
    parser.add_argument("--student", help="default: the first student in the params")
    parser.add_argument("--pairs", nargs="+", choices=["all", "verified"], help="pair rules to compare")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-lm", action="store_true", help="leave out the LM router (no fine-tuning)")
    parser.add_argument("--json", type=Path, default=Path("router_bench.json"))
    args = parser.parse_args()
    params = config.load(args.params)
    student = args.student or sorted(params.students)[0]
    teachers = sorted(params.teachers)
    rules = args.pairs or (["all", "verified"] if params.quality.verifiable else ["all"])
    data = router_eval.from_build(args.root, student, teachers)
    result = router_eval.compare(data, teachers, params.router, rules, args.folds, args.repeats, args.seed, not args.no_lm)
    result.update({"student": student, "backbone": params.router.backbone, "lm_epochs": params.router.lm_epochs})
    print(router_eval.markdown(result))
    lm_seconds = sum(row["seconds"] for name, row in result["methods"].items() if name.startswith("lm "))
    if not args.no_lm:
        fits = args.folds * args.repeats * len(rules)
        print(f"LM router ({params.router.backbone}, {params.router.lm_epochs} epochs, device {params.router.device}): "
              f"{lm_seconds:.0f} s for {fits} fits, {lm_seconds / fits:.1f} s per fit")
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
