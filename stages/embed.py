"""Stage embed: one frozen-encoder vector per prompt → data/embeddings.parquet."""

from persyn import config, embed, io
from persyn.errors import guarded


@guarded
def main() -> None:
    params = config.load()
    prompts = io.read_parquet("data/prompts.parquet", "prompt")
    texts = ["\n".join(m["content"] for m in p["messages"]) for p in prompts]
    vectors, _ = embed.encode(texts, params.embed)
    records = [{"id": p["id"], "embedding": vector.tolist()} for p, vector in zip(prompts, vectors)]
    io.write_parquet("data/embeddings.parquet", records, "embedding")


if __name__ == "__main__":
    main()
