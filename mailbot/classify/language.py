"""Language identification with py3langid (a naive Bayes model shipped inside the package)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

UNDETERMINED = "und"
# Below this normalised probability the guess is noise (very short or non-linguistic text).
MIN_PROBABILITY = 0.5
_MIN_LETTERS = 3

_lock = threading.Lock()
_identifiers: dict[tuple[str, ...], Any] = {}


def _identifier(languages: tuple[str, ...]) -> Any:
    with _lock:
        identifier = _identifiers.get(languages)
        if identifier is None:
            from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

            identifier = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE, norm_probs=True)
            if languages:
                identifier.set_languages(list(languages))
            _identifiers[languages] = identifier
        return identifier


def detect_language(text: str, languages: Sequence[str] = ()) -> str:
    """The ISO 639-1 code of the text's language, or "und" when it cannot be told."""
    if sum(ch.isalpha() for ch in text[:200]) < _MIN_LETTERS:
        return UNDETERMINED
    try:
        code, probability = _identifier(tuple(languages)).classify(text[:2000])
    except ValueError:
        return UNDETERMINED
    return str(code) if probability >= MIN_PROBABILITY else UNDETERMINED
