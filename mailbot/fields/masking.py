"""Masking of payment data in what is stored or printed: card numbers and IBANs.

A value that failed validation (a card number with a wrong Luhn digit, an IBAN with a typo)
is still most likely somebody's card or account, so it is never written out in full: the
audit log keeps enough for an agent to recognise it (the last four characters, and an
IBAN's country) and nothing that would let anyone use it.
"""

from __future__ import annotations

import re

# 13 to 19 digits (the ISO/IEC 7812 lengths), contiguous or split by single spaces, dots
# or dashes, as people write cards ("4242 4242 4242 4241", "3782-822463-10005").
# No card number starts with 0, and none with "+": "+49 171 2345 6789" is a phone.
_CARD_LIKE = re.compile(r"(?<![\d+])[1-9](?:[ .\-\u00a0]?\d){12,18}(?!\d)")
# Two letters, two digits and 11 to 30 letters or digits, grouped or not ("DE89 3704 ...").
_IBAN_LIKE = re.compile(
    r"(?<![A-Za-z0-9])[A-Za-z]{2}[ \-]?\d{2}(?:[ \-]?[A-Za-z0-9]){11,30}(?![A-Za-z0-9])"
)


def mask_card(digits: str) -> str:
    """A card number as it may be shown and stored: only the last four digits."""
    digits = "".join(ch for ch in digits if ch.isdigit())
    return f"**** {digits[-4:]}"


def mask_iban(value: str) -> str:
    """An IBAN as it may be shown and stored: its country and last four characters."""
    compact = re.sub(r"[^0-9A-Za-z]", "", value).upper()
    return f"{compact[:2]}** **** {compact[-4:]}"


def _iban_shaped(match: re.Match[str]) -> bool:
    compact = re.sub(r"[^0-9A-Za-z]", "", match.group())
    # An IBAN's body always has digits; "EN12 ABCDEFGHIJKLM" prose does not.
    return sum(ch.isdigit() for ch in compact[4:]) >= 6


def mask_payment_data(text: str) -> str:
    """`text` with every card-like number and IBAN-like string masked (last four kept)."""
    if not any(ch.isdigit() for ch in text):
        return text
    text = _IBAN_LIKE.sub(lambda m: mask_iban(m.group()) if _iban_shaped(m) else m.group(), text)
    return _CARD_LIKE.sub(lambda m: mask_card(m.group()), text)
