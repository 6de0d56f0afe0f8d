"""A content-addressed request cache: nothing generated or scored twice, nothing lost on a crash.

Keys hash everything that determines an answer (model identity, engine, device, the rendered
request, sampling settings, the per-request seed and, for scores, the response). Values are
committed per batch in SQLite (WAL), shared by every DVC experiment, under
$PERSYN_CACHE_DIR/requests/ — outside the git work tree and outside DVC outputs.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from persyn.engines import Completion
from persyn.models import cache_root

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
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


class RequestCache:
    """get_many/put_many over one SQLite file; each put_many is one transaction."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.connection = sqlite3.connect(self.path, timeout=60)
        self.connection.execute("PRAGMA journal_mode=WAL")
        self.connection.execute("PRAGMA synchronous=NORMAL")
        self.connection.execute(SCHEMA)
        self.connection.commit()

    def get_many(self, keys: Iterable[str]) -> dict[str, Any]:
        keys = list(keys)
        found: dict[str, Any] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start: start + 500]
            rows = self.connection.execute(
                f"SELECT key, value FROM requests WHERE key IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update((key, json.loads(value)) for key, value in rows)
        return found

    def put_many(self, kind: str, model: str, items: dict[str, Any]) -> None:
        now = time.time()
        with self.connection:
            self.connection.executemany(
                "INSERT OR REPLACE INTO requests (key, kind, model, value, created) VALUES (?, ?, ?, ?, ?)",
                [(key, kind, model, json.dumps(value), now) for key, value in items.items()],
            )

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> list[tuple[str, str, int, int]]:
        """(model, kind, entries, bytes of values) per model and kind."""
        return list(self.connection.execute(
            "SELECT model, kind, COUNT(*), SUM(LENGTH(value)) FROM requests GROUP BY model, kind ORDER BY model, kind"
        ))

    def gc(self, live: set[str], older_than_days: float | None = None) -> int:
        """Delete the entries not in `live` (only those older than `older_than_days`, when given)."""
        cutoff = time.time() - older_than_days * 86400 if older_than_days is not None else float("inf")
        keys = [key for (key, created) in self.connection.execute("SELECT key, created FROM requests")
                if key not in live and created < cutoff]
        with self.connection:
            self.connection.executemany("DELETE FROM requests WHERE key = ?", [(k,) for k in keys])
        self.connection.execute("VACUUM")
        return len(keys)

    def verify(self) -> list[str]:
        """Problems found: SQLite integrity, undecodable values, values of the wrong type for their kind."""
        problems = [row[0] for row in self.connection.execute("PRAGMA integrity_check") if row[0] != "ok"]
        for key, kind, value in self.connection.execute("SELECT key, kind, value FROM requests"):
            try:
                decoded = json.loads(value)
            except json.JSONDecodeError:
                problems.append(f"{key}: value is not valid JSON")
                continue
            if kind not in CODECS:
                problems.append(f"{key}: unknown kind '{kind}'")
                continue
            try:
                CODECS[kind].decode(decoded)
            except (TypeError, ValueError, KeyError):
                problems.append(f"{key}: a {kind} entry holds {decoded!r:.40}")
        return problems
