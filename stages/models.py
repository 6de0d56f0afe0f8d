"""Stage models (always run): every configured model's identity → data/models/. The files keep
their bytes while no weights change, so DVC re-runs exactly the stages whose model changed."""

from persyn import config, io, models
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    roles = {"embed": ("embed", params.embed.model),
             "quality": ("quality", params.quality.reward_model if params.quality.kind == "reward_model" else None)}
    roles.update({f"teachers/{name}": (f"teacher {name}", t.model) for name, t in params.teachers.items()})
    templates = {f"students/{name}": s.chat_template for name, s in params.students.items()}
    roles.update({f"students/{name}": (f"student {name}", s.model) for name, s in params.students.items()})
    with io.atomic_directory("data/models") as out:
        for file, (role, spec) in roles.items():
            record = {"role": role, "spec": spec,
                      "identity": models.identity(spec, templates.get(file)) if spec else None}
            io.write_json(out / f"{file}.json", record, "model_identity")


if __name__ == "__main__":
    main()
