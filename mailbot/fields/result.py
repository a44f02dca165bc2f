"""What field extraction produces: values with their source spans, gaps and rejects."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from mailbot.fields.masking import mask_payment_data

# A money value is kept as (amount as a decimal string, ISO 4217 code or None) so that no
# float ever touches an amount; JSON shows it as {"amount": "142.50", "currency": "EUR"}.
FieldScalar = str | int | tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class FieldValue:
    """One recognised value of a field.

    `span` is (start, end) into the text that was analysed and `raw == text[start:end]`;
    `value` is the normalised form (ISO date, E.164 phone, money pair, ...).
    """

    name: str
    value: FieldScalar
    type: str
    span: tuple[int, int]
    confidence: float
    raw: str

    def json_value(self) -> Any:
        """The value typed for JSON: money as an object, everything else as is."""
        if self.type == "money" and isinstance(self.value, tuple):
            amount, currency = self.value
            return {"amount": amount, "currency": currency}
        return self.value

    def to_json(self) -> dict[str, Any]:
        """`{"value", "type", "span", "confidence"}` as `mailbot extract` prints it."""
        return {
            "value": self.json_value(),
            "type": self.type,
            "span": [self.span[0], self.span[1]],
            "confidence": round(self.confidence, 3),
        }


@dataclass(frozen=True, slots=True)
class Rejection:
    """Text that looked like a field but failed validation; never passed on as a value."""

    name: str
    raw: str
    span: tuple[int, int]
    reason: str

    def to_json(self) -> dict[str, Any]:
        """The four fields for JSON (and the audit log): card and IBAN digits are masked.

        A card number that failed its Luhn check is still somebody's card; `raw` keeps its
        last four digits (and an IBAN its country and last four), enough to recognise it.
        """
        return {
            "name": self.name,
            "raw": mask_payment_data(self.raw),
            "span": [self.span[0], self.span[1]],
            "reason": mask_payment_data(self.reason),
        }


def _frozen(mapping: Mapping[str, tuple[FieldValue, ...]]) -> Mapping[str, tuple[FieldValue, ...]]:
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True, slots=True)
class Extraction:
    """All fields found in one text, in order of appearance per field.

    `missing` lists the fields the intent requires that were not found; `rejected` lists
    candidates that failed validation (wrong check digit, impossible date, ...).
    """

    fields: Mapping[str, tuple[FieldValue, ...]] = field(default_factory=lambda: _frozen({}))
    missing: tuple[str, ...] = ()
    rejected: tuple[Rejection, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.fields, MappingProxyType):
            object.__setattr__(self, "fields", _frozen(self.fields))

    def first(self, name: str) -> FieldValue | None:
        """The first value of field `name`, or None."""
        values = self.fields.get(name, ())
        return values[0] if values else None

    def values(self, name: str) -> list[FieldScalar]:
        """The normalised values of field `name`, in order of appearance."""
        return [v.value for v in self.fields.get(name, ())]

    def to_json(self, *, with_rejected: bool = True) -> dict[str, Any]:
        """`{"fields": {name: obj | [obj, ...]}, "missing": [...], "rejected": [...]}`."""
        fields: dict[str, Any] = {}
        for name, values in self.fields.items():
            objs = [v.to_json() for v in values]
            fields[name] = objs[0] if len(objs) == 1 else objs
        out: dict[str, Any] = {"fields": fields, "missing": list(self.missing)}
        if with_rejected:
            out["rejected"] = [r.to_json() for r in self.rejected]
        return out
