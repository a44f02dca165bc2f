"""JSON schemas of the structured answers, and their validation.

The schemas are written in the subset that OpenAI's strict structured output accepts (every
property required, no extra properties, nullable as a type union), so the same schema both
constrains the model and validates its answer here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

PRIORITIES = ("low", "normal", "high", "urgent")
SENTIMENTS = ("negative", "neutral", "positive")


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field to extract: a name, what it means (shown to the model), and its JSON type."""

    name: str
    description: str
    type: str = "string"  # "string", "number", "integer" or "boolean"


DEFAULT_FIELDS = (
    FieldSpec("order_number", "the customer's order number or reference, as written"),
    FieldSpec("account", "the customer's account name, customer number or login"),
    FieldSpec("amount", "a sum of money the email is about, as a number", "number"),
    FieldSpec("currency", "the ISO 4217 code of that amount, e.g. EUR"),
    FieldSpec("date", "a date the email is about (order, delivery, charge), as YYYY-MM-DD"),
    FieldSpec("product", "the product or service the email is about"),
    FieldSpec("tracking_number", "a parcel tracking number"),
)


def classification_schema(labels: Sequence[str]) -> dict[str, Any]:
    """The schema of a classification answer; `intent` must be one of `labels`."""
    if not labels:
        raise ValueError("at least one intent label is required")
    return {
        "type": "object",
        "properties": {
            "intent": {"type": "string", "enum": list(labels)},
            "priority": {"type": "string", "enum": list(PRIORITIES)},
            "sentiment": {"type": "string", "enum": list(SENTIMENTS)},
            "language": {
                "type": "string",
                "description": "ISO 639-1 code of the email's language",
                "pattern": "^[a-z]{2,3}$",
            },
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["intent", "priority", "sentiment", "language", "confidence"],
        "additionalProperties": False,
    }


def fields_schema(fields: Sequence[FieldSpec]) -> dict[str, Any]:
    """The schema of a field-extraction answer: every field present, null when absent."""
    if not fields:
        raise ValueError("at least one field is required")
    return {
        "type": "object",
        "properties": {
            f.name: {"type": [f.type, "null"], "description": f.description} for f in fields
        },
        "required": [f.name for f in fields],
        "additionalProperties": False,
    }


def schema_errors(instance: Any, schema: dict[str, Any]) -> list[str]:
    """Every way `instance` breaks `schema`, as short readable lines (empty: valid)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    lines = []
    for error in errors:
        where = "/".join(str(p) for p in error.absolute_path) or "(answer)"
        lines.append(f"{where}: {error.message}")
    return lines
