"""Stage prompts: read the prompt source, dedupe, id and split it → data/prompts.parquet."""

from persyn import config, io, prompts
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    records = prompts.build(params.prompts, require_reference=params.quality.kind == "math")
    io.write_parquet("data/prompts.parquet", records, "prompt")


if __name__ == "__main__":
    main()
