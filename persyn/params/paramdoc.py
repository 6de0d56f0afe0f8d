"""docs/params.md, generated from schemas/params.schema.json (the one source of every key's type,
default, range and description) and a params file, whose values are shown where they differ from
the defaults. `persyn params --markdown docs/params.md` writes it; a test fails when it is stale."""

from __future__ import annotations

import json
from typing import Any, Iterator

from persyn.params.config import SCHEMA
from persyn.core.schemas import resolved

COMMAND = "persyn params --markdown docs/params.md"
INTRO = f"""# Parameters (`params.toml`)

<!-- Generated from schemas/params.schema.json by `{COMMAND}`: edit the schema, not this file. -->

Every stage validates the whole file against `schemas/params.schema.json` before any work: an
unknown key, a wrong type or a value out of range stops it with one line naming the key, such as
`persyn: error: params.toml: router.alpha: 1.5 is greater than the maximum of 1`. The rules
between keys come next, in one place (`persyn/params/rules.py`: e.g. `route.fallback` needs a verifiable
`quality.kind`, a student's engine must score log-likelihoods). `persyn check` runs the same checks
by hand. Every table below must be present, and a key that `dvc.yaml` declares
as a stage's param must stay in the file even at its default: DVC refuses a stage whose declared
param is absent.

**default** is what persyn uses when the key is absent (*required*: it must be given; —: unset);
**params.toml** is what the committed `params.toml` sets, where that differs. This page is
generated: `{COMMAND}` rewrites it from the schema.
"""
LONGEST_VALUE = 40


def toml(value: Any) -> str:
    """A value as TOML writes it, strings cut to LONGEST_VALUE characters."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value if len(value) <= LONGEST_VALUE else value[:LONGEST_VALUE] + "…", ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{key} = {toml(item)}" for key, item in value.items()) + " }" if value else "{}"
    return repr(value)


def code(value: Any) -> str:
    """A TOML value as a code span that survives a table cell."""
    return "`" + toml(value).replace("|", "\\|") + "`"


def text(words: str) -> str:
    """Prose for a table cell: pipes and angle brackets escaped."""
    return words.replace("|", "\\|").replace("<", "\\<")


def type_name(spec: dict[str, Any]) -> str:
    if "oneOf" in spec:
        return " or ".join(type_name(option) for option in spec["oneOf"])
    if "enum" in spec:
        return "string"
    if spec.get("type") == "array":
        return f"array of {type_name(spec.get('items', {}))}"
    return {"object": "table"}.get(spec.get("type", "any"), spec.get("type", "any"))


def allowed(spec: dict[str, Any]) -> str:
    """The values a key accepts: its enum, bounds, length or pattern, in words."""
    if "oneOf" in spec:
        return " or ".join(filter(None, (allowed(option) for option in spec["oneOf"])))
    if "enum" in spec:
        return " \\| ".join(code(value) for value in spec["enum"])
    bounds = {"minimum": "≥", "exclusiveMinimum": ">", "maximum": "≤", "exclusiveMaximum": "<"}
    parts = [f"{sign} {spec[key]}" for key, sign in bounds.items() if key in spec]
    parts += ["non-empty"] if spec.get("minLength") else []
    parts += [f"at least {spec['minItems']} item{'s' if spec['minItems'] > 1 else ''}"] if "minItems" in spec else []
    if "pattern" in spec:
        parts.append(text(spec["x-expected"]) if "x-expected" in spec else f"matches `{spec['pattern']}`")
    if spec.get("type") == "array" and allowed(spec.get("items", {})):
        parts.append(f"each {allowed(spec['items'])}")
    return ", ".join(parts)


def row(path: str, spec: dict[str, Any], default: str, shown: str) -> str:
    return f"| `{path}` | {type_name(spec)} | {default} | {shown} | {allowed(spec)} | {text(spec.get('description', ''))} |"


def default_of(name: str, spec: dict[str, Any], table: dict[str, Any]) -> str:
    if name in table.get("required", ()):
        return "*required*"
    return code(spec["default"]) if "default" in spec else "—"


def table_rows(table: dict[str, Any], prefix: str, values: dict[str, Any]) -> Iterator[str]:
    """A row per key (a sub-table's keys after its own row); `values` are the params file's, shown
    where they differ from the default."""
    for name, child in table.get("properties", {}).items():
        spec, path = resolved(child, SCHEMA), f"{prefix}.{name}"
        differs = name in values and values[name] != spec.get("default")
        yield row(path, spec, default_of(name, spec, table), code(values[name]) if differs else "")
        yield from table_rows(spec, path, values.get(name, {}))


def map_rows(node: dict[str, Any], prefix: str, values: dict[str, dict[str, Any]]) -> Iterator[str]:
    """A map of named tables (teachers): a row per key of a table, showing what each named table sets;
    keys of the table named by "x-inherits" default to that table's value."""
    table = resolved(node["additionalProperties"], SCHEMA)
    inherited = SCHEMA["properties"][node["x-inherits"]]["properties"] if "x-inherits" in node else {}
    for name, child in table["properties"].items():
        spec = resolved(child, SCHEMA)
        default = f"from `[{node['x-inherits']}]`" if name in inherited else default_of(name, spec, table)
        shown = "; ".join(f"{owner}: {code(entry[name])}" for owner, entry in values.items() if name in entry)
        yield row(f"{prefix}.<name>.{name}", spec, default, shown)


def section(name: str, node: dict[str, Any], values: dict[str, Any]) -> str:
    about = text(node["description"])
    lines = [f"## `[{name}]`", "", about[0].upper() + about[1:] + "."]
    if isinstance(node.get("additionalProperties"), dict):
        lines[-1] += (f" Table names match `{node['propertyNames']['pattern']}`; "
                      f"at least {node.get('minProperties', 1)} tables.")
        body = map_rows(node, name, values)
    else:
        body = table_rows(node, name, values)
    lines += ["", "| key | type | default | params.toml | allowed | description |", "|---|---|---|---|---|---|", *body]
    return "\n".join(lines) + "\n"


def markdown(raw: dict[str, Any]) -> str:
    """The parameter reference: every key of the schema, with `raw` (a parsed params file)'s values."""
    sections = [section(name, resolved(node, SCHEMA), raw.get(name, {})) for name, node in SCHEMA["properties"].items()]
    return INTRO + "\n" + "\n".join(sections)
