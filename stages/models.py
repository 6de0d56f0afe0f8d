"""Stage models: every configured model's identity → data/models/. The files keep their bytes while no
weights change, so DVC re-runs exactly the stages whose model changed. DVC runs this stage when a spec
changes (params), a packaged pin changes, or weights under models/ change (dvc.yaml hashes that folder)."""

import logging
from pathlib import Path

from persyn import config, io, models
from persyn.errors import guarded

log = logging.getLogger("persyn.models")
WATCHED = Path("models")  # the folder dvc.yaml lists as a dep of this stage


def unwatched(spec: str) -> bool:
    """A local: directory outside models/, whose new weights DVC cannot notice."""
    if not spec.startswith("local:"):
        return False
    path = Path(spec.removeprefix("local:")).expanduser().resolve()
    return not path.is_relative_to(WATCHED.resolve())


@guarded
def main() -> None:
    params = config.load()
    roles = {"embed": ("embed", params.embed.model),
             "quality": ("quality", params.quality.reward_model if params.quality.kind == "reward_model" else None),
             "router": ("router backbone", params.router.backbone if params.router.head == "lm" else None)}
    roles.update({f"teachers/{name}": (f"teacher {name}", t.model) for name, t in params.teachers.items()})
    templates = {f"students/{name}": s.chat_template for name, s in params.students.items()}
    roles.update({f"students/{name}": (f"student {name}", s.model) for name, s in params.students.items()})
    for role, spec in roles.values():
        if spec and unwatched(spec):
            log.warning("%s: %s is outside models/, so DVC does not see new weights there; after replacing "
                        "them run `dvc repro --force models`", role, spec)
    with io.atomic_directory("data/models") as out:
        for file, (role, spec) in roles.items():
            record = {"role": role, "spec": spec,
                      "identity": models.identity(spec, templates.get(file)) if spec else None}
            io.write_json(out / f"{file}.json", record, "model_identity")


if __name__ == "__main__":
    main()
