"""JSON schema statements of rules our validators check, so the OpenAPI description says them
too: fields that take no null, and "at least one of" several fields. Used as pydantic's
json_schema_extra; they change what the schema says, never what is accepted."""

from collections.abc import Callable
from typing import Any

JsonSchema = dict[str, Any]

# Patterns for text that is stripped before its length is checked (so it needs a non-space):
# a name has no control characters; free text may have line breaks, never a NUL.
NAME_PATTERN = r"^[^\x00-\x1f\x7f]*[^\s\x00-\x1f\x7f][^\x00-\x1f\x7f]*$"
TEXT_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"


def not_null(field: JsonSchema) -> JsonSchema:
    """An optional field's schema without its null (and without the null default)."""
    kept = {k: v for k, v in field.items() if k not in ("anyOf", "default")}
    options = [o for o in field.get("anyOf", [field]) if o.get("type") != "null"]
    return {**kept, **(options[0] if len(options) == 1 else {"anyOf": options})}


def nulls_refused(*names: str, examples: list[Any] | None = None) -> Callable[[JsonSchema], None]:
    """Optional fields that may be left out but not sent as null."""

    def extra(schema: JsonSchema) -> None:
        for name in names:
            schema["properties"][name] = not_null(schema["properties"][name])
        if examples:
            schema["examples"] = examples

    return extra


def given(names: tuple[str, ...], kind: JsonSchema) -> list[JsonSchema]:
    """anyOf branches for "at least one of `names`, each of `kind` when given"."""
    return [{"required": [n], "properties": {n: kind}} for n in names]
