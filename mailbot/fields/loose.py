"""Recall-first recognisers for redaction: IBANs, cards and email addresses however written.

Extraction wants precision: an IBAN must be written as banks print it, a card grouped as
cards are printed. Before text goes to a cloud model, recall matters more: a lower-case
IBAN, one grouped irregularly or with dashes ("de89-3704-0044-0532-0130-00"), a card
number with dots or uneven groups, an address written "anna (at) example (dot) de" are
still somebody's. These run besides the strict recognisers when a schema is `thorough`;
what they add is only ever redacted, never taken as a field value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailbot.fields.checks import IBAN_LENGTHS, digits_of, iban_problem, luhn_ok
from mailbot.fields.masking import mask_card
from mailbot.fields.patterns import Candidate

_IBAN_START = re.compile(r"(?<![A-Za-z0-9])([A-Za-z]{2})[ .\-]?(\d{2})")
_SEPARATOR = " .-\u00a0"


def find_ibans_loosely(text: str) -> Iterator[Candidate]:
    """IBAN-shaped strings of a known country's length, any case, any single separators.

    One or two characters too many or too few (a typo) still count, as rejected values.
    """
    for m in _IBAN_START.finditer(text):
        country = m.group(1).upper()
        expected = IBAN_LENGTHS.get(country)
        if expected is None:
            continue
        end, read = _read_alnum(text, m.end(), expected - 4)
        if read < expected - 6:
            continue
        raw = text[m.start() : end]
        body = re.sub(r"[^0-9A-Za-z]", "", raw)[4:]
        if sum(ch.isdigit() for ch in body) * 5 < len(body) * 3:
            continue  # mostly letters: a word that happens to follow "EN12"
        compact = re.sub(r"[^0-9A-Za-z]", "", raw).upper()
        yield Candidate(m.start(), end, compact, 0.9, iban_problem(raw))


def _read_alnum(text: str, pos: int, count: int) -> tuple[int, int]:
    """Where `count` letters and digits from `pos` end (single separators between them),
    continuing to the end of the group when it goes on; and how many were read."""
    read = 0
    while pos < len(text):
        step = pos + 1 if text[pos] in _SEPARATOR else pos
        if step >= len(text) or not (text[step].isascii() and text[step].isalnum()):
            break
        if step != pos and (read >= count or (read >= 4 and _word_at(text, step))):
            break  # the IBAN is complete, or a word follows it ("... 0130 0 ok")
        pos = step + 1
        read += 1
    return pos, read


def _word_at(text: str, pos: int) -> bool:
    match = re.match(r"[A-Za-z]+(?![A-Za-z0-9])", text[pos:])
    return match is not None


# Groups of digits as people type card numbers: a first group of 4 to 6 digits, then
# groups of 3 to 6 (the last may be shorter), split by spaces, dots or dashes. Two-digit
# groups in the middle would be dates ("2026-03-07") and are not taken.
_CARD_LOOSE = re.compile(
    r"(?<![\d+\-./])(?P<body>[2-6]\d{3,7}(?:[ .\-\u00a0]{1,2}\d{3,8}){1,4})"
    r"(?:[ .\-\u00a0]{1,2}\d{1,2})?(?!\d)"
)


def find_cards_loosely(text: str) -> Iterator[Candidate]:
    """Card numbers grouped any way (13-19 digits); a failing Luhn digit is still a card."""
    for m in _CARD_LOOSE.finditer(text):
        # "4242 4242 4242 4242 12/27": the short group may be the expiry month.
        ends = [m.end(), m.end("body")] if m.end() != m.end("body") else [m.end()]
        readings = [(end, digits_of(text[m.start() : end])) for end in ends]
        readings = [(end, d) for end, d in readings if 13 <= len(d) <= 19]
        if not readings:
            continue
        end, digits = next(((e, d) for e, d in readings if luhn_ok(d)), readings[0])
        problem = None if luhn_ok(digits) else "Luhn check digit does not match"
        yield Candidate(m.start(), end, mask_card(digits), 0.8, problem)


_AT = r"(?:\s*@\s*|\s*[(\[{<]\s*(?:at|ät|arobase|arroba|chiocciola)\s*[)\]}>]\s*)"
_DOT = r"(?:\.|\s*[(\[{<]\s*(?:dot|punkt|point|punto|ponto|punt)\s*[)\]}>]\s*)"
_WORD_AT = r"\s+(?:at|ät)\s+"
_WORD_DOT = r"\s+(?:dot|punkt|point|punto|ponto|punt)\s+"
_LOCAL = r"[A-Za-z0-9][A-Za-z0-9._%+-]{0,63}"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_EMAIL_LOOSE = re.compile(
    rf"(?<![\w.+-])(?:{_LOCAL}{_AT}{_LABEL}(?:{_DOT}{_LABEL}){{0,6}}{_DOT}[A-Za-z]{{2,24}}"
    rf"|(?i:{_LOCAL}{_WORD_AT}{_LABEL}(?:{_WORD_DOT}{_LABEL}){{0,4}}{_WORD_DOT}[a-z]{{2,6}}))"
    r"(?![\w-])"
)


def find_emails_loosely(text: str) -> Iterator[Candidate]:
    """Addresses written around spam filters: "anna (at) example (dot) de", "a @ b.de"."""
    for m in _EMAIL_LOOSE.finditer(text):
        yield Candidate(m.start(), m.end(), " ".join(m.group().split()), 0.8)
