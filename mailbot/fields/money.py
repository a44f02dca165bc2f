"""Money amounts with a currency: "€1.234,50", "$64.00", "142,50 EUR", "£20", "CHF 35.-".

An amount is only taken with a currency next to it (symbol, ISO code or word): a bare
number is too often a quantity, a size or a house number. The number is read by
`price-parser`, which decides between decimal comma and point the way people write them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from decimal import Decimal, InvalidOperation

from mailbot.fields.patterns import Candidate

# Longest first so that "US$" wins over "$".
_SYMBOLS = {
    "US$": "USD", "U$S": "USD", "CA$": "CAD", "C$": "CAD", "AU$": "AUD", "A$": "AUD",
    "NZ$": "NZD", "HK$": "HKD", "S$": "SGD", "R$": "BRL", "MX$": "MXN", "€": "EUR",
    "$": "USD", "£": "GBP", "¥": "JPY", "₹": "INR", "₽": "RUB", "₺": "TRY", "₩": "KRW",
    "₪": "ILS", "zł": "PLN", "Kč": "CZK", "Fr.": "CHF", "SFr.": "CHF", "fr.": "CHF",
}  # fmt: skip
_CODES = (  # noqa: SIM905
    "EUR USD GBP CHF JPY CAD AUD NZD SEK NOK DKK PLN CZK HUF RON BGN INR BRL MXN CNY HKD SGD "
    "ZAR TRY RUB ILS KRW AED SAR"
).split()
_WORDS = {
    "euro": "EUR", "euros": "EUR", "eur": "EUR", "dollar": "USD", "dollars": "USD",
    "usd": "USD", "pound": "GBP", "pounds": "GBP", "quid": "GBP", "franken": "CHF",
    "francs": "CHF", "chf": "CHF", "kronor": "SEK", "kroner": "NOK",
}  # fmt: skip
_NO_CENTS = {"JPY", "KRW", "HUF"}

_SYM = "|".join(re.escape(s) for s in sorted(_SYMBOLS, key=len, reverse=True))
_CODE = "|".join(_CODES)
_WORD = "|".join(sorted(_WORDS, key=len, reverse=True))
# 1.234,50 / 1,234.50 / 1 234,50 / 1'234.50 / 1234.5 / 35.- / 35,–
_NUM = (
    r"\d{1,3}(?:[.,'\u2019 \u00a0\u202f]\d{3}){1,5}(?:[.,]\d{1,2})?(?:[.,][-\u2013\u2014])?"
    r"|\d{1,15}(?:[.,]\d{1,2})?(?:[.,][-\u2013\u2014])?"
)
_MONEY = re.compile(
    rf"(?<![\w.,])(?:(?P<c1>{_SYM}|(?<![A-Za-z])(?:{_CODE})(?![A-Za-z]))[ \t\u00a0]?"
    rf"(?P<n1>-?(?:{_NUM}))"
    rf"|(?P<n2>(?:{_NUM}))[ \t\u00a0]?"
    rf"(?P<c2>{_SYM}|(?:{_CODE})(?![A-Za-z])|(?i:{_WORD})(?![A-Za-z])))"
    r"(?![\d])"
)


def currency_code(token: str) -> str | None:
    """ISO 4217 code for a symbol, code or word as written ("€", "eur", "CHF", "Fr.")."""
    if token in _SYMBOLS:
        return _SYMBOLS[token]
    if token in _CODES:
        return token
    return _WORDS.get(token.lower())


def parse_amount(number: str, currency: str | None) -> str | None:
    """A decimal string with the currency's usual places ("142.50"), or None if unreadable."""
    from price_parser import parse_price  # type: ignore[import-untyped]

    cleaned = re.sub(r"[.,][-\u2013\u2014]$", "", number.strip())
    try:
        amount = parse_price(cleaned).amount
    except (InvalidOperation, ValueError):
        return None
    if amount is None:
        return None
    places = Decimal(1) if currency in _NO_CENTS else Decimal("0.01")
    return str(Decimal(amount).quantize(places))


def find_money(text: str) -> Iterator[Candidate]:
    """Amounts with a currency, as ("142.50", "EUR") pairs."""
    for m in _MONEY.finditer(text):
        token = m.group("c1") or m.group("c2")
        number = m.group("n1") or m.group("n2")
        code = currency_code(token)
        amount = parse_amount(number, code)
        if amount is None:
            continue
        # A bare "$" may be another dollar (CAD, AUD); the code is a guess, the amount is not.
        confidence = 0.95 if token == "$" else 0.97
        yield Candidate(m.start(), m.end(), (amount, code), confidence)
