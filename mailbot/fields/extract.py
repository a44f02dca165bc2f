"""Field extraction: the `FieldExtractor` protocol and the deterministic `RuleExtractor`.

The rule extractor runs one recogniser per field of the schema, then settles overlaps: a
character belongs to one value at most. Types whose match is self-validating (IBAN, card,
email, URL) win over money and dates, which win over cue-word ids, phones, enum words,
addresses and names; within a type the more confident, then the longer, match wins.
A generator-backed extractor (the SLM writing validated JSON) implements the same protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from itertools import chain
from typing import TYPE_CHECKING, Protocol

from mailbot.config import FieldSpec
from mailbot.fields.dates import find_dates, guess_language
from mailbot.fields.loose import find_cards_loosely, find_emails_loosely, find_ibans_loosely
from mailbot.fields.money import find_money
from mailbot.fields.patterns import (
    Candidate,
    find_cards,
    find_cued,
    find_emails,
    find_enum,
    find_ibans,
    find_urls,
)
from mailbot.fields.people import find_addresses, find_people
from mailbot.fields.phones import find_phones
from mailbot.fields.places import find_places
from mailbot.fields.result import Extraction, FieldValue, Rejection
from mailbot.fields.schema import FieldSchema

if TYPE_CHECKING:
    from mailbot.parse.message import InboundMessage

log = logging.getLogger(__name__)

# Lower wins an overlap.
_PRIORITY = {
    "iban": 0, "card": 1, "email": 2, "url": 3, "money": 4, "date": 5, "pattern": 6,
    "string": 6, "integer": 6, "phone": 7, "enum": 8, "address": 9, "person": 10, "place": 11,
}  # fmt: skip


class FieldExtractor(Protocol):
    """Anything that turns text into an `Extraction` under a schema."""

    def extract(
        self,
        text: str,
        schema: FieldSchema,
        *,
        intent: str | None = None,
        reference: datetime | None = None,
        known_names: Sequence[str] = (),
    ) -> Extraction:
        """Find the schema's fields in `text`; relative dates resolve against `reference`."""
        ...


class RuleExtractor:
    """Deterministic recognisers: patterns with check digits, dates, money, phones, names."""

    def extract(
        self,
        text: str,
        schema: FieldSchema,
        *,
        intent: str | None = None,
        reference: datetime | None = None,
        known_names: Sequence[str] = (),
    ) -> Extraction:
        """Find the schema's fields in `text`; relative dates resolve against `reference`."""
        found = self.candidates(text, schema, reference=reference, known_names=known_names)
        accepted, rejected = _settle(found, schema.min_confidence, text)
        fields: dict[str, list[FieldValue]] = {}
        for spec, c in sorted(accepted, key=lambda item: item[1].start):
            fields.setdefault(spec.name, []).append(
                FieldValue(spec.name, c.value, spec.type, (c.start, c.end), c.confidence,
                           text[c.start : c.end])
            )  # fmt: skip
        missing = tuple(n for n in schema.required_for(intent) if n not in fields)
        return Extraction(
            fields={name: tuple(values) for name, values in fields.items()},
            missing=missing,
            rejected=tuple(rejected),
        )


    def candidates(
        self,
        text: str,
        schema: FieldSchema,
        *,
        reference: datetime | None = None,
        known_names: Sequence[str] = (),
    ) -> list[tuple[FieldSpec, Candidate]]:
        """Everything each recogniser found, valid or not, before overlaps are settled.

        The pseudonymiser redacts the union of these spans, so that a value that lost an
        overlap to another field can never leave some of its digits behind.
        """
        reference = reference or datetime.now(UTC)
        language = guess_language(text, schema.languages)
        found: list[tuple[FieldSpec, Candidate]] = []
        for spec in schema.specs:
            for candidate in _recognise(spec, text, schema, reference, known_names, language):
                if candidate.end > candidate.start:
                    found.append((spec, candidate))
        return found


def _recognise(
    spec: FieldSpec,
    text: str,
    schema: FieldSchema,
    reference: datetime,
    known_names: Sequence[str],
    language: str,
) -> Iterator[Candidate]:
    kind = spec.type
    if kind in ("pattern", "string", "integer"):
        return find_cued(spec, text)
    if kind == "money":
        return find_money(text)
    if kind == "date":
        return find_dates(text, reference, date_order=schema.date_order, language=language)
    if kind == "email":
        return _with_loose(find_emails(text), find_emails_loosely, text, schema)
    if kind == "phone":
        return find_phones(
            text, schema.phone_regions, language, thorough=schema.thorough,
            languages=schema.languages,
        )  # fmt: skip
    if kind == "url":
        return find_urls(text)
    if kind == "iban":
        return _with_loose(find_ibans(text), find_ibans_loosely, text, schema)
    if kind == "card":
        return _with_loose(find_cards(text), find_cards_loosely, text, schema)
    if kind == "enum":
        return find_enum(spec, text)
    if kind == "person":
        return find_people(text, known_names)
    if kind == "address":
        return find_addresses(text)
    if kind == "place":
        return find_places(text)
    raise AssertionError(f"unhandled field type {kind!r}")  # config validation forbids it


def _with_loose(
    strict: Iterator[Candidate],
    loose: Callable[[str], Iterator[Candidate]],
    text: str,
    schema: FieldSchema,
) -> Iterator[Candidate]:
    # A thorough schema (redaction) also takes what the recall-first recogniser finds.
    return chain(strict, loose(text)) if schema.thorough else strict


def _settle(
    found: list[tuple[FieldSpec, Candidate]], min_confidence: float, text: str
) -> tuple[list[tuple[FieldSpec, Candidate]], list[Rejection]]:
    good = [(s, c) for s, c in found if c.problem is None and c.confidence >= min_confidence]
    good.sort(key=lambda sc: (_PRIORITY[sc[0].type], -sc[1].confidence, sc[1].start - sc[1].end))
    taken: list[tuple[int, int]] = []
    accepted = []
    for spec, c in good:
        if not any(c.start < end and start < c.end for start, end in taken):
            taken.append((c.start, c.end))
            accepted.append((spec, c))
    bad = [(s, c) for s, c in found if c.problem is not None]
    bad.sort(key=lambda sc: (_PRIORITY[sc[0].type], sc[1].start - sc[1].end))
    rejected: list[Rejection] = []
    for spec, c in bad:
        if any(c.start < end and start < c.end for start, end in taken):
            continue  # a good value of another field (a tracking number), or already rejected
        taken.append((c.start, c.end))
        assert c.problem is not None
        rejected.append(Rejection(spec.name, text[c.start : c.end], (c.start, c.end), c.problem))
        log.debug("rejected %s %r: %s", spec.name, rejected[-1].to_json()["raw"], c.problem)
    return accepted, sorted(rejected, key=lambda r: r.span)


def extract_message(
    message: InboundMessage,
    schema: FieldSchema,
    *,
    intent: str | None = None,
    extractor: FieldExtractor | None = None,
) -> tuple[str, Extraction]:
    """Extract fields from a parsed email; returns the analysed text (spans point into it)."""
    text = message.text_with_signature
    names = [message.from_addr.name] if message.from_addr and message.from_addr.name else []
    extraction = (extractor or RuleExtractor()).extract(
        text, schema, intent=intent, reference=message.date, known_names=names
    )
    return text, extraction
