"""Phone numbers, validated by Google's libphonenumber (`phonenumbers`), written as E.164.

Numbers with a country code (+49 ..., 0044 ...) are read as such; national ones are tried
against the configured regions of the message's language (all configured regions when
none matches) and kept for the first region where they are valid. A bare run of digits
without a separator or a cue word ("phone", "Tel.") is left alone: it is more often an
order, tracking or account number.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from mailbot.fields.patterns import Candidate

_CUE = re.compile(
    r"(?i)(?:phone|tel|telephone|call|mobile|cell|whatsapp|fax|reach me|ring me|number"
    r"|telefon|handy|rufnummer|téléphone|portable|teléfono|móvil|telefono|cellulare"
    r"|telefoon|mobiel|telemóvel)\W{0,12}$"
)


# A national number is first tried in the regions where the message's language is spoken.
_LANGUAGE_REGIONS = {
    "de": ("DE", "AT", "CH"), "fr": ("FR", "BE", "CH"), "es": ("ES",), "it": ("IT", "CH"),
    "nl": ("NL", "BE"), "pt": ("PT", "BR"), "en": ("US", "GB", "IE"),
}  # fmt: skip


def find_phones(
    text: str, regions: tuple[str, ...], language: str | None = None
) -> Iterator[Candidate]:
    """Valid phone numbers as E.164 strings ("+4930901820")."""
    import phonenumbers  # type: ignore[import-untyped]

    regions = regions or ("US",)
    # A national number is read only in the regions of the message's language when any of
    # them is configured: an English email's "0341 1234567" is not a German number.
    preferred = [r for r in _LANGUAGE_REGIONS.get(language or "", ()) if r in regions]
    seen: set[tuple[int, int]] = set()
    for region in preferred or regions:
        matcher = phonenumbers.PhoneNumberMatcher(
            text, region, leniency=phonenumbers.Leniency.VALID
        )
        for match in matcher:
            span = (match.start, match.end)
            if any(_overlaps(span, other) for other in seen):
                continue  # an earlier region already read these digits
            raw = match.raw_string
            international = raw.startswith(("+", "00"))
            cued = _CUE.search(text, max(0, match.start - 30), match.start) is not None
            separated = re.search(r"[\s().-]", raw) is not None
            if not (international or cued or separated):
                continue
            if text[max(0, match.start - 1) : match.start].isalnum():
                continue  # the tail of a longer token such as "RT4471190235"
            seen.add(span)
            value = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
            confidence = 0.95 if international or cued else 0.85
            yield Candidate(match.start, match.end, value, confidence)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]
