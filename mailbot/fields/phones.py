"""Phone numbers, validated by Google's libphonenumber (`phonenumbers`), written as E.164.

Numbers with a country code (+49 ..., 0049 ..., +49 (0)30 ...) are read as such. A national
number ("030 12345678") is read in the regions of the cue word before it ("Handy" is
German), then in the configured `fields.phone_regions` where the message's language is
spoken, then in the other configured regions, then in the language's regions that are not
configured. The other configured regions count only when the number has a cue word or
none of the language's regions is configured, since an English email's "0341 1234567" is
not a German number. A bare run of digits without a separator or a cue word ("phone", "Tel.") is
left alone: it is more often an order, tracking or account number.

With `thorough` (redaction before a cloud call) recall comes first: every region of every
configured language is tried, a bare national number with its trunk 0 counts, and a number
shaped like a phone after a phone word, or after +CC / 00CC, counts even when
libphonenumber does not know the range (a new or made-up number is still somebody's).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from mailbot.fields.patterns import Candidate

# A national number is first tried in the regions where the message's language is spoken.
_LANGUAGE_REGIONS = {
    "de": ("DE", "AT", "CH"), "fr": ("FR", "BE", "CH"), "es": ("ES",), "it": ("IT", "CH"),
    "nl": ("NL", "BE"), "pt": ("PT", "BR"), "en": ("US", "GB", "IE"),
}  # fmt: skip

# Words that introduce a phone number, and the languages they belong to ("" = several).
_PHONE_WORDS = {
    "": "tel|tel no|tel nr|fax|mobile|mob|cell|gsm|whatsapp|sms|celular|telefono",
    "en": "phone|phone number|telephone|call|call me|call me on|call me at|cell phone"
    "|cellphone|mobile number|reach me|reach me on|reach me at|ring me|ring me on|landline",
    "de": "telefon|telefonnummer|handy|handynummer|mobil|mobilnummer|mobiltelefon|rufnummer"
    "|festnetz|natel|erreichbar|erreichbar unter|unter der nummer|rückruf|rückruf unter"
    "|anrufen|tel.-nr",
    "fr": "téléphone|tél|portable|fixe|joignable|joignable au|appelez-moi|appelez-moi au",
    "es": "teléfono|tlf|tfno|telf|móvil|movil|llámame|llámame al|llamar al",
    "it": "cellulare|telefono fisso|chiamatemi|chiamami|chiamatemi al|chiamami al",
    "nl": "telefoon|telefoonnummer|mobiel|mobiel nummer|bel me|bel me op|bereikbaar op",
    "pt": "telefone|telemóvel|telemovel|telm|tlm|ligue-me|ligue para|contacto telefónico",
}
# Generic words that also introduce ids: cues for numbers libphonenumber validates, never
# for the shape-only fallback.
_NUMBER_WORDS = ("number", "nummer", "numéro", "número", "numero")
_WORD_LANGUAGE = {
    word: lang for lang, words in _PHONE_WORDS.items() for word in words.split("|")
}


def _words_regex(words: Iterable[str]) -> str:
    ordered = sorted(words, key=len, reverse=True)
    return "|".join(re.escape(w).replace(r"\ ", r"\s+") for w in ordered)


_CUE_WORDS = _words_regex([*_WORD_LANGUAGE, *_NUMBER_WORDS])
# The cue word ends at most a few non-word characters before the number ("Tel.: ").
_CUE = re.compile(rf"(?<![^\W\d_])(?P<w>(?i:{_CUE_WORDS}))(?![^\W\d_])[\W_]{{0,12}}\Z")
_ANY_CUE = re.compile(rf"(?<![^\W\d_])(?i:{_CUE_WORDS})(?![^\W\d_])")
# A phone number's shape, for numbers libphonenumber does not know: an optional +CC or
# 00CC, an optional (0) trunk, an optional (area code), then groups of digits.
_PHONE_SHAPE = re.compile(
    r"(?<![\w+/.,-])(?P<intl>(?:\+|00)[1-9]\d{0,2}[ .\-/]*)?(?:\(0\)[ .\-/]*)?"
    r"(?:\(\d{1,5}\)[ .\-/]*)?\d{1,6}(?:(?:[ .\-]|[ ]?/[ ]?)\d{1,6}){0,6}(?![\w,]|\.\d)"
)


# Dates and times are never phone numbers, however valid their digits ("07.03.2026").
_DATE_SHAPED = re.compile(
    r"\d{1,2}([./-])\d{1,2}\1(?:\d{4}|\d{2})|\d{4}([./-])\d{1,2}\2\d{1,2}|\d{1,2}[.:]\d{2}"
)


@dataclass(frozen=True, slots=True)
class _Reading:
    start: int
    end: int
    value: str
    rank: int  # lower is preferred: international, the cue's region, configured, spoken
    confidence: float


def find_phones(
    text: str,
    regions: tuple[str, ...],
    language: str | None = None,
    *,
    thorough: bool = False,
    languages: tuple[str, ...] = (),
) -> Iterator[Candidate]:
    """Valid phone numbers as E.164 strings ("+4930901820"); see the module for regions."""
    import phonenumbers  # type: ignore[import-untyped]

    configured = tuple(regions) or ("US",)
    spoken = _LANGUAGE_REGIONS.get(language or "", ())
    cues = [" ".join(m.group().lower().split()) for m in _ANY_CUE.finditer(text)]
    # Regions of the languages of the cue words present ("Handy" in a short English-looking
    # message) come first, with the configured regions where the language is spoken.
    hinted = [r for w in cues for r in _LANGUAGE_REGIONS.get(_WORD_LANGUAGE.get(w, ""), ())]
    context = _Context(text, configured, spoken, thorough)
    tiers = [
        _unique([*hinted, *(r for r in spoken if r in configured)]),
        [r for r in configured if r not in spoken and r not in hinted],
        [r for r in spoken if r not in configured and r not in hinted],
    ]
    if thorough:
        tiers.append([r for lang in languages for r in _LANGUAGE_REGIONS.get(lang, ())])
    readings: list[_Reading] = []
    for window in _windows(text):
        # Tiers follow the ranks: once one reads the window, later ones cannot do better
        # (libphonenumber's parsing, once per region, is what costs the time).
        seen: set[str] = set()
        for tier in tiers:
            found = []
            for region in tier:
                if region in seen or not context.worth(region, window):
                    continue
                seen.add(region)
                found += context.match(phonenumbers, region, window)
            if found:
                readings += found
                break
    if thorough:
        readings.extend(_shaped(text))
    chosen: list[_Reading] = []
    for reading in sorted(readings, key=lambda r: (r.rank, r.start - r.end, r.start)):
        # Thorough: every reading, overlaps too; redaction replaces their union, so that
        # "+32 (0)2 123 45 67" goes whole even where only "(0)2 123 45 67" is valid.
        if thorough or not any(reading.start < c.end and c.start < reading.end for c in chosen):
            chosen.append(reading)
    for reading in sorted(chosen, key=lambda r: r.start):
        yield Candidate(reading.start, reading.end, reading.value, reading.confidence)


class _Context:
    """What deciding on one libphonenumber match needs to know about the text and regions."""

    def __init__(
        self, text: str, configured: tuple[str, ...], spoken: tuple[str, ...], thorough: bool
    ) -> None:
        self.text = text
        self.configured = configured
        self.spoken = spoken
        self.thorough = thorough
        # The old rule: with none of the language's regions configured, any configured one.
        self.any_configured = not any(r in configured for r in spoken)

    def worth(self, region: str, window: tuple[int, int, int]) -> bool:
        """Whether a reading in `region` could be kept for the number in `window`."""
        if self.thorough or self.any_configured or region in self.spoken:
            return True
        # Other regions read only cued numbers (or ones with +CC / 00CC, read anywhere).
        run = window[1]
        return self.text.startswith(("+", "00"), run) or _cue_before(self.text, run) is not None

    def match(self, phonenumbers: Any, region: str, window: tuple[int, int, int]) -> list[
        _Reading
    ]:
        """libphonenumber's valid matches in `window`, read in `region` and ranked."""
        start, _run, end = window
        matcher = phonenumbers.PhoneNumberMatcher(
            self.text[start:end], region, leniency=phonenumbers.Leniency.VALID
        )
        readings = (self.read(match, region, start) for match in matcher)
        return [r for r in readings if r is not None]

    def read(self, match: Any, region: str, offset: int) -> _Reading | None:
        """A match of libphonenumber in the window at `offset`, ranked, or None."""
        import phonenumbers

        text, raw = self.text, match.raw_string
        begin, finish = match.start + offset, match.end + offset
        if text[max(0, begin - 1) : begin].isalnum():
            return None  # the tail of a longer token such as "RT4471190235"
        if _DATE_SHAPED.fullmatch(raw):
            return None
        international = raw.startswith(("+", "00"))
        cue = _cue_before(text, begin)
        separated = re.search(r"[\s().\-/]", raw) is not None
        bare_national = self.thorough and raw.startswith("0") and not raw.startswith("00")
        if not (international or cue is not None or separated or bare_national):
            return None
        rank = self._rank(region, international, cue)
        if rank is None:
            return None
        value = phonenumbers.format_number(match.number, phonenumbers.PhoneNumberFormat.E164)
        confidence = 0.95 if international or cue is not None else 0.85
        return _Reading(begin, finish, value, rank, confidence)

    def _rank(self, region: str, international: bool, cue: str | None) -> int | None:
        if international:
            return 0
        cue_language = _WORD_LANGUAGE.get(cue.lower()) if cue else None
        if cue_language and region in _LANGUAGE_REGIONS.get(cue_language, ()):
            return 1
        configured = region in self.configured
        if configured and region in self.spoken:
            return 2
        if configured and (cue is not None or self.thorough or self.any_configured):
            return 3
        if region in self.spoken:
            return 4  # the language's region, though not one the shop configured
        return 5 if self.thorough else None


