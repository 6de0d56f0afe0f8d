"""Stage embed: one frozen-encoder vector per prompt → layout.EMBEDDINGS."""

from persyn.core import io, layout
from persyn.params import config
from persyn.pipeline import embed
from persyn.core.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    prompts = io.read_parquet(layout.PROMPTS, "prompt")
    texts = ["\n".join(m["content"] for m in p["messages"]) for p in prompts]
    vectors, _ = embed.encode(texts, params.embed)
    records = [{"id": p["id"], "embedding": vector.tolist()} for p, vector in zip(prompts, vectors)]
    io.write_parquet(layout.EMBEDDINGS, records, "embedding")


if __name__ == "__main__":
    main()
