"""Pseudonymisation for cloud calls: personal data out, stable placeholders in, and back.

`Pseudonymiser.redact(text)` replaces names, emails, phones, IBANs, cards, addresses,
order-like references and account ids with `<PERSON_1>`, `<EMAIL_1>`, ...; the same value
gets the same placeholder for as long as the object lives (one per message or thread).
`restore(answer)` puts the values back in the cloud model's answer in a single pass.

Two rules keep it safe:
- card numbers are never kept: their placeholder restores to the masked `**** 4242`;
- text in the customer's email that already looks like a placeholder ("<EMAIL_1>") is
  itself replaced by a `<LITERAL_n>` placeholder, so no customer text can make `restore`
  write someone's data where the customer asked for it.

Names are found by rules (see mailbot.fields.people); what they miss goes out as written.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from mailbot.fields.extract import RuleExtractor
from mailbot.fields.patterns import mask_card
from mailbot.fields.schema import FieldSchema, build_schema

if TYPE_CHECKING:
    from mailbot.config import Config, FieldSpec

log = logging.getLogger(__name__)

DEFAULT_CATEGORIES = ("PERSON", "EMAIL", "PHONE", "IBAN", "CARD", "ADDRESS", "ORDER", "ACCOUNT")
LITERAL = "LITERAL"
# Anything shaped like a placeholder, in the customer's text or the model's answer.
PLACEHOLDER = re.compile(r"<([A-Z][A-Z0-9]*)_(\d{1,6})>")
_LOOSE_PLACEHOLDER = re.compile(r"<\s*[A-Za-z][A-Za-z0-9]*\s*_\s*\d{1,6}\s*>")

_TYPE_CATEGORY = {
    "person": "PERSON", "email": "EMAIL", "phone": "PHONE", "iban": "IBAN", "card": "CARD",
    "address": "ADDRESS", "url": "URL",
}  # fmt: skip
# Pattern fields by name; a custom pattern field not listed here counts as ORDER.
_NAME_CATEGORY = {"customer_id": "ACCOUNT", "username": "ACCOUNT"}


@dataclass(frozen=True, slots=True)
class Redaction:
    """Exactly what would be sent: the redacted text and the placeholders it contains."""

    redacted: str
    placeholders: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        """`{"redacted": ..., "placeholders": {"<EMAIL_1>": ...}}`."""
        return {"redacted": self.redacted, "placeholders": dict(self.placeholders)}


def category_of(spec: FieldSpec) -> str | None:
    """The placeholder category of a schema field (None: never redacted, e.g. money)."""
    if spec.type in _TYPE_CATEGORY:
        return _TYPE_CATEGORY[spec.type]
    if spec.type in ("pattern", "string", "integer"):
        return _NAME_CATEGORY.get(spec.name, "ORDER")
    return None


class Pseudonymiser:
    """Replaces personal data with placeholders and puts it back; one per message/thread."""

    def __init__(
        self,
        schema: FieldSchema | None = None,
        categories: Iterable[str] = DEFAULT_CATEGORIES,
        known_names: Iterable[str] = (),
    ) -> None:
        wanted = set(categories) | {"CARD"}  # cards are always masked
        base = schema or build_schema()
        # Only the fields that are redacted take part: a money or date match must not
        # shield a phone number from redaction by winning an overlap.
        specs = tuple(s for s in base.specs if category_of(s) in wanted)
        # Recall first: phones of every configured language's regions, IBANs and cards
        # however they are written (see FieldSchema.thorough).
        self._schema = replace(base, specs=specs, required={}, thorough=True)
        self._category = {s.name: category_of(s) for s in specs}
        self._names: list[str] = [n for n in known_names if n]
        self._extractor = RuleExtractor()
        self._by_key: dict[tuple[str, str], str] = {}
        self._values: dict[str, str] = {}
        self._counters: Counter[str] = Counter()

    @classmethod
    def from_config(cls, config: Config, known_names: Iterable[str] = ()) -> Pseudonymiser:
        """A pseudonymiser with the configured schema and `fields.redact` categories."""
        return cls(build_schema(config.fields), config.fields.redact, known_names)

    def add_names(self, names: Iterable[str]) -> None:
        """Names known from headers (From, Cc) to look for in every later text."""
        self._names.extend(n for n in names if n and n not in self._names)

    @property
    def placeholders(self) -> Mapping[str, str]:
        """Every placeholder handed out so far and what it stands for (cards masked)."""
        return dict(self._values)

    def redact(self, text: str) -> Redaction:
        """Replace personal data in `text`; the same value keeps its placeholder.

        Every character any redacted recogniser claims is replaced: overlapping finds
        (an order-like number inside a phone number, a card typed with its expiry month)
        become one placeholder, so no digits of either are left behind.
        """
        literals = [
            _Span(m.start(), m.end(), LITERAL, None, 0, m.group())
            for m in _LOOSE_PLACEHOLDER.finditer(text)
        ]
        masked = _blank(text, literals)
        found: list[_Span] = []
        for spec, c in self._extractor.candidates(masked, self._schema, known_names=self._names):
            category = self._category[spec.name]
            assert category is not None
            if c.problem is None and c.confidence < self._schema.min_confidence:
                continue
            if c.problem is not None and category not in ("CARD", "IBAN"):
                continue  # a card or IBAN with a typo is still somebody's; a bad date is not
            shown = str(c.value) if category == "CARD" and c.problem is None else None
            # A phone is known by its E.164 form, so the same number written two ways (or
            # handed on as an extracted fact) keeps one placeholder.
            key = str(c.value) if category == "PHONE" and c.problem is None else None
            found.append(_Span(c.start, c.end, category, shown, _RANK.get(category, 9), key))
        spans = [*literals, *_union(found)]
        return self._apply(text, spans)

    def redact_value(self, name: str, value: object) -> str:
        """An extracted field's value as it may be sent: its placeholder when the field's
        category is redacted (the one the same value got in the text), else the value with
        anything personal inside it redacted."""
        category = self._category.get(name)
        raw = str(value)
        if category is None or not raw.strip():
            return self.redact(raw).redacted
        shown = raw if category == "CARD" else None  # a card's value is already masked
        key = raw if category == "PHONE" else None
        return self._placeholder(_Span(0, len(raw), category, shown, 0, key), raw)

    def restore(self, text: str) -> str:
        """Put the values back into `text` (cards stay masked); unknown placeholders stay."""
        return PLACEHOLDER.sub(lambda m: self._values.get(m.group(), m.group()), text)

    def unknown_placeholders(self, text: str) -> list[str]:
        """Placeholder-shaped tokens in `text` that this pseudonymiser never handed out."""
        return [m.group() for m in PLACEHOLDER.finditer(text) if m.group() not in self._values]

    def _key(self, category: str, raw: str) -> str:
        compact = " ".join(raw.split())
        if category in ("EMAIL", "PERSON", "ADDRESS"):
            return compact.casefold()
        if category in ("PHONE", "IBAN", "CARD"):
            return re.sub(r"[^0-9A-Za-z+]", "", compact).upper()
        return compact

    def _placeholder(self, span: _Span, raw: str) -> str:
        key = span.key or self._key(span.category, raw)
        found = self._by_key.get((span.category, key))
        if found is not None:
            return found
        self._counters[span.category] += 1
        token = f"<{span.category}_{self._counters[span.category]}>"
        self._by_key[(span.category, key)] = token
        if span.category == "CARD":
            # Never the number itself: the valid card's masked value, else the last four.
            self._values[token] = span.shown or mask_card(re.sub(r"\D", "", raw))
        else:
            self._values[token] = raw
        return token

    def _apply(self, text: str, spans: Sequence[_Span]) -> Redaction:
        out: list[str] = []
        used: dict[str, str] = {}
        pos = 0
        for span in sorted(spans, key=lambda s: (s.start, -s.end)):
            if span.start < pos:
                continue  # inside a literal placeholder already replaced
            token = self._placeholder(span, text[span.start : span.end])
            out.append(text[pos : span.start])
            out.append(token)
            used[token] = self._values[token]
            pos = span.end
        out.append(text[pos:])
        log.debug("redacted %d spans", len(used))
        return Redaction("".join(out), used)


@dataclass(frozen=True, slots=True)
class _Span:
    """A stretch of text to replace, its category and (cards) the masked value to show."""

    start: int
    end: int
    category: str
    shown: str | None
    rank: int
    key: str | None = None  # what identifies the value, when not its text (a phone's E.164)


# Which category names a stretch where several overlap: the longest find, then this order.
_RANK = {
    "CARD": 0, "IBAN": 1, "EMAIL": 2, "URL": 3, "PHONE": 4, "ACCOUNT": 5, "ORDER": 6,
    "ADDRESS": 7, "PERSON": 8,
}  # fmt: skip


def _union(spans: Sequence[_Span]) -> list[_Span]:
    """Overlapping spans merged into one, named after the longest (then highest-ranked)."""
    merged: list[_Span] = []
    group: list[_Span] = []
    end = -1
    for span in sorted(spans, key=lambda s: (s.start, -s.end)):
        if group and span.start >= end:
            merged.append(_merged(group))
            group = []
        group.append(span)
        end = max(end, span.end) if len(group) > 1 else span.end
    if group:
        merged.append(_merged(group))
    return merged


def _merged(group: Sequence[_Span]) -> _Span:
    lead = min(group, key=lambda s: (s.start - s.end, s.rank))
    shown = lead.shown if lead.category == "CARD" else None
    if lead.category == "CARD" and shown is None:
        shown = next((s.shown for s in group if s.category == "CARD" and s.shown), None)
    key = lead.key if lead.start == min(s.start for s in group) and lead.end == max(
        s.end for s in group) else None
    return _Span(min(s.start for s in group), max(s.end for s in group), lead.category, shown, 0,
                 key)


def _blank(text: str, spans: Sequence[_Span]) -> str:
    # Literal placeholders are blanked (same length, so spans stay valid) before the
    # recognisers run, so that "<EMAIL_1>" is never half-read as something else.
    chars = list(text)
    for span in spans:
        chars[span.start : span.end] = " " * (span.end - span.start)
    return "".join(chars)
