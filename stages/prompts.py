"""Stage prompts: read the prompt source, dedupe, id and split it → data/prompts.parquet."""

from persyn import config, io, prompts
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    io.write_parquet("data/prompts.parquet", prompts.build(params.prompts), "prompt")


if __name__ == "__main__":
    main()
