"""Stage fit_router@S: student S's rewards → preference pairs → Bradley–Terry router measured on held-out S,
refitted on all of S (router.refit_on_all) → layout.router(S), layout.metrics(S, "router"). A linear or mlp head
reads the prompt embeddings; router.head = "lm" fine-tunes router.backbone on the prompt texts."""


from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import router
from persyn.core.errors import guarded


@guarded
def main() -> None:
    student = config.stage_arguments(__doc__, "student").student
    params = config.load().for_student(student)
    teachers = sorted(params.teachers)
    scores = [r for t in teachers for r in io.read_parquet(layout.scores(student, t), "score")]
    if params.router.head == "lm":
        from persyn.pipeline import lm_router  # torch and the backbone's code load only for this head

        texts = {p["id"]: lm_router.prompt_text(p) for p in io.read_parquet(layout.PROMPTS, "prompt")}
        fitted = lm_router.fit(scores, texts, teachers, params.router)
    else:
        fitted = router.fit(scores, io.read_embeddings(layout.EMBEDDINGS), teachers, params.router)
    with io.atomic_directory(layout.router(student)) as out:
        router.save(fitted, out, params.router, fitted.routing.dimension)
    io.write_json(layout.metrics(student, "router"), fitted.metrics, "router_metrics")


if __name__ == "__main__":
    main()
