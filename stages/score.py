"""Stage score@S-T: raw quality and student S's learnability of teacher T's router-subset answers
→ layout.scores(S, T)."""


from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import rewards
from persyn.pipeline.cache import RequestCache
from persyn.core.errors import guarded


@guarded
def main() -> None:
    args = config.stage_arguments(__doc__, "student", "teacher")
    name = args.teacher
    params = config.load().for_student(args.student)
    params.teacher(name)
    source = layout.sample(name)
    answers = io.read_parquet(source, "generation")
    prompts = {p["id"]: p for p in io.read_parquet(layout.PROMPTS, "prompt")}
    with RequestCache() as cache:
        records = rewards.score_answers(params, name, answers, prompts, cache, source, layout.PROMPTS)
    io.write_parquet(layout.scores(args.student, name), records, "score")


if __name__ == "__main__":
    main()
