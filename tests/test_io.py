import json
from pathlib import Path

import polars as pl
import pytest

from persyn.core import io
from persyn.core.errors import PersynError

GOOD = {"id": "0123456789abcdef", "teacher": "qwen", "model": "local:x@sha256:00", "response": "7", "finish_reason": "stop",
        "completion_tokens": 4, "request": "a" * 64}


def test_roundtrip_and_stable_bytes(tmp_path: Path) -> None:
    records = [GOOD, {**GOOD, "id": "fedcba9876543210", "response": "8"}]
    io.write_parquet(tmp_path / "a.parquet", records, "generation")
    io.write_parquet(tmp_path / "b.parquet", records, "generation")
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()
    assert io.read_parquet(tmp_path / "a.parquet", "generation") == records
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({k: v for k, v in GOOD.items() if k != "response"}, "record 1 (id 0123456789abcdef): field 'response': missing"),
        ({**GOOD, "teacher": "Big"}, "field 'teacher': 'Big' does not match"),
        ({**GOOD, "response": 7}, "field 'response': 7 is not of type 'string'"),
        ({**GOOD, "colour": "red"}, "field 'colour': unknown key"),
    ],
)
def test_bad_record_is_refused_and_nothing_written(tmp_path: Path, record: dict, message: str) -> None:
    target = tmp_path / "out.parquet"
    with pytest.raises(PersynError) as caught:
        io.write_parquet(target, [{**GOOD, "id": "1111111111111111"}, record], "generation")
    assert str(target) in str(caught.value) and message in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_duplicate_id_is_named(tmp_path: Path) -> None:
    with pytest.raises(PersynError, match="record 1 \\(id 0123456789abcdef\\): field 'id': duplicate id"):
        io.write_parquet(tmp_path / "x.parquet", [GOOD, GOOD], "generation")


def test_reading_checks_the_schema(tmp_path: Path) -> None:
    pl.DataFrame([{**GOOD, "teacher": "no spaces allowed"}]).write_parquet(tmp_path / "x.parquet")
    with pytest.raises(PersynError, match="x.parquet: record 0 .*field 'teacher'"):
        io.read_parquet(tmp_path / "x.parquet", "generation")
    with pytest.raises(PersynError, match="missing.parquet: file not found"):
        io.read_parquet(tmp_path / "missing.parquet", "generation")


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "m.json"
    io.write_json(target, {"a": 1})
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as scratch:
            scratch.write_text("half")
            raise RuntimeError("crash mid-write")
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]


def test_atomic_directory_replaces_whole(tmp_path: Path) -> None:
    target = tmp_path / "d"
    with io.atomic_directory(target) as scratch:
        (scratch / "old.txt").write_text("1")
    with pytest.raises(RuntimeError):
        with io.atomic_directory(target) as scratch:
            (scratch / "new.txt").write_text("2")
            raise RuntimeError
    assert [p.name for p in target.iterdir()] == ["old.txt"]
    with io.atomic_directory(target) as scratch:
        (scratch / "new.txt").write_text("2")
    assert [p.name for p in target.iterdir()] == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_empty_artifact_keeps_its_columns(tmp_path: Path) -> None:
    io.write_parquet(tmp_path / "r.parquet", [], "route")
    assert pl.read_parquet(tmp_path / "r.parquet").columns == ["id"]
    assert io.read_parquet(tmp_path / "r.parquet", "route") == []


def test_a_full_disk_is_one_clear_error_and_leaves_nothing(tmp_path: Path) -> None:
    import random
    import subprocess

    mount = tmp_path / "small"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        records = [{"id": f"{i:016x}", "embedding": [random.random() for _ in range(384)]} for i in range(400)]
        with pytest.raises(PersynError, match="e.parquet: cannot write .*No space left on device.*free space"):
            io.write_parquet(mount / "e.parquet", records, "embedding")
        assert list(mount.iterdir()) == []  # no partial artefact, no scratch file
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)
