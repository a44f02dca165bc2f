"""The in-memory retrieval index: a vector matrix, a BM25 index and their fusion.

Hybrid ranking is a weighted sum: (1 - w) * cosine similarity + w * keyword coverage, where
coverage is the passage's BM25 score divided by what an average passage holding every query
term once would score, capped at 1 (see `BM25Index.coverage`). Both parts are then on the same
0..1 footing for every query, so one weight (`kb.keyword_weight`, 0.3) holds across queries.

Reciprocal rank fusion was tried first and dropped: on the sample knowledge base's paraphrase
queries it put the right passage first less often than vectors alone (20/25 against 22/25),
because it gives BM25's top hit as much weight as the vectors' even when that hit matches only
filler words ("long", "back"); the weighted sum got 23/25 and still lifts exact matches of
rare tokens (order numbers, product codes) that the vectors blur.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from mailbot.kb.keyword import BM25Index
from mailbot.kb.languages import keyword_language

SearchMode = Literal["hybrid", "vector", "keyword"]
SEARCH_MODES: tuple[SearchMode, ...] = ("hybrid", "vector", "keyword")

# A passage holding this much of the query's words (an exact order number or product code)
# stays in the results even when the vectors find it dissimilar.
_STRONG_KEYWORD_COVERAGE = 0.5


@dataclass(frozen=True, slots=True)
class Passage:
    """One retrieved passage: where it comes from, what it says and how well it matched.

    `score` is the weighted sum in hybrid mode, the cosine similarity in vector mode and the raw
    BM25 score in keyword mode; `similarity` (cosine, -1..1) and `keyword_score` (BM25
    coverage of the query, 0..1) are always given.
    """

    id: int
    document_id: int
    source: str
    heading_path: str
    text: str
    score: float
    document_version: int
    similarity: float = 0.0
    keyword_score: float = 0.0


@dataclass(frozen=True, slots=True)
class FusionOptions:
    """How the two scores are combined (from `[kb]` in the config)."""

    keyword_weight: float = 0.3
    min_similarity: float = 0.25


@dataclass(frozen=True, slots=True)
class IndexedPassage:
    """What the index keeps of a stored passage besides its vector."""

    id: int
    document_id: int
    source: str
    heading_path: str
    text: str
    document_version: int


class PassageIndex:
    """Passages with their unit vectors as one float32 matrix, plus BM25 over their text."""

    def __init__(self, passages: Sequence[IndexedPassage], vectors: np.ndarray) -> None:
        if len(passages) != vectors.shape[0]:
            raise ValueError("one vector per passage expected")
        self.passages = tuple(passages)
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)
        # Headings are searched too: "Refunds > Time limits" matches "refund time limit".
        self.keywords = BM25Index(
            [f"{p.heading_path}\n{p.text}" for p in self.passages],
            languages=_document_languages(self.passages),
        )

    def __len__(self) -> int:
        return len(self.passages)

    def search_many(
        self,
        queries: Sequence[str],
        query_vectors: np.ndarray,
        top_k: int,
        options: FusionOptions,
        mode: SearchMode = "hybrid",
    ) -> list[list[Passage]]:
        """The best `top_k` passages for each query (its text for BM25, its unit vector)."""
        if not self.passages or not queries:
            return [[] for _ in queries]
        # One matrix product for every query: (n, dim) @ (dim, q).
        with _single_threaded_blas():
            similarities = self.matrix @ np.asarray(query_vectors, dtype=np.float32).T
        return [
            self._rank(query, similarities[:, column], top_k, options, mode)
            for column, query in enumerate(queries)
        ]

    def _rank(
        self,
        query: str,
        similarity: np.ndarray,
        top_k: int,
        options: FusionOptions,
        mode: SearchMode,
    ) -> list[Passage]:
        raw, coverage = self.keywords.coverage(query)
        if mode == "vector":
            score = similarity
        elif mode == "keyword":
            score = raw
        else:
            weight = options.keyword_weight
            score = (1.0 - weight) * similarity + weight * coverage
        rows = _top(score, top_k)
        if mode == "keyword":
            rows = rows[raw[rows] > 0]
        elif mode == "hybrid":
            # Leave out what is neither close in meaning nor a strong keyword match, so an
            # off-topic question gets nothing rather than the least bad passage.
            keep = (similarity[rows] >= options.min_similarity) | (
                coverage[rows] >= _STRONG_KEYWORD_COVERAGE
            )
            rows = rows[keep]
        return [self._passage(r, float(score[r]), similarity, coverage) for r in rows]

    def _passage(
        self, row: int, score: float, similarity: np.ndarray, keyword: np.ndarray
    ) -> Passage:
        p = self.passages[int(row)]
        return Passage(
            id=p.id,
            document_id=p.document_id,
            source=p.source,
            heading_path=p.heading_path,
            text=p.text,
            score=round(score, 6),
            document_version=p.document_version,
            similarity=round(float(similarity[row]), 6),
            keyword_score=round(float(keyword[row]), 6),
        )


def _top(values: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` largest values, largest first (argpartition, then a small sort)."""
    if count <= 0 or values.size == 0:
        return np.zeros(0, dtype=np.int64)
    if count < values.size:
        part = np.argpartition(-values, count - 1)[:count]
    else:
        part = np.arange(values.size)
    return part[np.argsort(-values[part], kind="stable")]


_BLAS_LOCK = threading.Lock()
_blas_controller: Any = None


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run the matrix product on one BLAS thread.

    A (10,000 x 384) product is memory-bound and takes well under a millisecond on one core;
    split over OpenBLAS's threads on a busy machine (the encoder's threads, other workers) the
    threads wait on each other and the 95th percentile grows twentyfold (measured: 12.8 ms
    against 2.3 ms on 2 loaded cores). threadpoolctl comes with scikit-learn; without it
    the product runs as numpy is configured.
    """
    global _blas_controller
    with _BLAS_LOCK:
        if _blas_controller is None:
            try:
                from threadpoolctl import ThreadpoolController

                _blas_controller = ThreadpoolController()
            except ImportError:  # pragma: no cover - scikit-learn brings it
                _blas_controller = False
    if not _blas_controller:
        yield
        return
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


def _document_languages(passages: Sequence[IndexedPassage]) -> list[str]:
    """The language of each passage's document, told from the document's first passages
    (a short passage alone, a table or a list of codes, is too little to tell)."""
    samples: dict[int, list[str]] = {}
    for passage in passages:
        texts = samples.setdefault(passage.document_id, [])
        if sum(len(t) for t in texts) < 1500:
            texts.append(passage.text)
    languages = {doc: keyword_language("\n".join(texts)) for doc, texts in samples.items()}
    return [languages[p.document_id] for p in passages]
