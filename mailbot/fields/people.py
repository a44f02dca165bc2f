"""Personal names and postal addresses, found offline without a statistical model.

Names come from, in falling order of trust: the names in the From/To headers, greetings
("Hi Maria,"), sign-offs ("Regards,\\nTom Becker"), self-introductions ("my name is ...",
"ich heiße ..."), titles ("Frau Müller", "Mr. Smith"), and a list of common given names
followed by a capitalised surname. Every name found once is then found wherever else it
occurs. What this misses: a name that only appears mid-sentence without a title, a cue or
a listed given name ("please ask Okonkwo"), and names written in lower case.

Addresses: a street line ("Lindenstraße 12", "221B Baker Street", "12 rue de la Paix",
"Via Roma 10") with an optional postcode and town after it, or a postcode and town alone
on a line ("10969 Berlin").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

from mailbot.fields.firstnames import FIRST_NAMES
from mailbot.fields.patterns import Candidate

# Lengths are bounded so that no input ("A-A-A-..." for 100k characters) can make a
# pattern backtrack for long.
_WORD = re.compile(r"[^\W\d_]{1,40}(?:['’-][^\W\d_]{1,40}){0,3}")
_GAP = re.compile(r"[ \t]+")
_PARTICLES = frozenset("van von de der den da di du le la del dos das ter ten zu y".split())  # noqa: SIM905
# Capitalised words that start sentences, greet, sign off or name the company's side.
_NOT_NAMES = frozenset(
    """
    i i'm i've i'd i'll we you he she they it my your our their his her its me us them the
    a an this that these those there here hi hello hey dear hallo hola bonjour ciao thanks
    thank regards best kind warm many cheers sincerely yours team support customer service
    services care sales billing help desk helpdesk shop store order orders invoice refund
    please sir madam madame mister all everyone everybody folks guys friends colleagues
    sehr geehrte geehrter damen herren liebe lieber kundenservice kundendienst grüße gruß
    mit freundlichen viele beste señores estimados equipo servicio cliente atentamente
    saludos merci cordialement monsieur mesdames messieurs service client gentile cortese
    signori buongiorno geachte heer mevrouw klantenservice monday tuesday wednesday
    thursday friday saturday sunday january february march april may june july august
    september october november december today yesterday tomorrow sent from subject to cc
    re fwd fw ok okay yes no not unfortunately also again still just so then now when
    where what why how if but and or as on in at for with by of regarding hope good
    morning afternoon evening night tag guten morgen abend dank danke vielen gracias
    grazie obrigado obrigada met vriendelijke groet groeten grüsse gruss
    mr mrs ms miss mx dr prof herr frau mme mlle señor señora sr sra srta signor signora
    sig dhr mevr meneer
    """.split()  # noqa: SIM905
)
_TITLES = (
    r"Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Herr|Frau|Monsieur|Madame|Mme|Mlle|M\.|Señor|Señora|Sr|Sra"
    r"|Srta|Signor|Signora|Sig|Sig\.ra|Dhr|Mevr|Mevrouw|Meneer|Don|Doña"
)
_TITLE = re.compile(rf"(?<![\w.])(?:(?:{_TITLES})\.?[ \t]+)+")
_GREETING = re.compile(
    r"(?im)^[ \t]*(?:hi|hello|hey|dear|hallo|hola|bonjour|salut|ciao|buongiorno|liebe|lieber"
    r"|beste|querida|querido|estimada|estimado|gentile|caro|cara|good morning"
    r"|good afternoon|good evening|guten tag|guten morgen|moin|hej|olá|ola|buenos días"
    r"|buenas tardes|sehr geehrte|sehr geehrter|geachte|chère|cher)[ \t]+"
    rf"(?:(?:{_TITLES})\.?[ \t]+)*"
)
_SIGN_OFF = re.compile(
    r"(?im)(?:^|(?<=[.!?])[ \t]+)[ \t]*(?:(?:best|kind|warm|warmest|many)[ \t]+regards"
    r"|regards|best wishes|best"
    r"|thanks|thank you|many thanks|thanks again|thanks in advance|cheers|sincerely"
    r"|yours sincerely|yours truly|yours|mit freundlichen grüßen|mit freundlichen grüssen"
    r"|freundliche grüße|freundliche grüsse|viele grüße|viele grüsse|liebe grüße|liebe grüsse"
    r"|beste grüße|schöne grüße|grüße|grüsse|gruß|gruss|lg|vg"
    r"|mfg|cordialement|bien cordialement|bien à vous|salutations|merci|saludos|un saludo"
    r"|saludos cordiales|atentamente|gracias|cordiali saluti|saluti|grazie|distinti saluti"
    r"|met vriendelijke groet|vriendelijke groet|groeten|groet|atenciosamente|obrigado"
    r"|obrigada|cumprimentos|--|—|-)[ \t]*[,.!]?[ \t]*(?:\n[ \t]*)*"
)
_INTRO = re.compile(
    r"(?i)(?<![\w'])(?P<cue>my name is|my name's|ich heiße|ich heisse|mein name ist"
    r"|je m'appelle|je m’appelle|me llamo|mi nombre es|mi chiamo|mijn naam is"
    r"|o meu nome é|meu nome é|chamo-me|this is|i am|i'm|i’m|ich bin|je suis|soy|sono"
    r"|ik ben|eu sou)[ \t]+"
)
_WEAK_INTROS = frozenset("this is|i am|i'm|i’m|ich bin|je suis|soy|sono|ik ben|eu sou".split("|"))  # noqa: SIM905


def _is_cap(token: str) -> bool:
    return (
        token[:1].isupper()
        and (len(token) == 1 or not token.isupper())
        and token.lower() not in _NOT_NAMES
    )


def _take_name(text: str, pos: int, max_tokens: int = 3) -> tuple[int, list[str]] | None:
    """The end of a run of capitalised name tokens starting at `pos`, and the tokens."""
    tokens: list[str] = []
    end = None
    i = pos
    pending_particles = 0
    while len(tokens) < max_tokens:
        m = _WORD.match(text, i)
        if not m:
            break
        token = m.group()
        if len(token) == 1 and token.isupper() and text[m.end() : m.end() + 1] == ".":
            tokens.append(token)  # an initial: "J. Smith"
            end = m.end() + 1
        elif len(token) == 1 and token.isupper() and tokens and _next_is_cap(text, m.end()):
            tokens.append(token)  # "Zoë Ó Briain", "Anna K Berg"
            end = m.end()
        elif _is_cap(token) and len(token) > 1:
            tokens.append(token)
            end = m.end()
            pending_particles = 0
        elif token in _PARTICLES and tokens and pending_particles < 2:
            pending_particles += 1
        else:
            break
        gap = _GAP.match(text, m.end() if pending_particles or end is None else end)
        if not gap:
            break
        i = gap.end()
    if end is None or not any(len(t) > 1 for t in tokens):
        return None
    return end, tokens


def _next_is_cap(text: str, pos: int) -> bool:
    m = re.compile(r"[ \t]+([^\W\d_]+)").match(text, pos)
    return m is not None and _is_cap(m.group(1)) and len(m.group(1)) > 1


def _after_title(text: str, pos: int) -> int:
    m = _TITLE.match(text, pos)
    return m.end() if m else pos


def _line_ends_at(text: str, pos: int) -> bool:
    return re.match(r"[ \t]*(?:\n|$)", text[pos:]) is not None


def _greetings(text: str) -> Iterator[Candidate]:
    for m in _GREETING.finditer(text):
        found = _take_name(text, m.end())
        if found and re.match(r"[ \t]*(?:[,!:;]|\n|$)", text[found[0] :]):
            yield Candidate(m.end(), found[0], "", 0.9)


def _sign_offs(text: str) -> Iterator[Candidate]:
    for m in _SIGN_OFF.finditer(text):
        start = _after_title(text, m.end())
        found = _take_name(text, start, max_tokens=4)
        if found and _line_ends_at(text, found[0]):
            dash = m.group().strip().rstrip(",.!") in ("--", "—", "-")
            yield Candidate(start, found[0], "", 0.8 if dash else 0.9)


def _intros(text: str) -> Iterator[Candidate]:
    for m in _INTRO.finditer(text):
        start = _after_title(text, m.end())
        found = _take_name(text, start)
        if not found:
            continue
        end, tokens = found
        weak = m.group("cue").lower() in _WEAK_INTROS
        if weak and len(tokens) < 2 and tokens[0] not in FIRST_NAMES:
            continue  # "I'm German", "this is Urgent"
        yield Candidate(start, end, "", 0.8 if weak else 0.92)


def _titled(text: str) -> Iterator[Candidate]:
    for m in _TITLE.finditer(text):
        if m.group().strip() in ("Don", "M.") and not text[m.end() : m.end() + 1].isupper():
            continue
        found = _take_name(text, m.end())
        if found:
            yield Candidate(m.end(), found[0], "", 0.88)


def _given_names(text: str) -> Iterator[Candidate]:
    for m in _WORD.finditer(text):
        if m.group() not in FIRST_NAMES:
            continue
        if re.match(r"[ \t]*\d", text[m.end() :]):
            continue  # "Jan 5"
        found = _take_name(text, m.start())
        if found is None:
            continue
        yield Candidate(m.start(), found[0], "", 0.85 if len(found[1]) > 1 else 0.72)


def _header_names(text: str, known: Iterable[str]) -> Iterator[Candidate]:
    for name in known:
        name = _normalise_header_name(name)
        if not name:
            continue
        parts = [p for p in _WORD.findall(name) if len(p) > 1 and _is_cap(p)]
        for needle in dict.fromkeys([name, *parts]):
            for m in re.finditer(rf"(?<![\w@.]){re.escape(needle)}(?![\w@-]|\.\w)", text):
                yield Candidate(m.start(), m.end(), "", 0.95)


def _normalise_header_name(name: str) -> str:
    name = name.strip().strip("\"'")
    if "@" in name:
        return ""
    if name.count(",") == 1:  # "Weiß, Jürgen" -> "Jürgen Weiß"
        last, first = (p.strip() for p in name.split(","))
        name = f"{first} {last}"
    return " ".join(name.split())


def find_people(text: str, known: Iterable[str] = ()) -> Iterator[Candidate]:
    """Personal names: value is the name as written, spaces collapsed."""
    found: list[Candidate] = []
    for source in (
        _header_names(text, known),
        _greetings(text),
        _sign_offs(text),
        _intros(text),
        _titled(text),
        _given_names(text),
    ):
        found.extend(source)
    # A name seen once is the same person wherever it recurs (a surname alone included);
    # one pass over the text with every known form, longest first.
    forms: set[str] = set()
    for c in found:
        name = text[c.start : c.end]
        forms.add(name)
        forms.update(p for p in _WORD.findall(name) if len(p) > 2 and _is_cap(p))
    if forms:
        alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
        for m in re.finditer(rf"(?<![\w@.])(?:{alternatives})(?![\w@-]|\.\w)", text):
            found.append(Candidate(m.start(), m.end(), "", 0.8))
    for start, end, confidence in _merge(found):
        yield Candidate(start, end, " ".join(text[start:end].split()), confidence)


def _merge(found: list[Candidate]) -> list[tuple[int, int, float]]:
    merged: list[tuple[int, int, float]] = []
    for c in sorted(found, key=lambda c: (c.start, -c.end)):
        if merged and c.start < merged[-1][1]:
            start, end, conf = merged[-1]
            merged[-1] = (start, max(end, c.end), max(conf, c.confidence))
        else:
            merged.append((c.start, c.end, c.confidence))
    return merged


_STREET_WORDS = (
    r"straße|strasse|str\.|weg|gasse|platz|allee|ring|damm|ufer|chaussee|steig|pfad|markt"
    r"|laan|straat|gracht|plein|kade|dijk|singel"
)
_EN_STREET = (
    r"Street|St|Road|Rd|Avenue|Ave|Lane|Ln|Drive|Dr|Boulevard|Blvd|Way|Court|Ct|Place|Pl"
    r"|Terrace|Close|Crescent|Square|Sq|Parkway|Pkwy|Highway|Hwy|Row|Gardens|Grove|Hill|Mews"
)
_ROMANCE_STREET = (
    r"rue|avenue|boulevard|bd|chemin|allée|impasse|place|quai|calle|c/|avenida|avda\.?"
    r"|paseo|plaza|camino|carrer|via|viale|piazza|corso|largo|rua|travessa|praça"
)
_ROMANCE_CAPS = (
    r"Rue|Avenue|Boulevard|Chemin|Allée|Impasse|Place|Quai|Calle|Avenida|Avda\.?|Paseo"
    r"|Plaza|Camino|Carrer|Via|Viale|Piazza|Corso|Largo|Rua|Travessa|Praça"
)
_CAP = r"[^\W\d_a-zß-ÿ][^\W\d_]{0,40}(?:['’.-][^\W\d_]{1,40}){0,3}"
_NAMEWORD = r"[^\W\d_]{1,40}(?:['’.-][^\W\d_]{1,40}){0,3}"
_HOUSE = r"\d{1,5}(?:[ \t]?[a-zA-Z](?!\w))?(?:[-/]\d{1,4}(?:[a-zA-Z](?!\w))?)?"
# A town of up to three words, with the particles of "Frankfurt am Main", "Saint-Denis".
_TOWNNAME = (
    rf"{_CAP}(?:(?:[ \t-]+(?:am|an|im|der|sur|de|del|la|le|en|di|do|da))*[ \t-]+{_CAP}){{0,2}}"
)
# 10969 / D-10969 / 1100-048 (PT) / 1015 CJ (NL)
_POSTCODE = r"(?:[A-Z]{1,2}-)?(?:\d{4}-\d{3}|\d{4}[ \t][A-Z]{2}(?![\w])|\d{4,5})"
_TOWN = (
    rf"(?:,?[ \t]*\n?[ \t]*{_POSTCODE}[ \t]+{_TOWNNAME}"
    rf"|,[ \t]*{_CAP}(?:[ \t]+{_CAP})?,?[ \t]+[A-Z]{{2}}[ \t]+\d{{5}}(?:-\d{{4}})?"
    rf"|,?[ \t]*\n?[ \t]*{_CAP}(?:[ \t]+{_CAP})?,?[ \t]+[A-Z]{{1,2}}\d[A-Z\d]?[ \t]\d[A-Z]{{2}})?"
)
_ADDRESSES = (
    # Lindenstraße 12 / Hauptstr. 5a / Keizersgracht 123
    re.compile(rf"(?<![\w-])(?:{_CAP}[ \t-])?{_NAMEWORD}(?i:{_STREET_WORDS})[ \t]*{_HOUSE}{_TOWN}"),
    # Am Markt 3 / Unter den Linden 7 (German street names of separate words + number)
    # are too close to prose; left out.
    # 221B Baker Street / 1600 Pennsylvania Avenue NW
    re.compile(
        rf"(?<![\w.,-]){_HOUSE}[ \t]+(?:{_CAP}[ \t]+){{1,3}}(?:{_EN_STREET})\.?"
        rf"(?:[ \t]+(?:NW|NE|SW|SE|N|S|E|W))?(?:,[ \t]*(?:Apt|Suite|Unit|Flat)\.?[ \t]*\w+)?"
        rf"{_TOWN}(?![\w])"
    ),
    # 12 rue de la Paix / 3, avenue Foch (number first, street word in any case)
    re.compile(
        rf"(?<![\w.,-])\d{{1,4}}(?:[ \t]?(?:bis|ter))?,?[ \t]+(?i:{_ROMANCE_STREET})[ \t]+"
        rf"(?:(?:de|del|della|di|da|do|des|du|la|le|les|l'|d')[ \t]*)*{_CAP}"
        rf"(?:[ \t]+{_CAP})?{_TOWN}"
    ),
    # Calle Mayor 5 / Via Roma 10 / Rua Augusta 27 (capitalised street word, number after)
    re.compile(
        rf"(?<![\w-])(?:{_ROMANCE_CAPS})[ \t]+"
        rf"(?:(?:de|del|della|di|da|do|des|du|la|le|les|l'|d')[ \t]*)*{_CAP}"
        rf"(?:[ \t]+{_CAP})?,?[ \t]*(?:n[º°o]\.?[ \t]*)?{_HOUSE}(?!\w){_TOWN}"
    ),
    # A postcode and town alone on a line: "10969 Berlin", "75002 Paris"
    re.compile(rf"(?m)^[ \t]*{_POSTCODE}[ \t]+{_TOWNNAME}[ \t]*$"),
)


def find_addresses(text: str) -> Iterator[Candidate]:
    """Postal addresses; the value is the address on one line ("Lindenstraße 12, 10969 Berlin")."""
    spans: list[Candidate] = []
    for index, regex in enumerate(_ADDRESSES):
        for m in regex.finditer(text):
            start, end = m.start(), m.end()
            while start < end and text[start].isspace():
                start += 1
            while end > start and text[end - 1] in " \t\n,":
                end -= 1
            spans.append(Candidate(start, end, "", 0.75 if index == len(_ADDRESSES) - 1 else 0.85))
    for start, end, confidence in _merge(spans):
        value = ", ".join(
            " ".join(line.split()) for line in text[start:end].splitlines() if line.strip()
        )
        yield Candidate(start, end, value.replace(",,", ","), confidence)
