"""Checking one value the generator proposed for a field, with the rule extractor's own
recognisers and check digits: a value passes only where the rules would accept the same text.

The generator is asked to copy values as written, so each value is first located in the
analysed text (its span); the text found there, not the model's spelling of it, is then
validated and normalised (ISO date, E.164 phone, money pair, masked card, ...).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from mailbot.config import FieldSpec
from mailbot.fields.checks import check_problem, digits_of, iban_problem
from mailbot.fields.dates import find_dates
from mailbot.fields.money import find_money
from mailbot.fields.patterns import (
    Candidate,
    find_emails,
    find_enum,
    find_urls,
    mask_card,
)
from mailbot.fields.people import find_addresses
from mailbot.fields.phones import find_phones
from mailbot.fields.places import find_places
from mailbot.fields.result import FieldScalar
from mailbot.fields.schema import FieldSchema

_TRIM = " \t\n.,;:!?\"'“”‘’«»"
_NAME_TOKEN = re.compile(r"[^\W\d_][^\W\d_'’.-]*")
MAX_VALUE_CHARS = 200


@dataclass(frozen=True, slots=True)
class CheckedValue:
    """A proposed value that passed: where it is, as written, and normalised."""

    name: str
    type: str
    value: FieldScalar
    span: tuple[int, int]
    raw: str


class ValueProblem(ValueError):
    """A proposed value that cannot be used; the message says why (and goes to the retry)."""

    def __init__(self, name: str, raw: str, reason: str, span: tuple[int, int] = (0, 0)) -> None:
        super().__init__(f"{name} {raw!r}: {reason}")
        self.name = name
        self.raw = raw
        self.reason = reason
        self.span = span


def locate(raw: str, text: str) -> list[tuple[int, int]]:
    """Where `raw` is written in `text`: case and runs of white space aside, whole words."""
    words = raw.split()
    if not words:
        return []
    body = r"\s+".join(re.escape(w) for w in words)
    before = r"(?<!\w)" if re.match(r"\w", raw.strip()) else ""
    after = r"(?!\w)" if re.search(r"\w$", raw.strip()) else ""
    return [m.span() for m in re.finditer(before + body + after, text, re.IGNORECASE)]


def check_value(
    spec: FieldSpec,
    proposed: object,
    text: str,
    schema: FieldSchema,
    *,
    reference: datetime,
    language: str,
    taken: Iterable[tuple[int, int]] = (),
) -> CheckedValue:
    """The proposed value located and validated; raises `ValueProblem` saying why not.

    `taken` are spans other values already hold: the first occurrence outside them is used.
    """
    if isinstance(proposed, bool) or not isinstance(proposed, (str, int, float)):
        raise ValueProblem(spec.name, repr(proposed)[:80],
                           f"expected text copied from the email, got {type(proposed).__name__}")
    raw = str(proposed).strip().strip(_TRIM)
    if not raw:
        raise ValueProblem(spec.name, str(proposed), "empty value")
    if len(raw) > MAX_VALUE_CHARS:
        raise ValueProblem(spec.name, raw[:60] + "...", "longer than any field value")
    spans = locate(raw, text)
    if not spans:
        raise ValueProblem(spec.name, raw, "not found in the email (copy values as written)")
    held = list(taken)
    free = [s for s in spans if not any(s[0] < e and b < s[1] for b, e in held)]
    start, end = (free or spans)[0]
    written = text[start:end]
    value, problem = _validate(spec, written, schema, reference, language)
    if problem is not None:
        raise ValueProblem(spec.name, written, problem, (start, end))
    assert value is not None
    if spec.values and spec.type != "enum" and str(value) not in spec.values:
        raise ValueProblem(spec.name, written, "not one of the allowed values", (start, end))
    return CheckedValue(spec.name, spec.type, value, (start, end), written)


def _validate(
    spec: FieldSpec, written: str, schema: FieldSchema, reference: datetime, language: str
) -> tuple[FieldScalar | None, str | None]:
    kind = spec.type
    if kind in ("pattern", "string", "integer"):
        return _cued_value(spec, written)
    if kind == "iban":
        problem = iban_problem(written)
        return (re.sub(r"\s", "", written).upper(), None) if problem is None else (None, problem)
    if kind == "card":
        problem = check_problem("luhn", written)
        if problem is None and not 13 <= len(digits_of(written)) <= 19:
            problem = "a card number has 13 to 19 digits"
        return (mask_card(digits_of(written)), None) if problem is None else (None, problem)
    if kind == "person":
        return _person(written)
    found = {
        "money": lambda: find_money(written),
        "date": lambda: find_dates(written, reference, date_order=schema.date_order,
                                   language=language),
        "email": lambda: find_emails(written),
        "url": lambda: find_urls(written),
        "phone": lambda: find_phones(written, schema.phone_regions, language),
        "enum": lambda: find_enum(spec, written),
        "address": lambda: find_addresses(written),
        "place": lambda: find_places(written),
    }[kind]()
    return _whole(found, written, kind, spec.check)


def _whole(
    candidates: Iterable[Candidate], written: str, kind: str, check: str
) -> tuple[FieldScalar | None, str | None]:
    """The value of the recogniser's match that covers all of `written`."""
    covering = [c for c in candidates if c.start == 0 and c.end == len(written)]
    good = [c for c in covering if c.problem is None]
    if not good:
        if covering and covering[0].problem:
            return None, covering[0].problem
        return None, f"not recognised as a valid {kind}"
    problem = check_problem(check, written) if check != "none" else None
    return (good[0].value, None) if problem is None else (None, problem)


def _cued_value(spec: FieldSpec, written: str) -> tuple[FieldScalar | None, str | None]:
    patterns = [p for p in (spec.anywhere, spec.pattern) if p]
    if spec.type == "integer" and not spec.pattern:
        patterns.append(r"\d+")
    if patterns and not any(re.fullmatch(p, written) for p in patterns):
        return None, f"does not have the shape of a {spec.name.replace('_', ' ')}"
    problem = check_problem(spec.check, written)
    if problem is not None:
        return None, problem
    return (int(written) if spec.type == "integer" else written), None


def _person(written: str) -> tuple[FieldScalar | None, str | None]:
    tokens = written.split()
    if not 1 <= len(tokens) <= 4 or not all(_NAME_TOKEN.fullmatch(t) for t in tokens):
        return None, "not shaped like a personal name"
    if not all(t[0].isupper() for t in tokens):
        return None, "a personal name is written with capitals"
    return " ".join(tokens), None
