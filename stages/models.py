"""Stage models: every configured model's identity → layout.MODELS. The files keep their bytes while no
weights change, so DVC re-runs exactly the stages whose model changed. DVC runs this stage when a spec
changes (params), a packaged pin changes, or weights under models/ change (dvc.yaml hashes that folder)."""

import logging
from pathlib import Path

from persyn.core import io, layout, models
from persyn.params import config
from persyn.core.errors import guarded

log = logging.getLogger("persyn.models")
WATCHED = Path(layout.LOCAL_MODELS)  # the folder dvc.yaml lists as a dep of this stage


def unwatched(spec: str) -> bool:
    """A local: directory outside models/, whose new weights DVC cannot notice."""
    if not spec.startswith("local:"):
        return False
    path = Path(spec.removeprefix("local:")).expanduser().resolve()
    return not path.is_relative_to(WATCHED.resolve())


@guarded
def main() -> None:
    params = config.load()
    roles = {layout.EMBED_MODEL: ("embed", params.embed.model),
             layout.QUALITY_MODEL: ("quality", params.quality.reward_model if params.quality.kind == "reward_model" else None),
             layout.ROUTER_MODEL: ("router backbone", params.router.backbone if params.router.head == "lm" else None)}
    roles.update({layout.teacher_model(name): (f"teacher {name}", t.model) for name, t in params.teachers.items()})
    templates = {layout.student_model(name): s.chat_template for name, s in params.students.items()}
    roles.update({layout.student_model(name): (f"student {name}", s.model) for name, s in params.students.items()})
    for role, spec in roles.values():
        if spec and unwatched(spec):
            log.warning("%s: %s is outside models/, so DVC does not see new weights there; after replacing "
                        "them run `dvc repro --force models`", role, spec)
    with io.atomic_directory(layout.MODELS) as out:
        for file, (role, spec) in roles.items():
            record = {"role": role, "spec": spec,
                      "identity": models.identity(spec, templates.get(file)) if spec else None}
            io.write_json(out / Path(file).relative_to(layout.MODELS), record, "model_identity")


if __name__ == "__main__":
    main()
