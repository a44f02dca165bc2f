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
        self._schema = replace(base, specs=specs, required={})
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
        """Replace personal data in `text`; the same value keeps its placeholder."""
        spans: list[tuple[int, int, str, str]] = []  # start, end, category, key
        for m in _LOOSE_PLACEHOLDER.finditer(text):
            spans.append((m.start(), m.end(), LITERAL, m.group()))
        masked = _blank(text, spans)
        extraction = self._extractor.extract(masked, self._schema, known_names=self._names)
        for name, values in extraction.fields.items():
            category = self._category[name]
            assert category is not None
            for v in values:
                spans.append((v.span[0], v.span[1], category, self._key(category, v.raw)))
        for rejected in extraction.rejected:
            # A card or IBAN with a typo is still somebody's card or IBAN.
            category = self._category.get(rejected.name)
            if category in ("CARD", "IBAN"):
                start, end = rejected.span
                spans.append((start, end, category, self._key(category, rejected.raw)))
        return self._apply(text, spans)

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

    def _placeholder(self, category: str, key: str, raw: str) -> str:
        found = self._by_key.get((category, key))
        if found is not None:
            return found
        self._counters[category] += 1
        token = f"<{category}_{self._counters[category]}>"
        self._by_key[(category, key)] = token
        self._values[token] = mask_card(re.sub(r"\D", "", raw)) if category == "CARD" else raw
        return token

    def _apply(self, text: str, spans: Sequence[tuple[int, int, str, str]]) -> Redaction:
        out: list[str] = []
        used: dict[str, str] = {}
        pos = 0
        for start, end, category, key in sorted(spans):
            if start < pos:
                continue  # overlaps a span already replaced
            token = self._placeholder(category, key, text[start:end])
            out.append(text[pos:start])
            out.append(token)
            used[token] = self._values[token]
            pos = end
        out.append(text[pos:])
        log.debug("redacted %d spans", len(used))
        return Redaction("".join(out), used)


def _blank(text: str, spans: Sequence[tuple[int, int, str, str]]) -> str:
    # Literal placeholders are blanked (same length, so spans stay valid) before the
    # recognisers run, so that "<EMAIL_1>" is never half-read as something else.
    chars = list(text)
    for start, end, _category, _key in spans:
        chars[start:end] = " " * (end - start)
    return "".join(chars)
