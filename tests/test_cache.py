from pathlib import Path

import pytest

from persyn.pipeline import rewards, runner, synthesis
from persyn.pipeline.cache import RequestCache, derived_seed, request_key
from persyn.params.config import SamplingConfig, StudentConfig, TeacherConfig
from persyn.core.models import resolve


def test_cache_roundtrip_and_persistence(tmp_path: Path) -> None:
    with RequestCache(tmp_path / "c.sqlite") as cache:
        cache.put_many("generate", "m", {"k1": "a", "k2": {"x": 1}})
    with RequestCache(tmp_path / "c.sqlite") as cache:
        assert cache.get_many(["k1", "k2", "k3"]) == {"k1": "a", "k2": {"x": 1}}


def test_key_depends_on_every_field() -> None:
    base = {"model": "m@1", "messages": [{"role": "user", "content": "q"}], "sampling": {"temperature": 0}}
    variants = [{**base, "model": "m@2"}, {**base, "messages": [{"role": "user", "content": "q2"}]},
                {**base, "sampling": {"temperature": 0.5}}]
    assert len({request_key(p) for p in [base, *variants]}) == 4
    assert request_key(base) == request_key(dict(reversed(list(base.items()))))
    assert derived_seed(base) == derived_seed(dict(base)) != derived_seed(variants[0])


def teacher(path: Path, **sampling) -> TeacherConfig:
    sampling = SamplingConfig(**{"max_tokens": 6, "batch_size": 2, **sampling})
    return TeacherConfig(name="a", model=f"local:{path}", sampling=sampling, system_prompt="Be brief.")


def prompt(i: int) -> dict:
    return {"id": f"{i:016x}", "messages": [{"role": "user", "content": f"What is {i} + {i}?"}]}


def test_generation_is_never_repeated(tiny_models: dict[str, Path], tmp_path: Path, monkeypatch) -> None:
    with RequestCache(tmp_path / "c.sqlite") as cache:
        first, stats = synthesis.generate(teacher(tiny_models["teacher_a"]), [prompt(i) for i in range(3)], cache)
        assert (stats.computed, stats.reused) == (3, 0)
        assert {r["model"] for r in first} == {resolve(f"local:{tiny_models['teacher_a']}").identity}

        def no_engine(*args, **kwargs):
            raise AssertionError("the engine must not load when every request is cached")

        monkeypatch.setattr(runner.engines, "load", no_engine)
        again, stats = synthesis.generate(teacher(tiny_models["teacher_a"]), [prompt(i) for i in range(3)], cache)
        assert again == first and (stats.computed, stats.reused) == (0, 3)
        monkeypatch.undo()
        more, stats = synthesis.generate(teacher(tiny_models["teacher_a"]), [prompt(i) for i in range(5)], cache)
        assert more[:3] == first and (stats.computed, stats.reused) == (2, 3)
        _, stats = synthesis.generate(teacher(tiny_models["teacher_a"], max_tokens=7), [prompt(0)], cache)
        assert stats.computed == 1  # different sampling settings: a different request


