"""Split a reply into what the customer wrote now, the quoted history, and the signature.

The multilingual knowledge comes from mail-parser-reply: its reply-header regexes ("On ...
wrote:", "Am ... schrieb ...:", Outlook "From:/Sent:" blocks) and its sign-off and
"Sent from my ..." phrases. Its own driver runs every regex from every position of the
whole text, which costs about a millisecond per message for eight languages and is
quadratic on long lines; so we run those regexes only where a cheap line test says a
header may start, on lines of sane length, and add what it misses: Gmail's wrapped
headers in more languages, "-----Original Message-----" variants, forwarded-message
markers, ">" quoting and the "-- " signature delimiter.
"""

from __future__ import annotations

import re
from functools import cache

from mailparser_reply import EmailMessage
from mailparser_reply.constants import MAIL_LANGUAGES

# Languages whose reply headers we recognise. Polish is left out on purpose: its pattern
# takes a single "Data: ..." line for a reply header, which customers write in orders.
LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "sv", "da")

_MAX_HEADER_LINE = 400  # a reply header is never longer; longer lines are prose
_MAX_SIGNATURE_LINES = 8  # after a sign-off; more than that is still the message

# Verbs of "<date>, <person> wrote:" in the languages above plus Portuguese and Polish.
_WROTE = re.compile(
    r"\b(?:wrote|writes|schrieb|a (?:é|e)crit|escribi(?:ó|o)|ha scritto|schreef|escreveu"
    r"|skrev|napisał(?:\(a\))?|napsal(?:\(a\))?)\b[^:]{0,200}[:：]\s*$",
    re.IGNORECASE,
)
# First words of a two-line (wrapped) "On ... wrote:" header.
_WROTE_OPENER = re.compile(r"^(?:>\s*)*(?:On|Am|Le|El|Il|Op|Em|Den|Dnia|Dne)\s", re.IGNORECASE)
_SEPARATOR = re.compile(
    r"^[-_=\s]*(?:original message|original-nachricht|ursprüngliche nachricht|"
    r"forwarded message|weitergeleitete nachricht|message d'origine|message transféré|"
    r"mensaje original|mensaje reenviado|messaggio originale|messaggio inoltrato|"
    r"oorspronkelijk bericht|doorgestuurd bericht|mensagem original|mensagem encaminhada|"
    r"ursprungligt meddelande|oprindelig meddelelse)[-_=\s]*$"
    r"|^(?:begin forwarded message|anfang der weitergeleiteten nachricht|début du message "
    r"réexpédié)\s*:?\s*$",
    re.IGNORECASE,
)
# A "Key: value" line, and the "From:" that opens an Outlook-style quoted header block.
_FIELD_LINE = re.compile(r"^[>*\s]*[^\W\d_][^\W\d_ ]{0,15}\s?[*]*\s?:")
_FROM_LINE = re.compile(
    r"^[*\s]*(?:from|von|de|da|van|från|fra|od|expéditeur|remitente)\s?[*]*\s?:", re.IGNORECASE
)
_MAX_BLOCK = 1_200  # characters of a quoted header block handed to the library regex
_RULE_LINE = re.compile(r"^[_\-=]{10,}$")
_SIG_DELIMITER = re.compile(r"^--\s?$")
_SENTENCE_END = re.compile(r"[.?!:;]\s*$")
# Sign-offs the library does not list for English.
_EXTRA_SIGNOFFS = (
    "cheers", "sincerely", "yours sincerely", "yours truly", "many thanks", "thanks a lot",
    "thanks in advance", "thank you in advance", "thanks again", "warm regards",
    "best wishes", "regards", "thanks", "thank you", "best", "kind regards", "atenciosamente",
    "obrigad[oa]", "abraços", "gruß", "lg", "vg", "mfg",
)  # fmt: skip


def split_reply(text: str) -> tuple[str, str, str]:
    """Return (new_text, quoted, signature) for a plain-text body."""
    lines = text.split("\n")
    stripped = [line.strip() for line in lines]
    boundary = _quote_header(lines, stripped)
    head = range(boundary if boundary is not None else len(lines))

    quoted_idx = {i for i in head if stripped[i].startswith(">")}
    if quoted_idx:
        _take_attribution(stripped, min(quoted_idx), quoted_idx)
    kept = [i for i in head if i not in quoted_idx]
    while kept and (not stripped[kept[-1]] or _RULE_LINE.match(stripped[kept[-1]])):
        kept.pop()  # blank lines and an Outlook rule line belong to the quote below
    sig_start = _signature_start(stripped, kept)

    new = [lines[i] for i in kept[:sig_start]]
    signature = [lines[i] for i in kept[sig_start:]]
    quoted = [lines[i] for i in sorted(quoted_idx)]
    if boundary is not None:
        quoted.extend(lines[boundary:])
    return _join(new), _join(quoted), _join(signature)


def _join(lines: list[str]) -> str:
    return "\n".join(lines).strip("\n")


