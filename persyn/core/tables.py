"""A params table as a frozen dataclass that cannot drift from schemas/params.schema.json.

A table class declares only its fields' names and Python types; `table` makes it a frozen dataclass
whose defaults are the schema's, and fails at import if a schema key has no field, a field has no
key, or a field's type disagrees with the schema. `build` fills one from its validated mapping.
persyn/params/config.py declares the tables; docs/params.md is generated from the same schema
(persyn/params/paramdoc.py).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import types
import typing
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from persyn.core.schemas import resolved, validator

SCHEMA = validator("params").schema
JSON_TYPES = {int: "integer", float: "number", str: "string", bool: "boolean", tuple: "array", dict: "object"}
T = TypeVar("T")


def schema_node(*path: str) -> dict[str, Any]:
    """The params schema of the table at `path`; "*" steps into each named table of a map (teachers)."""
    node = SCHEMA
    for part in path:
        node = resolved(node["additionalProperties"] if part == "*" else node["properties"][part], SCHEMA)
    return node


def unwrap(hint: Any) -> tuple[Any, bool]:
    """A field annotation without its `| None`, and whether it had one."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (inner,) = [arg for arg in typing.get_args(hint) if arg is not type(None)]
        return inner, True
    return hint, False


def _origin(hint: Any) -> Any:
    """The class an annotation stands for: tuple for tuple[str, ...], the class itself for a class."""
    base = unwrap(hint)[0]
    return typing.get_origin(base) or base


def _schema_type(spec: dict[str, Any]) -> str:
    """The JSON type a key's schema allows ("any" where it allows several)."""
    if "type" in spec:
        return spec["type"]
    enum = spec.get("enum", [None])
    return "string" if all(isinstance(value, str) for value in enum) else "any"


def value(hint: Any, given: Any) -> Any:
    """A validated TOML value as its field holds it: arrays become tuples, sub-tables their class."""
    origin = _origin(hint)
    if origin is tuple:
        return tuple(given)
    if dataclasses.is_dataclass(origin) and isinstance(given, dict):
        return build(origin, given)
    return given


def _check_field(cls: type, name: str, hint: Any, spec: dict[str, Any], required: bool, where: str) -> None:
    """The annotation must say what the schema says: the same JSON type, and `| None` exactly where
    the key is optional without a default."""
    origin = _origin(hint)
    annotated = "object" if dataclasses.is_dataclass(origin) else JSON_TYPES.get(origin, "any")
    wanted = _schema_type(spec)
    agree = annotated == wanted or "any" in (annotated, wanted)
    if not agree or unwrap(hint)[1] != (not required and "default" not in spec):
        raise TypeError(f"{cls.__name__}.{name}: annotated {hint}, but the schema's {where}.{name} is "
                        f"{'required ' if required else ''}{wanted}{' with a default' if 'default' in spec else ''}")


def table(*path: str, derived: tuple[str, ...] = (), inline: tuple[str, ...] = ()) -> Callable[[type[T]], type[T]]:
    """Make the class a frozen dataclass of the params table at `path`, one field per key, each
    defaulting to the schema's default (an optional key without one: None). `derived` fields are
    not keys (a teacher's name); an `inline` field is a table class whose keys sit in this table
    (a teacher's sampling keys). A key without a field, a field without a key or a type that
    disagrees with the schema is a TypeError at import."""

    def wrap(cls: type[T]) -> type[T]:
        node, where = schema_node(*path), ".".join(path)
        keys, hints = node["properties"], typing.get_type_hints(cls)
        own = [name for name in hints if name not in derived + inline]
        inlined = {key for name in inline for key in hints[name].__dataclass_fields__}
        unused = sorted(set(keys) - set(own) - inlined)
        if unused:
            raise TypeError(f"params schema: {where}.{unused[0]} is a key with no field in {cls.__name__}")
        for name in own:
            if name not in keys:
                raise TypeError(f"{cls.__name__}.{name} is a field with no key {where}.{name} in the params schema")
            spec = resolved(keys[name], SCHEMA)
            _check_field(cls, name, hints[name], spec, name in node.get("required", ()), where)
            if "default" in spec:
                default = value(hints[name], spec["default"])
                mutable = isinstance(default, (dict, list))
                setattr(cls, name, dataclasses.field(default_factory=lambda d=default: copy.deepcopy(d)) if mutable else default)
            elif unwrap(hints[name])[1]:
                setattr(cls, name, None)
        return dataclass(frozen=True)(cls)

    return wrap


@functools.cache
def hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type[T], mapping: dict[str, Any], **derived: Any) -> T:
    """The typed table from its validated params mapping; absent keys take the schema's defaults."""
    fields = hints(cls)
    return cls(**{key: value(fields[key], given) for key, given in mapping.items()}, **derived)
