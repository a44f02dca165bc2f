"""Language identification with py3langid (a naive Bayes model shipped inside the package)."""

from __future__ import annotations

import copy
import re
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mailbot.parse.message import InboundMessage

UNDETERMINED = "und"
# Below this normalised probability the guess is noise (very short or non-linguistic text).
MIN_PROBABILITY = 0.5
_MIN_LETTERS = 3

_lock = threading.Lock()
_identifiers: dict[tuple[str, ...], Any] = {}


def _identifier(languages: tuple[str, ...]) -> Any:
    """The identifier for these languages (all when empty). The model is loaded once: one
    restricted to some languages is a shallow copy sharing its byte automaton and table
    (about 70 MB), with only the chosen languages' columns of its own."""
    with _lock:
        identifier = _identifiers.get(languages)
        if identifier is None:
            full = _identifiers.get(())
            if full is None:
                from py3langid.langid import MODEL_DIR, MODEL_FILE, LanguageIdentifier

                full = LanguageIdentifier.from_modelpath(MODEL_DIR / MODEL_FILE,
                                                         norm_probs=True)
                _identifiers[()] = full
            identifier = full
            if languages:
                identifier = copy.copy(full)
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


# The languages mailbot ships seed examples, reply templates and stemmers for.
REPLY_LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")
_REPLY_PREFIX = re.compile(
    r"^(?:\s*(?:re|aw|sv|vs|antw|rif|r|res|fw|fwd|wg|tr|rv|enc|doorst)\s*(?:\[\d+\])?\s*:\s*)+",
    re.IGNORECASE,
)


def message_language(message: InboundMessage, languages: Sequence[str] = ()) -> str:
    """The language a reply to this email should be written in: the customer's new text.

    Quoted history and the subject (often our own English "Re: Your order ...") never
    decide it while the new text can be told. A short text ("Sigo sin recibir nada.") is
    tried again among the reply languages, then the Content-Language header and the
    subject help; "und" when nothing can be told.
    """
    candidates = tuple(languages) or REPLY_LANGUAGES
    text = message.new_text or message.text
    language = detect_language(text, languages)
    if language == UNDETERMINED and not languages:
        language = detect_language(text, candidates)
    if language != UNDETERMINED:
        return language
    hint = (message.language_hint or "").split(",")[0].split("-")[0].strip()
    if hint in candidates:
        return hint
    subject = _REPLY_PREFIX.sub("", message.subject or "")
    return detect_language(f"{subject}\n\n{text}", candidates)
