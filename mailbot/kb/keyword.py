"""BM25 keyword scoring over the passages, in numpy (no external service, no extra package).

It catches what embeddings blur: an exact product code ("TB-45-GRN"), an error number, a rare
name. Each term keeps its postings as two arrays (passage rows, precomputed BM25 weights), so
a query costs one vectorised add per query term.

Words are stemmed and stop words dropped in the text's own language (see
`mailbot.kb.languages`): a German question finds a German passage with other word forms.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from mailbot.kb.languages import (
    STEMMED_LANGUAGES,
    STOPWORDS,
    keyword_language,
    snowball_stem,
)

# Words, and codes made of words joined by - / . (kept whole as well as in parts).
_TOKEN = re.compile(r"[^\W_]+(?:[-/.][^\W_]+)*")
# English function words (NLTK's list, abridged) plus the filler of support questions
# ("how long", "get my money back", "please"): the vectors read those; BM25 is there for the
# words that name something.
_STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before
    being below between both but by can cannot could did do does doing don down during each
    few for from further had has have having he her here hers herself him himself his how i
    if in into is it its itself just me more most my myself no nor not now of off on once only
    or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves also already anything back dear get got hello hey hi know let like
    long many much need please regards something still tell thank thanks want yet""".split()  # noqa: SIM905  (a word list reads better as text)
)
_SUFFIXES = (
    ("ies", "y"), ("sses", "ss"), ("ings", ""), ("ing", ""), ("edly", ""), ("ed", ""),
    ("ly", ""), ("es", ""), ("s", ""),
)  # fmt: skip


def tokenize(text: str, language: str = "en") -> list[str]:
    """Lower-cased, stemmed terms without stop words; compound codes also in parts.

    `language` (ISO 639-1) chooses the stemmer and stop words; "auto" detects it.
    """
    if language == "auto":
        language = keyword_language(text)
    if language not in STEMMED_LANGUAGES:
        language = "en"
    stopwords = _STOPWORDS if language == "en" else STOPWORDS[language]

    def word_stem(word: str) -> str:
        return stem(word) if language == "en" else snowball_stem(word, language)

    terms: list[str] = []
    for match in _TOKEN.finditer(text.casefold()):
        token = match.group()
        if token in stopwords:
            continue
        if token.isalpha():
            terms.append(word_stem(token))
            continue
        terms.append(token)
        if not token.isalnum():
            terms.extend(
                word_stem(p) if p.isalpha() else p for p in re.split(r"[-/.]", token) if p
            )
    return terms


@functools.lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A light English suffix stripper: "returns", "returned", "returning" -> "return".

    Much simpler than Porter's: it only has to make a question's word forms meet the
    document's; it does not have to produce real words.
    """
    if len(word) <= 4:
        return word
    for suffix, replacement in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: len(word) - len(suffix)] + replacement
            break
    if word.endswith("e") and len(word) > 4:
        word = word[:-1]
    if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiousl":
        word = word[:-1]  # "shipp" (from shipping, shipped) -> "ship"
    return word


class BM25Index:
    """Okapi BM25 (k1, b) with Lucene's non-negative IDF, over a fixed list of texts."""

    def __init__(
        self,
        texts: Sequence[str],
        *,
        k1: float = 1.2,
        b: float = 0.75,
        languages: Sequence[str] = (),
    ) -> None:
        """`languages`: the language of each text; detected per text when not given."""
        self.size = len(texts)
        if languages and len(languages) != len(texts):
            raise ValueError("one language per text expected")
        self.languages = tuple(languages) or tuple(keyword_language(t) for t in texts)
        # A query is stemmed in one of the languages the passages are written in.
        self._query_languages = tuple(sorted(set(self.languages))) or ("en",)
        counts = [
            Counter(tokenize(text, language))
            for text, language in zip(texts, self.languages, strict=True)
        ]
        lengths = np.array([sum(c.values()) for c in counts], dtype=np.float32)
        average = float(lengths.mean()) if self.size and lengths.sum() else 1.0
        norm = k1 * (1.0 - b + b * lengths / average)
        rows: dict[str, list[int]] = {}
        freqs: dict[str, list[int]] = {}
        for row, counter in enumerate(counts):
            for term, count in counter.items():
                rows.setdefault(term, []).append(row)
                freqs.setdefault(term, []).append(count)
        self._postings: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._idf: dict[str, float] = {}
        self._rarest = math.log(1.0 + (self.size - 0.5) / 1.5)  # the IDF of a term with df 1
        for term, term_rows in rows.items():
            index = np.array(term_rows, dtype=np.int32)
            tf = np.array(freqs[term], dtype=np.float32)
            df = len(term_rows)
            idf = math.log(1.0 + (self.size - df + 0.5) / (df + 0.5))
            self._idf[term] = idf
            self._postings[term] = (index, (idf * tf * (k1 + 1.0) / (tf + norm[index])))

    def coverage(self, query: str) -> tuple[np.ndarray, np.ndarray]:
        """BM25 scores for `query`, and the same scaled to 0..1 by a reference score.

        The reference is what a passage of average length containing each known query term
        once would score (the sum of their IDFs); reaching it means "has all the query's
        words", so the scaled value is comparable across queries, unlike the raw score.
        Terms no passage contains are left out of the reference: nothing could match them.
        """
        terms = self.query_terms(query)
        raw = self._scores(terms)
        known = sum(self._idf[t] for t in terms if t in self._idf)
        if known <= 0:
            return raw, np.zeros_like(raw)
        # At least the weight of one word found in a single passage: a query of one common
        # word ("send") must not count as fully matched by every passage that has it.
        reference = max(known, self._rarest)
        return raw, np.minimum(raw / reference, 1.0)

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every passage for `query` (zeros where no term matches)."""
        return self._scores(self.query_terms(query))

    def query_terms(self, query: str) -> set[str]:
        """A query's terms, stemmed in its language among those of the passages."""
        return set(tokenize(query, keyword_language(query, self._query_languages)))

    def _scores(self, terms: set[str]) -> np.ndarray:
        total = np.zeros(self.size, dtype=np.float32)
        for term in terms:
            posting = self._postings.get(term)
            if posting is not None:
                # Rows within one posting are unique, so fancy-index addition is exact.
                total[posting[0]] += posting[1]
        return total
