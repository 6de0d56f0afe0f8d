"""Stage train@S: fine-tune student S on data/dataset/S → data/student/S/, metrics/S/train.json,
plots/S/train_loss.csv."""

import argparse
from pathlib import Path

from persyn import config, dataset, io
from persyn.errors import guarded


@guarded
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("student")
    name = parser.parse_args().student
    student = config.load().for_student(name).student
    records = dataset.read(Path(f"data/dataset/{name}"))
    from persyn import train  # torch and transformers load here, after the params and the dataset are checked

    with io.atomic_directory(f"data/student/{name}") as out:
        summary, curve = train.train(records, student, student.train, out, f"data/dataset/{name}")
    io.write_json(f"metrics/{name}/train.json", summary, "train_metrics")
    io.write_csv(f"plots/{name}/train_loss.csv", curve)


if __name__ == "__main__":
    main()
