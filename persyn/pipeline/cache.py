"""A content-addressed request cache: nothing generated or scored twice, nothing lost on a crash.

Keys hash everything that determines an answer (model identity, engine, device, the rendered
request, sampling settings, the per-request seed and, for scores, the response). Values are
committed per answer in SQLite (WAL), shared by every DVC experiment, under
$PERSYN_CACHE_DIR/requests/ — outside the git work tree and outside DVC outputs. A damaged entry
counts as missing; a wholly unreadable file, a full disk or a read-only folder is one PersynError.
Claims (persyn/core/claims.py) let several processes share the work instead of repeating it.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import logging
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from persyn.engines import Completion
from persyn.core.errors import PersynError
from persyn.core.models import cache_root

log = logging.getLogger("persyn.cache")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS claims (key TEXT PRIMARY KEY, owner TEXT NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS workers (owner TEXT PRIMARY KEY, expires REAL NOT NULL);
"""


@dataclass(frozen=True)
class Codec:
    """How one kind of result is kept in the request cache: `decode` raises (TypeError, ValueError,
    KeyError) on a value it cannot read, which then counts as missing."""

    encode: Callable[[Any], Any]
    decode: Callable[[Any], Any]


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"not a number: {value!r:.40}")
    return float(value)


def _logprob(value: Any) -> float:
    if _number(value) > 0:
        raise ValueError(f"a mean log-probability is never positive: {value!r}")
    return float(value)


def _completion(value: Any) -> Completion:
    if not isinstance(value, dict):
        raise TypeError(f"not a completion record: {value!r:.40}")
    return Completion(**value)


CODECS = {
    "generate": Codec(asdict, _completion),
    "loglikelihood": Codec(lambda score: score.logprob, _logprob),
    "reward": Codec(float, _number),
}


def request_key(payload: dict[str, Any]) -> str:
    """sha256 of the canonical JSON of everything that determines the answer."""
    canonical = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def derived_seed(payload: dict[str, Any]) -> int:
    """A per-request sampling seed derived from the request itself: a resumed run samples the same."""
    return int(request_key(payload)[:15], 16)


def default_path() -> Path:
    return cache_root() / "requests" / "requests.sqlite"


def regular_file_on(path: Path) -> Path | None:
    """The folder on a cache file's path that is a regular file instead ($PERSYN_CACHE_DIR set to a file)."""
    return next((folder for folder in reversed(path.parents) if folder.is_file()), None)


def storage_error(path: Path, error: BaseException) -> PersynError:
    """One clear error for a cache file that cannot be used at all, saying what to do."""
    text = str(error)
    try:
        low = shutil.disk_usage(path.parent).free < 1 << 20
    except OSError:
        low = False
    blocker = regular_file_on(path)
    if blocker is not None:
        advice = (f"{blocker} is a regular file, not a cache directory: point $PERSYN_CACHE_DIR (or --cache) "
                  "at a directory")
    elif "full" in text or getattr(error, "errno", None) == errno.ENOSPC or (low and "I/O" in text):
        advice = "the disk is full: free space and run again (every answer committed so far is kept)"
    elif "I/O" in text:
        advice = "the disk failed a read or write: check it (and its free space), then run again"
    elif "readonly" in text or "read-only" in text or "unable to open" in text or isinstance(error, PermissionError):
        advice = ("cannot write there: check that the folder is writable by you and not mounted read-only, "
                  "or point $PERSYN_CACHE_DIR elsewhere")
    else:
        advice = ("it is not a readable SQLite database (damaged or truncated): move it aside or delete it, "
                  "and the next build recomputes what it held")
    return PersynError(f"request cache {path}: {text}; {advice}")


