"""Recognisers for ids and simple values: cue-word ids, emails, URLs, IBANs, cards, enums.

Every recogniser yields `Candidate`s: a span, a normalised value, a confidence and, when
the text looks like the field but fails validation, the reason (`problem`). The extractor
turns problems into `Rejection`s; they are never passed on as values.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from mailbot.config import FieldSpec
from mailbot.fields.checks import check_problem, digits_of, luhn_ok
from mailbot.fields.masking import mask_card
from mailbot.fields.result import FieldScalar


@dataclass(frozen=True, slots=True)
class Candidate:
    """A possible field value at text[start:end]; `problem` set means it failed validation."""

    start: int
    end: int
    value: FieldScalar
    confidence: float
    problem: str | None = None


# Number signs between a cue and its value, as written in the languages we read: "#",
# "No.", "Nr.", "nº", "n°", "n.º", "núm.", "nro.", "n." and the compound "Rechnung-Nr.".
_NUMBER_SIGN = (
    r"[#№]|-(?i:nr|no|nummer|number)(?![^\W\d_])\.?|(?i:n\.?[º°])\.?"
    r"|(?i:no|nr|nro|núm|num|n)\.|(?i:no|nr|nro|núm)(?![^\W\d_])"
)
# Verbs that may stand between a cue and its value ("my username is jdoe", "order was").
_VERBS = (
    r"is|are|was|were|ist|sind|lautet|lauten|war|waren|est|sont|était|es|son|era|è|sono"
    r"|é|são|zijn"
)
_NUMBER_WORDS = (
    r"numbers?|num|nummer|numéro|número|numero|id|ref|reference|référence|referencia"
    r"|riferimento|code"
)
# "with (the) number", in each language: "mit der Nummer", "con el número", "met nummer".
_WITH_NUMBER = (
    r"(?i:(?:with(?:[ \t]+the)?|mit(?:[ \t]+der)?|avec(?:[ \t]+le)?|con(?:[ \t]+(?:el|il))?"
    r"|met(?:[ \t]+het)?|com(?:[ \t]+o)?)[ \t]+(?:number|nummer|numéro|número|numero))"
)
# Words between a cue and its value: "order number: #", "Bestellung Nr.", "order is".
_CONNECTOR = (
    rf"(?:[ \t]*(?:[:=(]|{_NUMBER_SIGN}|{_WITH_NUMBER}(?![\w-])"
    rf"|(?i:{_NUMBER_WORDS}|{_VERBS})(?![\w-])\.?)"
    r"[ \t]*\n?)"
)
# A connector that says "a number follows" (not just a verb or a bracket).
_SIGNED = re.compile(rf"[#№:=]|{_NUMBER_SIGN}|(?i:(?<![^\W\d_]){_NUMBER_WORDS}(?![^\W\d_]))")
# A cue that says so itself: "invoice number", "Rechnungsnummer(n)", "Kundennr", "order no".
_SIGNED_CUE = re.compile(
    rf"(?i:(?<![^\W\d_])(?:{_NUMBER_WORDS})(?![^\W\d_])|(?:nummer|nr)n?s?\.?\Z"
    r"|(?:^|[\s-])(?:no|nro|núm)\.?\Z)"
)
_VERB = re.compile(rf"(?i:(?<![^\W\d_])(?:{_VERBS})(?![^\W\d_]))")
# Shapes that are dates, not ids, when they are all of the value: 03/2026, 2026-04, 1.3.26.
_DATE_LIKE = re.compile(
    r"(?:0?[1-9]|1[0-2])[/.-](?:19|20)\d\d|(?:19|20)\d\d[/.-](?:0?[1-9]|1[0-2])"
    r"|\d{1,2}[/.-]\d{1,2}[/.-](?:\d\d)?\d\d|(?:19|20)\d\d[/.-]\d{1,2}[/.-]\d{1,2}"
)
# The end of a value: not inside a word, an address, a decimal number or a domain name.
_VALUE_END = r"(?![\w@-]|\.\w|,\d{1,2}(?!\d))"
_TRAILING = "-/."
# Values that a cue word may be followed by in prose but that are never ids or usernames.
_STOPWORDS = frozenset(
    """a an and are as at be but by can cannot can't did does doesn't for from had has have
    in is isn't it its not of on or page password please reset so that the this to was
    wasn't will with won't works working field box anymore again button screen link details
    problem problems issue issues attempt attempts fails failed error errors blocked locked
    disabled expired incorrect wrong correct valid invalid same different und oder ist nicht der die
    das ein eine mit für et ou le la les est pas y o el los es no""".split()  # noqa: SIM905
)  # fmt: skip


# A cue ending in an abbreviation ("Rechnungs-Nr", "order no", "inv") may carry its dot.
# No word ends in "nr" ("Rechnungsnr", "factuurnr", "Kundennr"); "no" and the rest must
# stand alone ("order no", not "scontrino").
_ABBREVIATED = re.compile(r"(?i)(?:nr|(?:^|[\s-])(?:no|nro|num|núm|inv|ref))\Z")
# Further digit groups after a bare number: "0800 123 4567" is one number, not an id.
_GROUPED_TAIL = re.compile(r"(?:[ \t\u00a0]\d{2,})+")


def _cue_word(cue: str) -> str:
    word = re.escape(cue).replace(r"\ ", r"[ \t]+")
    return word + r"\.?" if _ABBREVIATED.search(cue) else word


@lru_cache(maxsize=256)
def _cue_regex(cues: tuple[str, ...], pattern: str) -> re.Pattern[str]:
    words = "|".join(_cue_word(c) for c in sorted(cues, key=len)[::-1])
    # A hyphen may follow the cue only as "Rechnung-Nr."; "order-tracking" is no cue.
    return re.compile(
        rf"(?<![\w-])(?P<k>(?i:{words}))(?!\w|-(?!(?i:nr|no|nummer|number)(?![^\W\d_])))"
        rf"(?P<c>{_CONNECTOR}{{0,3}}[ \t]*#?[\"'“„‘«]?)(?P<v>{pattern}){_VALUE_END}"
    )


@lru_cache(maxsize=256)
def _continuation_regex(pattern: str) -> re.Pattern[str]:
    # "orders 48213 and 48214", "A10234, A10235 / A10236", "n° 4410-A et n° 4410-B"
    return re.compile(
        rf"[ \t]*(?:,|&|/|(?i:and|und|sowie|et|y|e|en|or|oder|ou|o)(?!\w))"
        rf"[ \t]*(?:(?:{_NUMBER_SIGN})[ \t]*)?(?P<v>{pattern}){_VALUE_END}"
    )


@lru_cache(maxsize=256)
def _anywhere_regex(pattern: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w-])#?(?P<v>{pattern}){_VALUE_END}")


def _same_shape(a: str, b: str) -> bool:
    return abs(len(a) - len(b)) <= 2 and a[:1].isdigit() == b[:1].isdigit()


def _id_candidate(spec: FieldSpec, text: str, start: int, end: int, conf: float) -> Candidate:
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    raw = text[start:end]
    value: FieldScalar = int(raw) if spec.type == "integer" else raw
    problem = check_problem(spec.check, raw)
    if problem is None and spec.values and raw not in spec.values:
        problem = "not one of the allowed values"
    return Candidate(start, end, value, conf, problem)


def _plausible(value: str, signed: bool, verb_only: bool) -> bool:
    """False for values that a cue word is followed by but that are no ids.

    A date ("invoice 03/2026"), a year without a number sign ("the invoice 2025", while
    "invoice #2025" stays an id), a number of three digits or fewer without a sign (a
    quantity: "recibo 150 correos", Spanish for "I get 150 emails"), and a short bare
    number after a mere verb ("the bill was 2400", an amount without its currency).
    """
    if _DATE_LIKE.fullmatch(value):
        return False
    if not signed and value.isdigit() and len(value) <= 3:
        return False
    if not signed and len(value) == 4 and value.isdigit() and 1900 <= int(value) <= 2099:
        return False
    return not (verb_only and value.isdigit() and len(value) <= 4)


def _starts_grouped_number(value: str, text: str, end: int) -> bool:
    """True for the first group of a phone or card number written in groups ("0800 123")."""
    if not value.isdigit():
        return False
    tail = _GROUPED_TAIL.match(text, end)
    if tail is None:
        return False
    # "order 48213 12 items" stays an id: no leading 0, and too few digits for a phone.
    return value.startswith("0") or len(value) + len(digits_of(tail.group())) >= 9


def find_cued(spec: FieldSpec, text: str) -> Iterator[Candidate]:
    """Values of a pattern/string/integer field: after a cue word, or anywhere if strict."""
    pattern = spec.pattern or (r"\d+" if spec.type == "integer" else "")
    anywhere = re.compile(rf"(?:{spec.anywhere})\Z") if spec.anywhere else None
    if spec.cues and pattern:
        regex, cont = _cue_regex(tuple(spec.cues), pattern), _continuation_regex(pattern)
        for match in regex.finditer(text):
            first = match.group("v")
            if first.lower() in _STOPWORDS or len(first.strip(_TRAILING)) < 3:
                continue
            connector = match.group("c")
            signed = _SIGNED_CUE.search(match.group("k")) is not None or (
                _SIGNED.search(connector) is not None
            )
            verb_only = not signed and _VERB.search(connector) is not None
            if not _plausible(first.strip(_TRAILING), signed, verb_only):
                continue
            if _starts_grouped_number(first, text, match.end("v")):
                continue
            hits = [match.span("v")]
            pos = match.end("v")
            while (more := cont.match(text, pos)) and _same_shape(first, more.group("v")):
                if not _plausible(more.group("v").strip(_TRAILING), signed, verb_only):
                    break  # "factures 2210 en 2025": the second number is a year
                hits.append(more.span("v"))
                pos = more.end("v")
            for start, end in hits:
                strict = anywhere is not None and anywhere.match(text[start:end]) is not None
                yield _id_candidate(spec, text, start, end, 0.97 if strict else 0.88)
    if spec.anywhere:
        for match in _anywhere_regex(spec.anywhere).finditer(text):
            yield _id_candidate(spec, text, *match.span("v"), conf=0.9)


_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}@[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?){0,8}\.[A-Za-z]{2,24}(?![\w-])"
)


def find_emails(text: str) -> Iterator[Candidate]:
    """Email addresses; the domain is lower-cased, the local part kept as written."""
    for m in _EMAIL.finditer(text):
        local, _, domain = m.group().rpartition("@")
        yield Candidate(m.start(), m.end(), f"{local}@{domain.lower()}", 0.99)


_URL = re.compile(r"(?<![\w@/])(?:https?://|www\.)[^\s<>\"'`]+", re.IGNORECASE)


def find_urls(text: str) -> Iterator[Candidate]:
    """http(s) and www. links, without trailing punctuation or an unbalanced bracket."""
    for m in _URL.finditer(text):
        end = m.end()
        while end > m.start():
            ch = text[end - 1]
            if ch in ".,;:!?'\"»" or (ch in ")]}" and _unbalanced(text[m.start() : end], ch)):
                end -= 1
                continue
            break
        if end - m.start() > len("www.x.y") - 1:
            yield Candidate(m.start(), end, text[m.start() : end], 0.97)


def _unbalanced(url: str, closer: str) -> bool:
    opener = {")": "(", "]": "[", "}": "{"}[closer]
    return url.count(closer) > url.count(opener)


_IBAN = re.compile(r"(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![\w-])")
_IBAN_CUE = re.compile(r"(?i)\b(?:iban|bank|account|konto|compte|cuenta|sepa)\b")


def find_ibans(text: str) -> Iterator[Candidate]:
    """IBANs, validated by country length and mod-97; a bad one near a cue is rejected."""
    for m in _IBAN.finditer(text):
        raw = m.group()
        compact = raw.replace(" ", "")
        if len(compact) < 15:
            continue
        problem = check_problem("mod97", raw)
        if problem is None:
            yield Candidate(m.start(), m.end(), compact, 0.99)
        elif " " in raw or _IBAN_CUE.search(text, max(0, m.start() - 40), m.start()):
            yield Candidate(m.start(), m.end(), compact, 0.9, problem)


# 13-19 digits, contiguous or grouped as cards are printed (4-4-4-4, 4-6-5, 4-4-4-4-3).
_CARD = re.compile(
    r"(?<![\d-])(?:\d{13,19}|\d{4}([ -])\d{4}\1\d{4}\1\d{4}(?:\1\d{3})?|\d{4}([ -])\d{6}\2\d{5})"
    r"(?![\d-])"
)
_CARD_CUE = re.compile(
    r"(?i)\b(?:card|credit|debit|visa|mastercard|master card|amex|american express|"
    r"karte|kreditkarte|carte|tarjeta|carta|cc)\b"
)


def find_cards(text: str) -> Iterator[Candidate]:
    """Payment card numbers (Luhn-checked); the value is masked to the last four digits."""
    for m in _CARD.finditer(text):
        digits = digits_of(m.group())
        cued = _CARD_CUE.search(text, max(0, m.start() - 40), m.start()) is not None
        grouped = not m.group().isdigit()
        if digits[0] not in "23456":
            continue
        if luhn_ok(digits):
            if cued or grouped or len(digits) in (15, 16):
                yield Candidate(m.start(), m.end(), mask_card(digits), 0.97 if cued else 0.8)
        elif cued or grouped:
            yield Candidate(
                m.start(), m.end(), mask_card(digits), 0.9, "Luhn check digit does not match"
            )


@lru_cache(maxsize=64)
def _enum_regex(values: tuple[str, ...]) -> list[tuple[str, re.Pattern[str]]]:
    out = []
    for value in values:
        flags = 0 if value.isupper() else re.IGNORECASE  # "UPS" but not "ups and downs"
        body = re.escape(value).replace(r"\ ", r"\s+")
        out.append((value, re.compile(rf"(?<![\w-]){body}(?![\w-])", flags)))
    return out


def find_enum(spec: FieldSpec, text: str) -> Iterator[Candidate]:
    """Occurrences of an enum field's allowed values; the value is the canonical spelling."""
    for value, regex in _enum_regex(tuple(spec.values)):
        for m in regex.finditer(text):
            yield Candidate(m.start(), m.end(), value, 0.9)
