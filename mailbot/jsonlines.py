"""JSON for line-oriented readers: one record per line, whatever the customer wrote.

`json.dumps(..., ensure_ascii=False)` escapes every control character below U+0020, but
writes U+0085 (NEXT LINE), U+2028 (LINE SEPARATOR) and U+2029 (PARAGRAPH SEPARATOR) as
they are. That is valid JSON, yet Python's `str.splitlines()` breaks a line at all three
and JavaScript at the last two, so one record read that way becomes two broken halves.
Mail text can hold them (pasted from word processors, or put there on purpose), so every
JSON mailbot prints goes through `dumps`, which writes them as `\\u` escapes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

# The characters `str.splitlines()` splits at that `json.dumps` leaves unescaped.
_LINE_BREAKERS = {"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def dumps(obj: Any, *, indent: int | None = None) -> str:
    """`obj` as JSON (non-ASCII kept readable) with no character that splits a line.

    Without `indent` the result is exactly one line, fit for a JSON Lines record.
    """
    text = json.dumps(obj, ensure_ascii=False, default=str, indent=indent)
    # These characters can only occur inside JSON strings, where an escape means the same.
    for char, escaped in _LINE_BREAKERS.items():
        if char in text:
            text = text.replace(char, escaped)
    return text


def split_records(text: str) -> Iterator[tuple[int, str]]:
    """The (line number, line) pairs of a JSON Lines text, split at LF (and CR LF) only.

    `str.splitlines()` would also split at U+2028 and friends, which a valid record may
    hold unescaped inside a string. A final line break ends the last line, as usual.
    """
    text = text.removesuffix("\n")
    if not text:
        return
    for number, line in enumerate(text.split("\n"), start=1):
        yield number, line.removesuffix("\r")
