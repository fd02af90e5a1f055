"""JSON Schema -> the OpenAPI ``Schema`` subset that Gemini's ``responseSchema`` and function
``parameters`` accept (pure). What it cannot express is refused with
:class:`InvalidRequestError` before anything is sent, never silently loosened.

Kept: ``type`` (a ``["T", "null"]`` pair becomes ``nullable``), ``format``, ``description``,
``title``, ``enum`` (a string ``const`` becomes a one-value enum), ``properties``, ``required``,
``items``, ``minItems``/``maxItems``, ``minimum``/``maximum``, ``minLength``/``maxLength``,
``pattern``, ``anyOf``, ``propertyOrdering``; local ``$ref`` into ``$defs``/``definitions`` is
inlined (not recursive ones). ``additionalProperties: false`` is dropped (a Gemini object holds
only its declared properties). Annotations with no effect (``$schema``, ``default``,
``examples``, ``$comment``) are dropped. Anything else (``oneOf``, ``allOf``, ``not``,
``if``/``then``, ``patternProperties``, open ``additionalProperties``, tuple ``items``...) is
refused.
"""

from __future__ import annotations

from typing import Any

from llmrouter.errors import InvalidRequestError

__all__ = ["to_gemini_schema"]

_TYPES = {"string", "number", "integer", "boolean", "array", "object", "null"}
_COPIED = (
    "format", "description", "title", "enum", "minItems", "maxItems", "minimum", "maximum",
    "minLength", "maxLength", "pattern", "propertyOrdering", "nullable", "minProperties",
    "maxProperties",
)  # fmt: skip
_DROPPED = frozenset({"$schema", "default", "examples", "$comment", "$id", "$defs", "definitions"})


def to_gemini_schema(schema: Any, scheme: str, where: str) -> dict[str, Any]:
    """``schema`` in Gemini's subset.

    Raises:
        InvalidRequestError: the schema uses what Gemini's schema cannot express.
    """
    defs: dict[str, Any] = {}
    if isinstance(schema, dict):
        defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _convert(schema, defs, scheme, where, ())


def _refuse(scheme: str, where: str, what: str) -> InvalidRequestError:
    return InvalidRequestError(
        f"{scheme}:// cannot express {what} in a response or parameter schema (Gemini takes an "
        "OpenAPI subset)",
        param=where,
    )


def _convert(
    schema: Any, defs: dict[str, Any], scheme: str, where: str, seen: tuple[str, ...]
) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise _refuse(scheme, where, f"a schema that is not an object ({schema!r})")
    if "$ref" in schema:
        ref = str(schema["$ref"])
        name = ref.rsplit("/", 1)[-1]
        if not ref.startswith(("#/$defs/", "#/definitions/")) or name not in defs:
            raise _refuse(scheme, where, f"$ref {ref!r}")
        if name in seen:
            raise _refuse(scheme, where, f"the recursive $ref {ref!r}")
        merged = {**defs[name], **{k: v for k, v in schema.items() if k != "$ref"}}
        return _convert(merged, defs, scheme, where, (*seen, name))
    out: dict[str, Any] = {}
    for key, value in schema.items():
        here = f"{where}.{key}"
        if key in _DROPPED:
            continue
        if key == "type":
            types = value if isinstance(value, list) else [value]
            if not types or any(t not in _TYPES for t in types):
                raise _refuse(scheme, here, f"type {value!r}")
            real = [t for t in types if t != "null"]
            if len(real) > 1:
                raise _refuse(scheme, here, f"a union of types {value!r} (use anyOf)")
            if "null" in types:
                out["nullable"] = True
            if real:
                out["type"] = real[0].upper()
        elif key == "const":
            if not isinstance(value, str):
                raise _refuse(scheme, here, "a non-string const")
            out["enum"] = [value]
        elif key in _COPIED:
            out[key] = value
        elif key == "required":
            out["required"] = list(value)
        elif key == "properties":
            out["properties"] = {
                name: _convert(sub, defs, scheme, f"{here}.{name}", seen)
                for name, sub in value.items()
            }
        elif key == "items":
            if isinstance(value, list):
                raise _refuse(scheme, here, "tuple items")
            out["items"] = _convert(value, defs, scheme, here, seen)
        elif key == "anyOf":
            out["anyOf"] = [
                _convert(sub, defs, scheme, f"{here}[{i}]", seen) for i, sub in enumerate(value)
            ]
        elif key == "additionalProperties":
            if value is not False:
                raise _refuse(scheme, here, "additionalProperties other than false")
        else:
            raise _refuse(scheme, here, repr(key))
    if "enum" in out and out.get("type", "STRING") != "STRING":
        raise _refuse(scheme, f"{where}.enum", "an enum of non-strings")
    if "enum" in out:
        out["type"] = "STRING"
    return out