def test_learnability_is_cached(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    student = StudentConfig(model=f"local:{tiny_models['student']}", batch_size=2)
    pairs = [([{"role": "user", "content": "q"}], "7"), ([{"role": "user", "content": "r"}], "8 apples")]
    with RequestCache(tmp_path / "c.sqlite") as cache:
        first = rewards.learnability(student, pairs, cache)
        assert first.stats.computed == 2 and all(v < 0 for v in first.values)
        again = rewards.learnability(student, pairs, cache)
        assert again.values == first.values and again.keys == first.keys and again.stats.reused == 2


def test_reward_model_scores_through_the_cache(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from persyn.params.config import QualityConfig
    from persyn.pipeline.rewards import reward_model_quality

    config = QualityConfig(kind="reward_model", reward_model=f"local:{tiny_models['reward']}", batch_size=2)
    pairs = [([{"role": "user", "content": "q"}], "a fine answer"), ([{"role": "user", "content": "q"}], "bad")]
    with RequestCache(tmp_path / "c.sqlite") as cache:
        scores = reward_model_quality(config, pairs, cache)
        assert scores.stats.computed == 2 and len(set(scores.values)) == 2
        alone = reward_model_quality(config, pairs[1:], cache)
        assert alone.values == pytest.approx(scores.values[1:]) and alone.stats.reused == 1


def test_cache_command_stats_gc_verify(tmp_path: Path, capsys) -> None:
    import sqlite3
    import time

    import polars as pl

    from persyn.cli import main

    db = tmp_path / "c.sqlite"
    keys = [f"{i:064x}" for i in range(4)]
    with RequestCache(db) as cache:
        answer = {"text": "kept answer", "finish_reason": "stop", "prompt_tokens": 3, "completion_tokens": 2}
        cache.put_many("generate", "m@1", {keys[0]: answer, keys[1]: {**answer, "text": "unreferenced"}})
        cache.put_many("loglikelihood", "s@1", {keys[2]: -1.5, keys[3]: -0.5})
    (tmp_path / "data").mkdir()
    pl.DataFrame({"request": [keys[0]]}).write_parquet(tmp_path / "data/sample.parquet")
    pl.DataFrame({"requests": [[keys[2]]]}).write_parquet(tmp_path / "data/scores.parquet")
    (tmp_path / "dvc.lock").write_text(
        "schema: '2.0'\nstages:\n  s:\n    outs:\n    - path: data/sample.parquet\n      md5: x\n"
        "    - path: data/scores.parquet\n      md5: y\n    - path: data/gone.parquet\n      md5: z\n")

    main(["cache", "stats", "--cache", str(db)])
    assert "4 entries" in capsys.readouterr().out
    main(["cache", "gc", "--cache", str(db), "--lock", str(tmp_path / "dvc.lock"), "--older-than", "1"])
    assert "removed 0 entries" in capsys.readouterr().out  # everything is younger than a day
    main(["cache", "gc", "--cache", str(db), "--lock", str(tmp_path / "dvc.lock")])
    assert "removed 2 entries" in capsys.readouterr().out
    with RequestCache(db) as cache:
        assert set(cache.get_many(keys)) == {keys[0], keys[2]}
    main(["cache", "verify", "--cache", str(db)])
    assert capsys.readouterr().out.strip().endswith(": ok")

    with sqlite3.connect(db) as raw:
        raw.execute("INSERT INTO requests VALUES ('bad', 'loglikelihood', 'm', '0.7', ?)", (time.time(),))
        raw.execute("INSERT INTO requests VALUES ('worse', 'generate', 'm', '{not json', ?)", (time.time(),))
    with pytest.raises(SystemExit):
        main(["cache", "verify", "--cache", str(db)])
    out = capsys.readouterr().out
    assert "bad: a loglikelihood entry holds 0.7" in out and "worse: value is not valid JSON" in out


def test_a_damaged_entry_is_recomputed_and_overwritten(tiny_models: dict[str, Path], tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import sqlite3

    database = tmp_path / "c.sqlite"
    with RequestCache(database) as cache:
        first, _ = synthesis.generate(teacher(tiny_models["teacher_a"]), [prompt(i) for i in range(3)], cache)
    damaged = first[1]["request"]
    with sqlite3.connect(database) as raw:  # a real damaged row: not JSON at all
        raw.execute("UPDATE requests SET value = '{\"text\": \"cut off' WHERE key = ?", (damaged,))
    with RequestCache(database) as cache, caplog.at_level(logging.WARNING):
        again, stats = synthesis.generate(teacher(tiny_models["teacher_a"]), [prompt(i) for i in range(3)], cache)
        assert again == first and (stats.computed, stats.reused) == (1, 2)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and damaged in warnings[0] and first[1]["model"] in warnings[0]
        assert cache.verify() == []  # overwritten with the recomputed answer


def test_verify_repair_deletes_what_it_cannot_read(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import sqlite3
    import time

    from persyn.cli import main

    database = tmp_path / "c.sqlite"
    with RequestCache(database) as cache:
        cache.put_many("loglikelihood", "s@1", {"good": -1.0})
    with sqlite3.connect(database) as raw:
        raw.executemany("INSERT INTO requests VALUES (?, ?, 'm', ?, ?)",
                        [("torn", "generate", "{not json", time.time()), ("wrong", "loglikelihood", "0.7", time.time())])
    main(["cache", "verify", "--repair", "--cache", str(database)])
    assert "deleted 2 unreadable entries" in capsys.readouterr().out
    main(["cache", "verify", "--cache", str(database)])
    assert capsys.readouterr().out.strip().endswith(": ok")
    with RequestCache(database) as cache:
        assert cache.get_many(["good", "torn", "wrong"]) == {"good": -1.0}


def test_an_unreadable_cache_file_is_one_clear_error(tmp_path: Path) -> None:
    import subprocess
    import sys

    from persyn.core.errors import PersynError

    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database at all, " * 200)
    with pytest.raises(PersynError, match=f"request cache {garbage}: file is not a database; .*move it aside or delete it"):
        RequestCache(garbage)
    truncated = tmp_path / "truncated.sqlite"
    with RequestCache(truncated) as cache:
        cache.put_many("reward", "r@1", {f"{i:064x}": float(i) * 1000 for i in range(3000)})
        cache.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 3])
    with pytest.raises(PersynError, match=f"request cache {truncated}: database disk image is malformed"):
        with RequestCache(truncated) as cache:
            cache.get_many([f"{i:064x}" for i in range(3000)])
    # a stage meets it as one line, never a traceback
    stage = subprocess.run([sys.executable, "-c", "from persyn.core.errors import guarded\n"
                            "from persyn.pipeline.cache import RequestCache\n"
                            f"guarded(lambda: RequestCache({str(garbage)!r}))()"], capture_output=True, text=True)
    assert stage.returncode == 2 and "Traceback" not in stage.stderr
    assert stage.stderr.startswith(f"persyn: error: request cache {garbage}: file is not a database")


def test_a_read_only_cache_folder_is_one_clear_error(tmp_path: Path) -> None:
    import subprocess

    from persyn.engines import Score
    from persyn.core.errors import PersynError

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        database = mount / "requests.sqlite"
        with RequestCache(database) as cache:
            cache.put_many("loglikelihood", "s@1", {"kept": -1.0})
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)  # root ignores chmod; a ro mount it cannot
        with pytest.raises(PersynError, match=f"request cache {database}: .*check that the folder is writable"):
            with RequestCache(database) as cache:
                runner.run_cached(cache, "loglikelihood", "s@1", [{"n": 1}], [1],
                                  runner.all_at_once(lambda batch: [Score(-1.0, 1) for _ in batch]), 1, "ro")
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_every_generated_answer_keeps_its_engine_time(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """A budget in seconds charges what each answer took: the batch's time shared by completion tokens,
    kept with the answer in the cache (a reused answer keeps the time it took when it was computed)."""
    from persyn.pipeline import budget

    with RequestCache(tmp_path / "c.sqlite") as cache:
        first, _ = synthesis.generate(teacher(tiny_models["teacher_a"]), [prompt(i) for i in range(4)], cache)
        timed = budget.measured_seconds(first, cache, "answers")
        again = budget.measured_seconds(synthesis.generate(teacher(tiny_models["teacher_a"]),
                                                           [prompt(i) for i in range(4)], cache)[0], cache, "answers")
    assert all(a["seconds"] > 0 for a in timed) and again == timed
    assert all("seconds" not in r for r in first)  # the records keep no time: their bytes do not depend on the machine


def test_a_batch_time_is_shared_by_completion_tokens() -> None:
    from persyn.engines import Completion

    shared = synthesis.timed([Completion("a", "stop", 3, 1), Completion("b", "stop", 3, 3), Completion("", "stop", 3, 0)], 1.0)
    assert [c.seconds for c in shared] == [0.2, 0.6, 0.2]  # an empty answer still took a step


def test_an_answer_without_a_time_stops_a_seconds_budget(tmp_path: Path) -> None:
    from persyn.pipeline import budget
    from persyn.engines import Completion
    from persyn.core.errors import PersynError

    answer = {"id": "0" * 16, "teacher": "a", "request": "f" * 64}
    with RequestCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(PersynError, match="data/sample/a.parquet: answer 0{16} of a has no measured time .*not there"):
            budget.measured_seconds([answer], cache, "data/sample/a.parquet")
        cache.put_many("generate", "m", {"f" * 64: Completion("x", "stop", 1, 1).__dict__})  # a server's: untimed
        with pytest.raises(PersynError, match="answered by a server or before times were kept"):
            budget.measured_seconds([answer], cache, "data/sample/a.parquet")


def test_cache_commands_on_a_missing_cache_create_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture) -> None:
    from persyn.cli import main

    monkeypatch.setenv("PERSYN_CACHE_DIR", str(tmp_path / "none"))
    for action in ("stats", "verify", "gc"):
        main(["cache", action, "--lock", str(tmp_path / "dvc.lock")])
        out = capsys.readouterr().out
        assert out == f"{tmp_path}/none/requests/requests.sqlite: no request cache here (a build creates one)\n"
    assert not (tmp_path / "none").exists()


def test_a_cache_dir_that_is_a_regular_file_is_named_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture) -> None:
    from persyn.cli import main

    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv("PERSYN_CACHE_DIR", str(tmp_path / "file"))
    for action in ("stats", "verify", "gc"):
        with pytest.raises(SystemExit):
            main(["cache", action])
        error = capsys.readouterr().err
        assert f"{tmp_path}/file is a regular file, not a cache directory" in error and "delete" not in error
        assert error.count("\n") == 1


def test_uncached_requests_are_computed_in_batches_of_even_size(tmp_path: Path) -> None:
    """38 requests at batch 32: two batches of 19 (not 32 and 6), the shortest first; a cached one is skipped."""
    from persyn.engines import Score
    from persyn.pipeline.batching import even_batches

    assert [len(b) for b in even_batches(range(70), 64)] == [35, 35] and even_batches([], 8) == []
    assert [len(b) for b in even_batches(range(64), 32)] == [32, 32] and even_batches(range(3), 8) == [[0, 1, 2]]
    sizes: list[int] = []

    def call(batch: list[int]) -> list[Score]:
        sizes.append(len(batch))
        return [Score(-float(n), 1) for n in batch]

    payloads = [{"n": "x" * n} for n in range(39)]
    with RequestCache(tmp_path / "c.sqlite") as cache:
        runner.run_cached(cache, "loglikelihood", "m@1", payloads[:1], [0], runner.all_at_once(call), 32, "first")
        answers = runner.run_cached(cache, "loglikelihood", "m@1", payloads, list(range(39)), runner.all_at_once(call),
                                    32, "rest")
    assert sizes == [1, 19, 19] and answers.values == [-float(n) for n in range(39)]
