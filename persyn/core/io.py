"""Atomic, schema-checked reads and writes of the pipeline's artifacts.

Every write goes to a temporary sibling and is renamed into place, so a crash never leaves a
half-written artifact; every read and write is checked against its schema in schemas/.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import polars as pl

from persyn.core.errors import PersynError
from persyn.core.schemas import check, check_records, validator


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds."""
    path = Path(path)
    with unwritable(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(handle)
        os.chmod(scratch, 0o666 & ~current_umask())  # mkstemp's 0600 would make every artifact private
        try:
            yield Path(scratch)
            os.replace(scratch, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(scratch)


@contextlib.contextmanager
def unwritable(path: Path) -> Iterator[None]:
    """A full disk or a read-only folder is one clear error (the scratch file is gone, nothing half-written)."""
    try:
        yield
    except Exception as error:  # polars reports an OSError inside its own ComputeError
        codes = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES)
        if getattr(error, "errno", None) not in codes and not any(f"(os error {c})" in str(error) for c in codes):
            raise
        raise PersynError(f"{path}: cannot write ({error}): free space or fix the folder's permissions, "
                          "then run again (nothing half-written was left)") from None


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces `path` as a whole when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    scratch.chmod(0o777 & ~current_umask())
    try:
        yield scratch
        if path.exists():
            old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.old."))
            os.replace(path, old / "x")
            os.replace(scratch, path)
            shutil.rmtree(old)
        else:
            os.replace(scratch, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_parquet(path: str | Path, records: list[dict[str, Any]], schema: str) -> None:
    """Validate records against schemas/<schema>.schema.json and write them atomically."""
    check_records(records, schema, str(path))
    if records:
        frame = pl.DataFrame(records, infer_schema_length=None)
    else:  # keep the columns, so that readers of an empty artifact still find them
        frame = pl.DataFrame({name: [] for name in validator(schema).schema["required"]})
    with atomic_path(path) as scratch:
        frame.write_parquet(scratch, compression="zstd", statistics=False)


def read_parquet(path: str | Path, schema: str) -> list[dict[str, Any]]:
    """Read an artifact and validate every record; a missing or unreadable file is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise PersynError(f"{path}: file not found (run the stage that writes it first)")
    try:
        records = pl.read_parquet(path).to_dicts()
    except Exception as error:  # polars raises several unrelated types for a bad file
        raise PersynError(f"{path}: not a readable parquet file ({error})") from None
    check_records(records, schema, str(path))
    return records


def write_json(path: str | Path, data: dict[str, Any], schema: str | None = None) -> None:
    """Write JSON with sorted keys (stable bytes for DVC), validated when a schema is named."""
    if schema:
        check(data, schema, str(path))
    with atomic_path(path) as scratch:
        scratch.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def write_csv(path: str | Path, rows: list[dict[str, Any]]) -> None:
    """A small table for `dvc plots` (columns from the first row), written atomically."""
    with atomic_path(path) as scratch:
        pl.DataFrame(rows).write_csv(scratch)


def read_json(path: str | Path, schema: str | None = None) -> dict[str, Any]:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PersynError(f"{path}: file not found (run the stage that writes it first)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise PersynError(f"{path}: not valid JSON ({error})") from None
    if schema:
        check(data, schema, str(path))
    return data


def read_embeddings(path: str | Path) -> dict[str, np.ndarray]:
    """Prompt id → float32 embedding vector."""
    return {r["id"]: np.asarray(r["embedding"], dtype=np.float32) for r in read_parquet(path, "embedding")}