def _quote_header(lines: list[str], stripped: list[str]) -> int | None:
    """Index of the first line of the first reply header or separator, else None."""
    normalized = "\n".join(stripped)
    offsets = _line_offsets(stripped)
    header_regex = _library_header_regex()
    for i, line in enumerate(stripped):
        if not line or len(line) > _MAX_HEADER_LINE or line.startswith(">"):
            continue
        if _SEPARATOR.match(line):
            return i
        if line.endswith((":", "：")):
            opener = _wrapped_opener(stripped, i)
            start = opener if opener is not None else i
            if _WROTE.search(line) and (
                opener is not None or _looks_like_attribution(lines, stripped, i)
            ):
                return start
            if header_regex.match(normalized, offsets[start], offsets[i] + len(line)):
                return start
        if _FROM_LINE.match(line) and _field_block(stripped, i):
            match = header_regex.match(normalized, offsets[i], offsets[i] + _MAX_BLOCK)
            if match and match.end() > offsets[i] + len(line):  # a block, not one line
                return i
    return None


def _looks_like_attribution(lines: list[str], stripped: list[str], i: int) -> bool:
    """Whether "... wrote:" on line i introduces a quote rather than ends a sentence.

    "Jane <jane@example.org> wrote:" does; "This is what you wrote:" does only when a
    quoted (">") or indented block follows, as clients put under their attribution line.
    """
    if _WROTE_OPENER.match(stripped[i]) or "@" in stripped[i]:
        return True
    for j in range(i + 1, min(i + 3, len(lines))):
        if stripped[j]:
            return stripped[j].startswith(">") or lines[j][:1] in (" ", "\t")
    return False


def _wrapped_opener(stripped: list[str], i: int) -> int | None:
    """If line i ends a header wrapped from line i-1 ("On ..., Jane <" / "jane@x> wrote:")."""
    if i == 0 or _WROTE_OPENER.match(stripped[i]):
        return None
    previous = stripped[i - 1]
    if (
        previous
        and len(previous) + len(stripped[i]) <= _MAX_HEADER_LINE
        and _WROTE_OPENER.match(previous)
        and not _SENTENCE_END.search(previous)
    ):
        return i - 1
    return None


def _field_block(stripped: list[str], i: int) -> bool:
    """Whether line i is followed by another "Key: value" line within three lines."""
    return any(_FIELD_LINE.match(line) for line in stripped[i + 1 : i + 4])


def _line_offsets(lines: list[str]) -> list[int]:
    offsets, pos = [], 0
    for line in lines:
        offsets.append(pos)
        pos += len(line) + 1
    return offsets


def _take_attribution(stripped: list[str], first_quoted: int, quoted_idx: set[int]) -> None:
    """Move an unrecognised "X wrote:" line just above a ">" block into the quote."""
    for j in (first_quoted - 1, first_quoted - 2):
        if j < 0:
            return
        line = stripped[j]
        if not line:
            continue
        if line.endswith((":", "：")) and len(line) <= 200 and ("@" in line or _WROTE.search(line)):
            quoted_idx.add(j)
        return


def _signature_start(stripped: list[str], kept: list[int]) -> int:
    """Position in `kept` where the signature begins (len(kept) when there is none)."""
    signoff = _signoff_regex()
    sent_from = _sent_from_regex()
    seen_text = False
    for pos, i in enumerate(kept):
        line = stripped[i]
        if _SIG_DELIMITER.match(line) and seen_text:
            return pos
        if seen_text and len(line) <= 80 and sent_from.match(line):
            return pos
        if seen_text and len(line) <= 40:
            match = signoff.match(line)
            # Only a line that is the sign-off itself, maybe with a name after it:
            # "Thanks, I got it." is a sentence, not the start of a signature.
            if (
                match
                and _only_signoff(line[match.end() :])
                and _looks_like_signature(stripped, kept[pos + 1 :])
            ):
                return pos
        if line:
            seen_text = True
    return len(kept)


def _looks_like_signature(stripped: list[str], rest: list[int]) -> bool:
    """A few short lines (name, role, phone) follow, not more of the message."""
    lines = 0
    for i in rest:
        if stripped[i]:
            lines += 1
            if lines > _MAX_SIGNATURE_LINES or len(stripped[i]) > 100:
                return False
    return True


def _only_signoff(rest: str) -> bool:
    rest = rest.strip().lstrip(",!.-").strip()
    return len(rest) <= 30 and not _SENTENCE_END.search(rest) and len(rest.split()) <= 4


@cache
def _library_header_regex() -> re.Pattern[str]:
    """mail-parser-reply's combined reply-header regex for LANGUAGES, compiled once."""
    return EmailMessage(text="", languages=list(LANGUAGES)).HEADER_REGEX


@cache
def _signoff_regex() -> re.Pattern[str]:
    phrases = [
        p.rstrip(",")
        for lang in LANGUAGES
        for p in _as_list(MAIL_LANGUAGES.get(lang, {}).get("signatures", []))
    ]
    phrases.extend(_EXTRA_SIGNOFFS)
    # Longest first, so that "Best regards" wins over "Best".
    alternatives = "|".join(sorted(set(phrases), key=len, reverse=True))
    return re.compile(rf"^(?:{alternatives})\b[ ,!.]*", re.IGNORECASE)


@cache
def _sent_from_regex() -> re.Pattern[str]:
    phrases = [MAIL_LANGUAGES.get(lang, {}).get("sent_from", "") for lang in LANGUAGES]
    alternatives = "|".join(p for p in phrases if p) + "|Enviado do meu|Von meinem"
    return re.compile(rf"^(?:{alternatives})", re.IGNORECASE)


def _as_list(value: str | list[str]) -> list[str]:
    return value if isinstance(value, list) else [value]
