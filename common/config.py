"""The base of every typed config: unknown keys are errors, so a typo never silently does nothing.

Numbers are finite and integers fit in 64 bits; strings are bounded. A config that passes these
checks can be stored (PostgreSQL's JSON has no Infinity) and reaches numpy and torch without an
overflow at run time. The bounds are in the JSON schema too, so the REST API's OpenAPI document
says what the server accepts and a fuzzer generates what would really run.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, field_validator

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_STRING_LENGTH = 4096


def _bound_schema(node: Any) -> None:
    """Add the 64-bit and string-length bounds to every property schema that has none of its own."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            node.setdefault("minimum", INT_MIN)
            node.setdefault("maximum", INT_MAX)
        elif node.get("type") == "string" and "enum" not in node and "const" not in node:
            node.setdefault("maxLength", MAX_STRING_LENGTH)
        for value in node.values():
            _bound_schema(value)
    elif isinstance(node, list):
        for value in node:
            _bound_schema(value)


def _bounded_properties(schema: dict[str, Any], _cls: type) -> None:
    _bound_schema(schema.get("properties", {}))


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False,
                              json_schema_extra=_bounded_properties)

    @field_validator("*", mode="after")
    @classmethod
    def _bounded(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and not INT_MIN <= value <= INT_MAX:
            raise ValueError("does not fit in a signed 64-bit integer")
        if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
            raise ValueError(f"longer than {MAX_STRING_LENGTH} characters")
        return value
