"""Stage train@S: fine-tune student S on layout.dataset(S) → layout.trained(S), layout.metrics(S, "train"),
layout.plot(S, "train_loss"); the checkpoint is also converted for the student's engine (model cache)."""

from pathlib import Path

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import dataset
from persyn.core.errors import guarded


@guarded
def main() -> None:
    name = config.stage_arguments(__doc__, "student").student
    student = config.load().for_student(name).student
    records = dataset.read(Path(layout.dataset(name)))
    from persyn.pipeline import train  # torch and transformers load here, after the params and the dataset are checked

    with io.atomic_directory(layout.trained(name)) as out:
        summary, curve = train.train(records, student, student.train, out, layout.dataset(name))
    train.prepare_answering(Path(layout.trained(name)).resolve(), student)
    io.write_json(layout.metrics(name, "train"), summary, "train_metrics")
    io.write_csv(layout.plot(name, "train_loss"), curve)


if __name__ == "__main__":
    main()
