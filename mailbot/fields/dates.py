"""Dates: ISO and numeric ("2026-03-07", "07/03/2026"), written out in several languages
("24 February", "March 2, 2024", "7. März", "5 de marzo"), and relative ("yesterday",
"vor 3 Tagen", "last Monday"), resolved against the email's Date header.

Candidates are found by our own patterns so that every value has an exact span and no
stray word ("may", "now") becomes a date; `dateparser` resolves the relative expressions
in the configured languages. A written date without a year takes the year that puts it
closest to the reference date (in January, "20 December" is last December).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import date, datetime, timedelta
from functools import lru_cache

from mailbot.fields.patterns import Candidate

_MONTHS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "january jan januar jänner janvier janv enero ene gennaio januari janeiro",
        "february feb februar février fevrier févr fév febrero febbraio februari fevereiro fev",
        "march mar märz maerz mär mrz mars marzo maart mrt março",
        "april apr avril avr abril aprile",
        "may mai mayo maggio mei maio",
        "june jun juni juin junio giugno junho",
        "july jul juli juillet juil julio luglio julho",
        "august aug août aout agosto augustus",
        "september sep sept septembre septiembre setiembre settembre setembro",
        "october oct oktober okt octobre octubre ottobre ott outubro",
        "november nov novembre noviembre novembro",
        "december dec dezember dez décembre decembre déc diciembre dic dicembre dezembro",
    ),
    start=1,
):
    for _name in _names.split():
        _MONTHS.setdefault(_name, _number)

_WEEKDAYS: dict[str, int] = {}
for _number, _names in enumerate(
    (
        "monday montag lundi lunes lunedì lunedi maandag segunda",
        "tuesday dienstag mardi martes martedì martedi dinsdag terça terca",
        "wednesday mittwoch mercredi miércoles miercoles mercoledì mercoledi woensdag quarta",
        "thursday donnerstag jeudi jueves giovedì giovedi donderdag quinta",
        "friday freitag vendredi viernes venerdì venerdi vrijdag sexta",
        "saturday samstag sonnabend samedi sábado sabado sabato zaterdag",
        "sunday sonntag dimanche domingo domenica zondag",
    )
):
    for _name in _names.split():
        _WEEKDAYS[_name] = _number

_MONTH = "|".join(sorted(_MONTHS, key=len, reverse=True))
_WEEKDAY = "|".join(sorted(_WEEKDAYS, key=len, reverse=True))
_YEAR = r"(?:19|20)\d{2}"

_ISO = re.compile(
    rf"(?<![\w.-])(?P<y>{_YEAR})(?P<s>[-/])(?P<m>\d{{1,2}})(?P=s)(?P<d>\d{{1,2}})(?![\w-]|[.,]\d)"
)
_NUMERIC = re.compile(
    r"(?<![\w./-])(?P<a>\d{1,2})(?P<s>[./-])(?P<b>\d{1,2})(?P=s)(?P<y>\d{4}|\d{2})(?![\w/-]|[.,]\d)"
)
_DAY_MONTH = re.compile(
    rf"(?<![\w.,])(?P<d>\d{{1,2}})(?:st|nd|rd|th|er|\.|º)?[ \t\u00a0]*(?:of[ \t]+|de[ \t]+)?"
    # An abbreviation's full stop is part of the date only before a year: in "on 12 March."
    # it ends the sentence.
    rf"(?i:(?P<m>{_MONTH}))(?:\.?,?[ \t\u00a0]+(?:de[ \t]+)?(?P<y>{_YEAR}))?(?![\w-])"
)
_MONTH_DAY = re.compile(
    rf"(?<![\w-])(?i:(?P<m>{_MONTH}))\.?[ \t\u00a0]+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?"
    rf"(?:,?[ \t\u00a0]+(?P<y>{_YEAR}))?(?![\w.,]\d|\w)"
)
_LAST_WEEKDAY = re.compile(
    rf"(?i)(?<![\w-])(?:(?:last|past|previous|letzten|letzter|vergangenen|afgelopen|"
    rf"vorigen|scorso)[ \t]+(?P<w1>{_WEEKDAY})|(?:el[ \t]+)?(?P<w2>{_WEEKDAY})[ \t]+"
    rf"(?:dernier|pasado|scorso|passado))(?![\w-])"
)

# Relative words per language; only the message's language (and English) are used, since
# "hier" is "yesterday" in French but "here" in German and Dutch.
_RELATIVE = {
    "en": r"today|yesterday|tomorrow|the day before yesterday|the day after tomorrow"
    r"|\d{1,2} (?:days?|weeks?) ago|(?:a|one|two|three) (?:days?|weeks?) ago",
    "de": r"heute|gestern|vorgestern|übermorgen|(?<!guten )(?<!Guten )morgen"
    r"|vor \d{1,2} (?:Tagen|Wochen)|vor (?:einem Tag|einer Woche|zwei Tagen|drei Tagen)",
    "fr": r"aujourd'hui|aujourd’hui|avant-hier|hier|demain|il y a \d{1,2} (?:jours|semaines)",
    "es": r"hoy|ayer|anteayer|antier|(?<!la )(?<!esta )mañana|hace \d{1,2} (?:días|semanas)",
    "it": r"oggi|ieri|domani|l'altro ieri|\d{1,2} (?:giorni|settimane) fa",
    "nl": r"vandaag|gisteren|eergisteren|(?<!goede)morgen|\d{1,2} (?:dagen|weken) geleden",
    "pt": r"hoje|ontem|anteontem|amanhã|há \d{1,2} (?:dias|semanas)",
}
_LANGUAGE_MARKERS = {
    "en": " i and the to of is it my for you was not with have this that but on please ",
    "de": " ich und nicht ist die der das mein meine bitte habe sie wir ein eine mit von ",
    "fr": " je et pas est les une mon ma mes vous nous avec pour le la des du mais ",
    "es": " yo el los las una mi mis por para con pero está es que del muy ",
    "it": " io il non è una mio mia per con sono gli ho ma che della ",
    "nl": " ik het niet een mijn van met voor zijn maar de is ",
    "pt": " eu não uma meu minha com para por mas você que os ",
}


def guess_language(text: str, languages: tuple[str, ...]) -> str:
    """The configured language (or English) whose common words occur most in `text`."""
    words = re.findall(r"[^\W\d_]+", text.lower())
    counts = {
        lang: sum(1 for w in words if f" {w} " in _LANGUAGE_MARKERS[lang])
        for lang in ("en", *languages)
        if lang in _LANGUAGE_MARKERS
    }
    best = max(counts, key=lambda lang: (counts[lang], lang == "en"))
    return best if counts[best] >= 2 else "en"


@lru_cache(maxsize=32)
def _relative_regex(language: str) -> re.Pattern[str]:
    body = _RELATIVE["en"] if language == "en" else f"{_RELATIVE['en']}|{_RELATIVE[language]}"
    return re.compile(rf"(?<![\w'’-])(?i:{body})(?![\w'’-])")


def _closest_year(month: int, day: int, reference: date) -> date | None:
    options = []
    for year in (reference.year - 1, reference.year, reference.year + 1):
        try:
            options.append(date(year, month, day))
        except ValueError:
            continue
    return min(options, key=lambda d: abs(d - reference)) if options else None


def _make(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _numeric(a: int, b: int, year: int, order: str) -> tuple[date | None, float]:
    if a > 12 or (order == "DMY" and b <= 12):
        return _make(year, b, a), 0.93 if a > 12 or a == b else 0.8
    return _make(year, a, b), 0.93 if b > 12 or a == b else 0.8


def find_dates(
    text: str,
    reference: datetime,
    *,
    date_order: str = "DMY",
    languages: tuple[str, ...] = (),
    language: str | None = None,
) -> Iterator[Candidate]:
    """Dates in `text` as ISO strings; relative ones are resolved against `reference`.

    Relative words are read in `language` (guessed from `languages` when None) and English.
    """
    ref = reference.date()
    for m in _ISO.finditer(text):
        found = _make(int(m["y"]), int(m["m"]), int(m["d"]))
        yield _candidate(m, found, 0.97)
    for m in _NUMERIC.finditer(text):
        year = int(m["y"]) if len(m["y"]) == 4 else 2000 + int(m["y"])
        if m["s"] != "/" and len(m["y"]) == 2:
            continue  # "1.2.24" or "12-03-24" is as often a version or phone as a date
        found, confidence = _numeric(int(m["a"]), int(m["b"]), year, date_order)
        yield _candidate(m, found, confidence)
    for regex in (_DAY_MONTH, _MONTH_DAY):
        for m in regex.finditer(text):
            month = _MONTHS[m["m"].lower()]
            if m["m"].lower() == "may" and m["m"] != "May" and not m["y"]:
                continue  # the verb "may"
            if m["y"]:
                yield _candidate(m, _make(int(m["y"]), month, int(m["d"])), 0.96)
            else:
                yield _candidate(m, _closest_year(month, int(m["d"]), ref), 0.92)
    for m in _LAST_WEEKDAY.finditer(text):
        weekday = _WEEKDAYS[(m["w1"] or m["w2"]).lower()]
        back = (ref.weekday() - weekday) % 7 or 7
        yield Candidate(m.start(), m.end(), (ref - timedelta(days=back)).isoformat(), 0.85)
    if language is None:
        language = guess_language(text, languages) if languages else "en"
    for m in _relative_regex(language).finditer(text):
        resolved = _resolve_relative(m.group(), language, reference)
        if resolved is not None:
            yield Candidate(m.start(), m.end(), resolved.isoformat(), 0.85)


def _candidate(m: re.Match[str], found: date | None, confidence: float) -> Candidate:
    if found is None:
        return Candidate(m.start(), m.end(), m.group(), confidence, "no such calendar date")
    return Candidate(m.start(), m.end(), found.isoformat(), confidence)


def _resolve_relative(phrase: str, language: str, reference: datetime) -> date | None:
    import dateparser  # type: ignore[import-untyped]

    settings = {"RELATIVE_BASE": reference.replace(tzinfo=None), "PREFER_DATES_FROM": "past"}
    languages = [language] if language == "en" else [language, "en"]
    parsed = dateparser.parse(phrase, languages=languages, settings=settings)
    return parsed.date() if parsed is not None else None
