"""Check-digit schemes: Luhn (cards, many order numbers), mod-11, and ISO 13616 mod-97 (IBAN).

Each check takes the value as written and returns None when it passes, or a short reason
when it fails; the reason ends up in `Extraction.rejected`.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal

CheckScheme = Literal["none", "luhn", "mod11", "mod97"]

_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")

# IBAN lengths per country (ISO 13616 registry); a country missing here is checked by
# mod-97 and the general 15..34 length only.
IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22,
    "BH": 22, "BR": 29, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18,
    "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22,
    "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LI": 21,
    "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22, "MK": 19, "MR": 27,
    "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29, "PT": 25,
    "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def digits_of(value: str) -> str:
    """The decimal digits of `value`, in order (separators and letters dropped)."""
    return "".join(ch for ch in value if ch.isdigit())


def luhn_ok(digits: str) -> bool:
    """True when the digit string passes the Luhn (mod-10) check."""
    if not digits or not digits.isdigit():
        return False
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def mod11_ok(value: str) -> bool:
    """True when the last character is the mod-11 check digit of the digits before it.

    Weights 2..7 repeat from the rightmost data digit; check = (11 - sum mod 11) mod 11,
    and a check value of 10 is written as X.
    """
    chars = _NON_ALNUM.sub("", value).upper()
    if len(chars) < 2:
        return False
    body, check = digits_of(chars[:-1]), chars[-1]
    if not body:
        return False
    total = sum(int(d) * (2 + i % 6) for i, d in enumerate(reversed(body)))
    expected = (11 - total % 11) % 11
    return check == ("X" if expected == 10 else str(expected))


def iban_problem(value: str) -> str | None:
    """Why `value` is not a valid IBAN (country, length, mod-97), or None when it is."""
    iban = _NON_ALNUM.sub("", value).upper()
    country = iban[:2]
    if not re.fullmatch(r"[A-Z]{2}\d{2}[A-Z0-9]{11,30}", iban):
        return "not shaped like an IBAN"
    expected = IBAN_LENGTHS.get(country)
    if expected is not None and len(iban) != expected:
        return f"an IBAN from {country} has {expected} characters, not {len(iban)}"
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    if int(number) % 97 != 1:
        return "IBAN check digits (mod-97) do not match"
    return None


def _luhn_problem(value: str) -> str | None:
    return None if luhn_ok(digits_of(value)) else "Luhn check digit does not match"


def _mod11_problem(value: str) -> str | None:
    return None if mod11_ok(value) else "mod-11 check digit does not match"


def _mod97_problem(value: str) -> str | None:
    if re.match(r"^[A-Za-z]{2}\d{2}", _NON_ALNUM.sub("", value)):
        return iban_problem(value)
    digits = digits_of(value)
    # Numeric references (e.g. ISO 7064 MOD 97-10 payment references): whole number mod 97 == 1.
    if not digits or int(digits) % 97 != 1:
        return "mod-97 check does not match"
    return None


_CHECKS: dict[str, Callable[[str], str | None]] = {
    "none": lambda _value: None,
    "luhn": _luhn_problem,
    "mod11": _mod11_problem,
    "mod97": _mod97_problem,
}


def check_problem(scheme: str, value: str) -> str | None:
    """Run check `scheme` on `value`: None when it passes, else why it failed."""
    return _CHECKS[scheme](value)
