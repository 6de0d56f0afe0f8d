"""JSON Schema checks for params, records and metrics, with errors a person can act on."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Iterable

import jsonschema

from persyn.core.errors import PersynError, where

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"


@functools.cache
def validator(name: str) -> jsonschema.Draft202012Validator:
    """The compiled validator for schemas/<name>.schema.json."""
    path = SCHEMA_DIR / f"{name}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    return jsonschema.Draft202012Validator(schema)


def resolved(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """A schema node as a reader sees it: a local "$ref" merged in, the node's own keywords winning
    (a key may reuse a shared definition and give its own default or description)."""
    if "$ref" not in node:
        return node
    target = root
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return {**resolved(target, root), **{k: v for k, v in node.items() if k != "$ref"}}


def _describe(error: jsonschema.ValidationError) -> tuple[str, str]:
    """The dotted key an error is about, and a short message."""
    path = ".".join(str(part) for part in error.absolute_path)
    if error.validator == "additionalProperties":
        extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        key = f"{path}.{extra[0]}" if path else extra[0]
        return key, "unknown key"
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return (f"{path}.{missing}" if path else missing), "missing"
    if "propertyNames" in error.schema_path:
        return f"{path}.{error.instance}", f"name must match {error.schema.get('pattern')}"
    if error.validator == "minProperties":  # the message would print the whole table
        given = ", ".join(error.instance)
        return path, f"at least {error.validator_value} needed, {len(error.instance)} given{f' ({given})' if given else ''}"
    if error.validator == "pattern" and "x-expected" in error.schema:
        return path, f"{error.instance!r}: expected {error.schema['x-expected']}"
    return path or "(top level)", error.message


def check(instance: Any, schema: str, source: str, record: object | None = None) -> None:
    """Raise one PersynError for the first schema violation, naming the file, record and key."""
    errors = sorted(validator(schema).iter_errors(instance), key=lambda e: list(e.absolute_path))
    if not errors:
        return
    error = jsonschema.exceptions.best_match(errors)
    if error.context:
        error = min(error.context, key=lambda e: len(e.absolute_path))
    key, message = _describe(error)
    if record is None:
        raise PersynError(f"{source}: {key}: {message}")
    raise PersynError(f"{where(source, record, key)}: {message}")


def check_records(records: Iterable[dict[str, Any]], schema: str, source: str) -> None:
    """Validate every record; ids must be unique (or, where the schema names an "x-unique" key such as
    id and attempt, that key). Records are named by id where they have one."""
    seen: set[tuple] = set()
    fields = validator(schema).schema.get("x-unique", ["id"])
    for index, record in enumerate(records):
        label = f"{index} (id {record['id']})" if isinstance(record, dict) and "id" in record else index
        check(record, schema, source, label)
        if record.get("id") is not None:
            key = tuple(record.get(f) for f in fields)
            if key in seen:
                raise PersynError(f"{where(source, label, 'id')}: duplicate {' and '.join(fields)}")
            seen.add(key)
