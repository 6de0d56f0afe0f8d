"""One error type for everything a user can fix, and the guard that prints it."""

from __future__ import annotations

import functools
import logging
import sys
from typing import Callable, TypeVar

F = TypeVar("F", bound=Callable[..., object])


class PersynError(Exception):
    """A problem in the user's input or configuration, reported as one clear line."""


def where(file: object, record: object | None = None, field: str | None = None) -> str:
    """Format 'file: record 3: field 'prompt'' for error messages."""
    parts = [str(file)]
    if record is not None:
        parts.append(f"record {record}")
    if field is not None:
        parts.append(f"field '{field}'")
    return ": ".join(parts)


def guarded(main: F) -> F:
    """Run a command; a PersynError becomes one line on stderr and exit status 2."""

    @functools.wraps(main)
    def wrapper(*args: object, **kwargs: object) -> object:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
        try:
            return main(*args, **kwargs)
        except PersynError as error:
            print(f"persyn: error: {error}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
