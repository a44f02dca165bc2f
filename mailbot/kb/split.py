"""Split sections into passages small enough for the encoder, at natural boundaries.

A passage never crosses a heading. Inside a section, paragraphs are packed together up to the
word budget; a paragraph over the budget is split at sentences, and a sentence over it at
words. The encoder reads the heading path before the text (`embedding_text`), so a short
passage such as "Within 30 days." still says what it is about.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from mailbot.kb.loaders import Section

HEADING_SEPARATOR = " > "

_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")


@dataclass(frozen=True, slots=True)
class PassageDraft:
    """A passage before it is embedded and stored."""

    heading_path: str
    text: str

    def embedding_text(self) -> str:
        """What the encoder reads: the heading path, then the passage."""
        return f"{self.heading_path}\n{self.text}" if self.heading_path else self.text


def split_sections(sections: Iterable[Section], max_words: int) -> list[PassageDraft]:
    """Passages of at most `max_words` words each, in document order."""
    passages: list[PassageDraft] = []
    for section in sections:
        path = HEADING_SEPARATOR.join(h for h in section.headings if h)
        for chunk in _pack(_units(section.text, max_words), max_words):
            passages.append(PassageDraft(path, chunk))
    return passages


def _units(text: str, max_words: int) -> list[tuple[str, bool]]:
    """Paragraphs, with any paragraph over the budget cut into sentences or word runs.

    Each unit says whether it starts a paragraph, so pieces of one paragraph that end up in
    the same passage read on as prose.
    """
    units: list[tuple[str, bool]] = []
    for paragraph in _PARAGRAPH_BREAK.split(text):
        paragraph = paragraph.strip("\n").rstrip()
        if not paragraph.strip():
            continue
        if _words(paragraph) <= max_words:
            units.append((paragraph, True))
            continue
        first = True
        for sentence in _SENTENCE_END.split(" ".join(paragraph.split())):
            words = sentence.split()
            for start in range(0, len(words), max_words):
                units.append((" ".join(words[start : start + max_words]), first))
                first = False
    return units


def _pack(units: list[tuple[str, bool]], max_words: int) -> list[str]:
    chunks: list[str] = []
    current = ""
    count = 0
    for unit, new_paragraph in units:
        size = _words(unit)
        if current and count + size > max_words:
            chunks.append(current)
            current, count = "", 0
        if current:
            current += ("\n\n" if new_paragraph else " ") + unit
        else:
            current = unit
        count += size
    if current:
        chunks.append(current)
    return chunks


def _words(text: str) -> int:
    return len(text.split())
