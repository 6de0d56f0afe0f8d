"""Stage prompts: read the prompt source, dedupe, id and split it → layout.PROMPTS."""

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import prompts
from persyn.core.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    records = prompts.build(params.prompts, require_reference=params.quality.kind == "math")
    io.write_parquet(layout.PROMPTS, records, "prompt")


if __name__ == "__main__":
    main()
