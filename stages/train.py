"""Stage train: fine-tune the student on data/dataset → data/student/, metrics/train.json, plots/train_loss.csv."""

from pathlib import Path

from persyn import config, dataset, io, train
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    records = dataset.read(Path("data/dataset"))
    with io.atomic_directory("data/student") as out:
        summary, curve = train.train(records, params.student, params.train, out, "data/dataset")
    io.write_json("metrics/train.json", summary, "train_metrics")
    io.write_csv("plots/train_loss.csv", curve)


if __name__ == "__main__":
    main()
