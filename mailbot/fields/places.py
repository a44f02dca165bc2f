"""Places: towns, countries and regions named in the text ("Leeds", "Norway", "New York").

A word list (mailbot/data/fields/places.txt: towns of 100,000 inhabitants or more,
countries, US states, some regions, from GeoNames) is matched against capitalised words,
longest run first, so "Frankfurt am Main" wins over "Frankfurt". Smaller towns are missed
unless they stand in a postal address; a place that is also a given name ("Florence")
is left out of the list on purpose.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from importlib import resources

from mailbot.fields.patterns import Candidate

_TOKEN = re.compile(r"[^\W\d_]{1,40}(?:['’.-][^\W\d_]{1,40}){0,3}")
_MAX_WORDS = 4


@lru_cache(maxsize=1)
def place_names() -> frozenset[str]:
    """The packaged place names."""
    ref = resources.files("mailbot") / "data" / "fields" / "places.txt"
    lines = ref.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip() for line in lines if line.strip() and not line.startswith("#"))


def find_places(text: str) -> Iterator[Candidate]:
    """Places named in `text`; the value is the name as written."""
    names = place_names()
    tokens = list(_TOKEN.finditer(text))
    i = 0
    while i < len(tokens):
        if not tokens[i].group()[0].isupper():
            i += 1
            continue
        for j in range(min(len(tokens), i + _MAX_WORDS) - 1, i - 1, -1):
            start, end = tokens[i].start(), tokens[j].end()
            if "\n" in text[start:end]:
                continue
            if " ".join(text[start:end].split()) in names:
                yield Candidate(start, end, text[start:end], 0.8)
                i = j
                break
        i += 1