class RequestCache:
    """get_many/put_many over one SQLite file; every SQLite failure of the file as a whole is a PersynError."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.connection = sqlite3.connect(self.path, timeout=60)
            with self.guard():
                self.connection.execute("PRAGMA journal_mode=WAL")
                self.connection.execute("PRAGMA synchronous=NORMAL")
                self.connection.executescript(SCHEMA)
                self.connection.commit()
        except OSError as error:
            raise storage_error(self.path, error) from None

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Turn a failure of the database file (not SQLite, truncated, read-only, disk full) into one error."""
        try:
            yield
        except sqlite3.DatabaseError as error:
            if isinstance(error, sqlite3.OperationalError) and "locked" in str(error):
                raise PersynError(f"request cache {self.path}: {error} (another process held it for over 60 s)") from None
            raise storage_error(self.path, error) from None

    def get_many(self, keys: Iterable[str], quiet: bool = False) -> dict[str, Any]:
        """The stored values of the keys found; a damaged one counts as missing (one warning each,
        unless `quiet`: a re-read of keys already warned about)."""
        keys = list(keys)
        found: dict[str, Any] = {}
        with self.guard():
            for start in range(0, len(keys), 500):
                chunk = keys[start: start + 500]
                rows = self.connection.execute(
                    f"SELECT key, model, value FROM requests WHERE key IN ({','.join('?' * len(chunk))})", chunk
                ).fetchall()
                for key, model, value in rows:
                    try:
                        found[key] = json.loads(value)
                    except (json.JSONDecodeError, TypeError) as error:
                        if not quiet:
                                log.warning("request cache: entry %s of %s is damaged (%s); computing it again", key,
                                        model, error)
        return found

    def put_many(self, kind: str, model: str, items: dict[str, Any], owner: str | None = None) -> None:
        """Commit the values in one transaction (replacing damaged ones) and drop `owner`'s claims on them."""
        now = time.time()
        with self.guard(), self.connection:
            self.connection.executemany(
                "INSERT OR REPLACE INTO requests (key, kind, model, value, created) VALUES (?, ?, ?, ?, ?)",
                [(key, kind, model, json.dumps(value), now) for key, value in items.items()],
            )
            if owner is not None:
                self.connection.executemany("DELETE FROM claims WHERE key = ? AND owner = ?",
                                            [(key, owner) for key in items])

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> list[tuple[str, str, int, int]]:
        """(model, kind, entries, bytes of values) per model and kind."""
        with self.guard():
            return list(self.connection.execute(
                "SELECT model, kind, COUNT(*), SUM(LENGTH(value)) FROM requests GROUP BY model, kind ORDER BY model, kind"
            ))

    def gc(self, live: set[str], older_than_days: float | None = None) -> int:
        """Delete the entries not in `live` (only those older than `older_than_days`, when given)."""
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else float("inf")
        with self.guard():
            keys = [key for (key, created) in self.connection.execute("SELECT key, created FROM requests")
                    if key not in live and created < cutoff]
            self.delete(keys)
            self.connection.execute("VACUUM")
        return len(keys)

    def delete(self, keys: Iterable[str]) -> None:
        with self.guard(), self.connection:
            self.connection.executemany("DELETE FROM requests WHERE key = ?", [(k,) for k in keys])

    def verify(self) -> list[tuple[str | None, str]]:
        """(key or None for the file, problem): SQLite integrity, undecodable values, values of the wrong type."""
        with self.guard():
            problems: list[tuple[str | None, str]] = [
                (None, row[0]) for row in self.connection.execute("PRAGMA integrity_check") if row[0] != "ok"]
            rows = self.connection.execute("SELECT key, kind, value FROM requests").fetchall()
        for key, kind, value in rows:
            try:
                decoded = json.loads(value)
            except (json.JSONDecodeError, TypeError):
                problems.append((key, "value is not valid JSON"))
                continue
            if kind not in CODECS:
                problems.append((key, f"unknown kind '{kind}'"))
                continue
            try:
                CODECS[kind].decode(decoded)
            except (TypeError, ValueError, KeyError):
                problems.append((key, f"a {kind} entry holds {decoded!r:.40}"))
        return problems
