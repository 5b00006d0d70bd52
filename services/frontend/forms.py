"""Job forms built from the gateway's own request schemas (``/openapi.json``), so every option the API
accepts has a widget, with the API's defaults, bounds and descriptions, and nothing is duplicated here.

:func:`job_kinds` finds each kind's parameters schema; :func:`render` draws widgets for it (nested
options in expanders) and returns only the values the engineer changed from the defaults plus the
required ones: the gateway fills in the rest, so what is sent is what was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import streamlit as st

Schema = dict[str, Any]
UNSET = "(not set)"


def resolve(schema: Schema, document: Mapping[str, Any]) -> Schema:
    """``schema`` with a top-level ``$ref`` followed into ``document``'s components."""
    while "$ref" in schema:
        target: Any = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    return schema


def job_kinds(document: Mapping[str, Any]) -> dict[str, Schema]:
    """``{kind: params schema}`` from ``POST /v1/jobs``'s request body (a union discriminated by ``kind``)."""
    body = document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    kinds: dict[str, Schema] = {}
    for option in body.get("oneOf") or body.get("anyOf") or [body]:
        request = resolve(option, document)
        kind = request["properties"]["kind"].get("const") or request["properties"]["kind"]["enum"][0]
        kinds[str(kind)] = resolve(request["properties"]["params"], document)
    return kinds


def _nullable(schema: Schema) -> tuple[Schema, bool]:
    """The non-null branch of ``anyOf: [X, null]``, and whether null is allowed."""
    options = schema.get("anyOf")
    if options and len(options) == 2 and {"type": "null"} in options:
        inner = next(option for option in options if option != {"type": "null"})
        merged = {**{k: v for k, v in schema.items() if k != "anyOf"}, **inner}
        return merged, True
    return schema, False


def _label(name: str, schema: Schema) -> str:
    return str(schema.get("title") or name.replace("_", " "))


def render(
    schema: Schema,
    document: Mapping[str, Any],
    *,
    key: str,
    choices: Mapping[str, list[str]] | None = None,
    errors: list[str] | None = None,
) -> dict[str, Any]:
    """Draw widgets for an object schema; return the changed and required values.

    ``choices`` turns a field (by name) into a pick list; free-form (JSON) fields that do not parse are
    left out and described in ``errors``.
    """
    errors = [] if errors is None else errors
    schema = resolve(schema, document)
    required = set(schema.get("required", []))
    values: dict[str, Any] = {}
    for name, raw in schema.get("properties", {}).items():
        field, nullable = _nullable(resolve(raw, document))
        path = f"{key}.{name}"
        if field.get("type") == "object" and "properties" in field:
            with st.expander(name.replace("_", " ").capitalize(), expanded=False):
                if field.get("description"):
                    st.caption(field["description"])
                nested = render(field, document, key=path, choices=choices, errors=errors)
            if nested or name in required:
                values[name] = nested
            continue
        try:
            value, default = _widget(name, field, nullable, path, choices or {})
        except ValueError as exc:
            errors.append(f"{path.split('.', 1)[-1]}: {exc}")
            continue
        if name in required or value != default:
            values[name] = value
    return values


def _widget(name: str, field: Schema, nullable: bool, path: str, choices: Mapping[str, list[str]]) -> tuple[Any, Any]:
    """One widget; returns (its value, the schema's default)."""
    label, help_text = _label(name, field), field.get("description")
    default = field.get("default")
    kind = field.get("type")
    if choices.get(name):
        options = choices[name]
        return st.selectbox(label, options, key=path, help=help_text), default
    if "enum" in field or "const" in field:
        options = [*field.get("enum", [field.get("const")])]
        if nullable:
            options = [UNSET, *options]
        shown = UNSET if default is None and nullable else default
        index = options.index(shown) if shown in options else 0
        picked = st.selectbox(label, options, index=index, key=path, help=help_text)
        return (None if picked == UNSET else picked), default
    if kind == "boolean" and not nullable:
        return st.checkbox(label, value=bool(default), key=path, help=help_text), default
    if kind in ("integer", "number") and not nullable and default is not None:
        bounds: dict[str, Any] = {}
        cast = int if kind == "integer" else float
        if "minimum" in field:
            bounds["min_value"] = cast(field["minimum"])
        if "maximum" in field:
            bounds["max_value"] = cast(field["maximum"])
        step = 1 if kind == "integer" else None
        number = st.number_input(
            label, value=cast(default), step=step, key=path, help=help_text, format=None if step else "%g", **bounds
        )
        return cast(number), default
    if kind == "string":
        text = st.text_input(label, value=default or "", key=path, help=help_text)
        return (None if nullable and not text.strip() else text), default
    # everything else (optional numbers, lists, maps, unions): JSON text, empty meaning "not set"
    shown = "" if default is None else json.dumps(default)
    typed = st.text_input(f"{label} (JSON)", value=shown, key=path, help=help_text).strip()
    if typed == shown:
        return default, default
    if not typed:
        return None, default
    try:
        return json.loads(typed), default
    except json.JSONDecodeError as exc:
        raise ValueError(f'not valid JSON ({exc.msg}); e.g. 0.5, "text", [1, 2]') from None
