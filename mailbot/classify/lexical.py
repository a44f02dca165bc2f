"""Lexical features: TF-IDF over word 1-2-grams and within-word character 2-5-grams.

The embedding head misses rare but decisive words (product names, "chargeback", "PIN");
a linear model over these sparse features catches them, and the two heads' errors differ
enough that their ensemble beats either. Pure Python and numpy, so the runtime needs
neither scikit-learn nor scipy.
"""

from __future__ import annotations

import functools
import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import repeat

import numpy as np

_WORD = re.compile(r"(?u)\b\w\w+\b")
# Beyond this many characters the start of a message says enough; it bounds the work.
MAX_CHARS = 4000

SparseRow = tuple[np.ndarray, np.ndarray]  # (feature indices int32, values float32)


def _words(text: str) -> list[str]:
    return _WORD.findall(text[:MAX_CHARS].lower())


def _word_grams(words: list[str]) -> Iterable[str]:
    yield from words
    for first, second in zip(words, words[1:], strict=False):
        yield f"{first} {second}"


def _char_grams(words: list[str], low: int, high: int) -> Iterable[str]:
    for word in set(words):
        yield from _word_char_grams(word, low, high)


@functools.lru_cache(maxsize=8192)
def _word_char_grams(word: str, low: int, high: int) -> tuple[str, ...]:
    """A word's character n-grams, cached: support mail reuses a small vocabulary."""
    padded = f" {word} "
    return tuple(
        "#" + padded[start : start + size]
        for size in range(low, high + 1)
        for start in range(len(padded) - size + 1)
    )


class LexicalVectorizer:
    """Maps texts to L2-normalised sublinear TF-IDF rows over a fixed vocabulary."""

    def __init__(self, vocabulary: dict[str, int], idf: np.ndarray, char_range: tuple[int, int]):
        self.vocabulary = vocabulary
        self.idf = idf.astype(np.float32)
        self.char_range = char_range

    @property
    def size(self) -> int:
        return len(self.vocabulary)

    @classmethod
    def fit(
        cls,
        texts: Sequence[str],
        *,
        char_range: tuple[int, int] = (2, 5),
        min_char_df: int = 2,
        max_features: int = 200_000,
    ) -> LexicalVectorizer:
        """Learn the vocabulary and inverse document frequencies from training texts."""
        df: Counter[str] = Counter()
        for text in texts:
            df.update(set(_grams(text, char_range)))
        kept = [
            (gram, count)
            for gram, count in df.items()
            if count >= (min_char_df if gram.startswith("#") else 1)
        ]
        kept.sort(key=lambda item: (-item[1], item[0]))
        kept = kept[:max_features]
        vocabulary = {gram: index for index, (gram, _) in enumerate(kept)}
        n = len(texts)
        idf = np.array([math.log((1 + n) / (1 + count)) + 1.0 for _, count in kept])
        return cls(vocabulary, idf, char_range)

    def transform_row(self, text: str | Counter[str]) -> SparseRow:
        """One text (or its `gram_counts`) as sparse (indices, values)."""
        grams = text if isinstance(text, Counter) else gram_counts(text, self.char_range)
        # dict.get mapped over the grams runs in C; -1 marks those outside the vocabulary.
        found = np.fromiter(map(self.vocabulary.get, grams, repeat(-1)), np.int64, len(grams))
        known = found >= 0
        if not known.any():
            return np.zeros(0, np.int32), np.zeros(0, np.float32)
        indices = found[known].astype(np.int32)
        tf = np.fromiter(grams.values(), np.float32, len(grams))[known]
        values = (1.0 + np.log(tf)) * self.idf[indices]
        values /= np.linalg.norm(values)
        return indices, values.astype(np.float32)

    def transform(self, texts: Sequence[str] | Sequence[Counter[str]]) -> list[SparseRow]:
        """Many texts (or their gram counts) as sparse rows."""
        return [self.transform_row(text) for text in texts]


def gram_counts(text: str, char_range: tuple[int, int] = (2, 5)) -> Counter[str]:
    """How often each feature string occurs in a text; heads sharing one text reuse this."""
    return Counter(_grams(text, char_range))


def _grams(text: str, char_range: tuple[int, int]) -> Iterable[str]:
    words = _words(text)
    yield from _word_grams(words)
    yield from _char_grams(words, *char_range)


def sparse_logits(rows: Sequence[SparseRow], weights_t: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Linear scores of sparse rows against (features, labels) weights.

    The weights are passed transposed and C-ordered so that each row's features gather
    contiguous memory; gathering columns of (labels, features) is several times slower.
    """
    out = np.tile(bias.astype(np.float32), (len(rows), 1))
    for i, (indices, values) in enumerate(rows):
        if len(indices):
            out[i] += values @ weights_t[indices]
    return out


def to_csr(rows: Sequence[SparseRow], size: int):  # type: ignore[no-untyped-def]
    """Sparse rows as a scipy CSR matrix (training only; scipy comes with scikit-learn)."""
    from scipy.sparse import csr_matrix

    indptr = np.zeros(len(rows) + 1, np.int64)
    indptr[1:] = np.cumsum([len(indices) for indices, _ in rows])
    indices = np.concatenate([r[0] for r in rows]) if rows else np.zeros(0, np.int32)
    values = np.concatenate([r[1] for r in rows]) if rows else np.zeros(0, np.float32)
    return csr_matrix((values, indices, indptr), shape=(len(rows), size))