# Where libphonenumber may find something: runs of digits with the characters phone
# numbers are written with. Matching only these windows (and two characters around them,
# which the matcher looks at) instead of the whole text keeps a long email fast when many
# regions are tried.
_DIGIT_RUN = re.compile(r"[+(]*\d(?:[\d \t\u00a0().\-/]*\d)?\)?")


def _windows(text: str) -> list[tuple[int, int, int]]:
    """(window start, where its digits start, window end) of each stretch worth matching."""
    out: list[tuple[int, int, int]] = []
    for m in _DIGIT_RUN.finditer(text):
        # No valid number of the regions read has fewer than six digits; a date is none.
        if sum(ch.isdigit() for ch in m.group()) < 6 or _DATE_SHAPED.fullmatch(m.group()):
            continue
        start, end = max(0, m.start() - 2), min(len(text), m.end() + 2)
        if out and start <= out[-1][2]:
            out[-1] = (out[-1][0], out[-1][1], end)
        else:
            out.append((start, m.start(), end))
    return out


def _cue_before(text: str, start: int) -> str | None:
    """The cue word ending just before `start` ("Tel.: " -> "Tel"), or None."""
    match = _CUE.search(text, max(0, start - 40), start)
    return " ".join(match.group("w").split()) if match else None


def _shaped(text: str) -> Iterator[_Reading]:
    """Phone-shaped numbers after a phone word or +CC / 00CC, valid or not (thorough only)."""
    for match in _PHONE_SHAPE.finditer(text):
        if _DATE_SHAPED.fullmatch(match.group()):
            continue
        digits = re.sub(r"\D", "", match.group())
        cue = _cue_before(text, match.start())
        phone_word = cue is not None and cue.lower() in _WORD_LANGUAGE
        if match.group("intl") and 8 <= len(digits) <= 17:
            value = "+" + (digits[2:] if match.group().startswith("00") else digits)
        elif phone_word and 6 <= len(digits) <= 15:
            value = digits
        else:
            continue
        yield _Reading(match.start(), match.end(), value, 6, 0.7)


def _unique(items: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(items))
