"""`KnowledgeBase`: add documents, and search them for the passages a draft should rest on.

Passage vectors are tied to the encoder that made them (its name and weights hash are stored
with each document). Vectors of different encoders are never compared: when the configured
encoder changes (`models.encoder`), the passages are re-embedded from their stored text the
first time a process needs the index (at start-up, `kb add`, `kb search` or `kb reembed`),
with a log line, so the knowledge base follows the encoder without a manual step.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from mailbot.kb.errors import DocumentMissing, KnowledgeBaseError
from mailbot.kb.index import FusionOptions, Passage, PassageIndex, SearchMode
from mailbot.kb.loaders import collect_files, load_document
from mailbot.kb.split import PassageDraft, split_sections
from mailbot.kb.store import (
    DocumentInfo,
    document_info,
    documents_matching,
    find_document,
    list_documents,
    load_passages,
    passage_texts,
    passages_signature,
    remove_documents,
    replace_vectors,
    save_document,
    stale_documents,
)

if TYPE_CHECKING:
    from mailbot.config import Config, KnowledgeBaseSettings
    from mailbot.db.session import Database
    from mailbot.engine import Encoder

log = logging.getLogger(__name__)

AddStatus = Literal["added", "updated", "unchanged", "failed"]


@dataclass(frozen=True, slots=True)
class AddResult:
    """What `add` did with one file."""

    source: str
    status: AddStatus
    document_id: int | None = None
    version: int | None = None
    passages: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class ReembedResult:
    """What `reembed` did: documents and passages now embedded by the configured encoder."""

    documents: int
    passages: int
    seconds: float


@dataclass
class _CachedIndex:
    signature: tuple[int, int, str]
    index: PassageIndex
    checked_at: float


# One index per (database, encoder version) per process, shared by every KnowledgeBase over
# them, so the worker and its stages build the matrix once.
_CACHE: dict[tuple[str, str], _CachedIndex] = {}
_CACHE_LOCK = threading.Lock()


class KnowledgeBase:
    """The company's documents as embedded passages in the database, searched hybrid."""

    def __init__(
        self,
        database: Database,
        settings: KnowledgeBaseSettings,
        encoder: Encoder | Callable[[], Encoder],
    ) -> None:
        self.database = database
        self.settings = settings
        self._encoder = encoder
        self.options = FusionOptions(
            keyword_weight=settings.keyword_weight,
            min_similarity=settings.min_similarity,
        )

    @classmethod
    def from_config(
        cls, config: Config, database: Database, *, encoder: Encoder | None = None
    ) -> KnowledgeBase:
        """A knowledge base over the configured encoder (loaded only once it is needed)."""
        limit = config.kb.max_tokens
        if encoder is not None:
            return cls(database, config.kb, encoder.with_max_tokens(limit))
        from mailbot.engine import ModelRegistry

        registry = ModelRegistry(config.models, config.models_path)
        return cls(database, config.kb, lambda: registry.encoder().with_max_tokens(limit))

    @property
    def encoder(self) -> Encoder:
        """The sentence encoder (loaded on first use)."""
        if callable(self._encoder):
            self._encoder = self._encoder()
        return self._encoder

    # -- adding and removing ---------------------------------------------------------------

    def add(
        self,
        paths: Iterable[Path],
        *,
        force: bool = False,
        on_file: Callable[[AddResult], None] | None = None,
    ) -> list[AddResult]:
        """Add files and folders; unchanged files are skipped, changed ones replaced.

        A missing path or an unsupported file named explicitly raises before anything is
        stored; a file that cannot be read is reported as "failed" and the rest go on.
        """
        files = collect_files(list(paths))
        results = []
        for path in files:
            result = self.add_file(path, force=force)
            results.append(result)
            if on_file is not None:
                on_file(result)
        # Documents not named here but embedded by another encoder follow the new one too.
        self.reembed()
        return results

    def add_file(self, path: Path, *, force: bool = False) -> AddResult:
        """Add or replace one file (in one transaction); see `add`."""
        source = str(path.resolve())
        try:
            loaded = load_document(path.resolve())
        except KnowledgeBaseError as exc:
            log.warning("knowledge base: %s", exc)
            return AddResult(source, "failed", error=str(exc))
        encoder = self.encoder
        with self.database.session() as session:
            existing = find_document(session, source)
            if (
                existing is not None
                and not force
                and existing.sha256 == loaded.sha256
                and existing.encoder_version == encoder.version
            ):
                return AddResult(
                    source, "unchanged", existing.id, existing.version, existing.passage_count
                )
        drafts = split_sections(loaded.sections, self.settings.passage_words)
        started = time.perf_counter()
        embeddings = encoder.embed([draft.embedding_text() for draft in drafts], role="passage")
        if any(embeddings.truncated):
            log.info(
                "%s: %d of %d passages were cut at the encoder's token limit",
                source,
                sum(embeddings.truncated),
                len(drafts),
            )
        with self.database.session() as session:
            row, created = save_document(
                session,
                loaded,
                drafts,
                embeddings.vectors,
                embeddings.token_counts,
                encoder=encoder.name,
                encoder_version=encoder.version,
            )
            result = AddResult(
                source, "added" if created else "updated", row.id, row.version, len(drafts)
            )
        log.info(
            "knowledge base: %s %s (version %d, %d passages, embedded in %.0f ms)",
            result.status,
            source,
            result.version,
            len(drafts),
            (time.perf_counter() - started) * 1000,
        )
        self._invalidate()
        return result

    def documents(self) -> list[DocumentInfo]:
        """Every stored document."""
        with self.database.session() as session:
            return list_documents(session)

    def remove(self, reference: str) -> list[DocumentInfo]:
        """Remove the document with this id or path, or every document under a folder."""
        with self.database.session() as session:
            rows = documents_matching(session, reference)
            if not rows:
                raise DocumentMissing(f"{reference}: no such document in the knowledge base")
            removed = [document_info(row) for row in rows]
            remove_documents(session, rows)
        self._invalidate()
        return removed

    def reembed(self) -> ReembedResult:
        """Re-embed, from their stored text, the documents another encoder embedded.

        One transaction per document; a document changed meanwhile by another process is
        left to that process. Returns what was done (nothing when all is current).
        """
        encoder = self.encoder
        started = time.perf_counter()
        with self.database.session() as session:
            stale = stale_documents(session, encoder.version)
        if not stale:
            return ReembedResult(0, 0, 0.0)
        before = sorted({f"{d.encoder} (version {d.encoder_version})" for d in stale})
        log.warning(
            "knowledge base: %d documents (%d passages) were embedded by %s; re-embedding "
            "them with %s (version %s), the configured encoder",
            len(stale), sum(d.passages for d in stale), ", ".join(before), encoder.name,
            encoder.version,
        )
        documents = passages = 0
        for document in stale:
            with self.database.session() as session:
                rows = passage_texts(session, document.id)
            texts = [PassageDraft(heading, text).embedding_text() for _, heading, text in rows]
            vectors = encoder.embed(texts, role="passage").vectors
            with self.database.session() as session:
                done = replace_vectors(session, document, [pid for pid, _, _ in rows], vectors,
                                       encoder=encoder.name, encoder_version=encoder.version)
            if done:
                documents, passages = documents + 1, passages + len(rows)
        seconds = time.perf_counter() - started
        log.info("knowledge base: re-embedded %d documents (%d passages) in %.1f s",
                 documents, passages, seconds)
        self._invalidate()
        return ReembedResult(documents, passages, seconds)

    # -- searching -------------------------------------------------------------------------

    def search(
        self, query: str, top_k: int | None = None, *, mode: SearchMode = "hybrid"
    ) -> list[Passage]:
        """The passages that best answer `query`, best first."""
        return self.search_many([query], top_k, mode=mode)[0]

    def search_many(
        self, queries: Sequence[str], top_k: int | None = None, *, mode: SearchMode = "hybrid"
    ) -> list[list[Passage]]:
        """`search` for several queries, with their embeddings computed in one batch."""
        queries = list(queries)
        if not queries:
            return []
        index = self.index()
        if not len(index):
            return [[] for _ in queries]
        # Embedded in keyword mode too, so every passage reports its real similarity.
        vectors = self.encoder.embed(queries, role="query").vectors
        return index.search_many(queries, vectors, top_k or self.settings.top_k, self.options, mode)

    def index(self) -> PassageIndex:
        """The in-memory index, rebuilt when the stored passages have changed."""
        encoder = self.encoder
        key = (self.database.url, encoder.version)
        now = time.monotonic()
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            fresh = cached is not None and now - cached.checked_at < self.settings.refresh_seconds
        if not fresh:
            self.reembed()  # outside the lock: it may take a while, and it invalidates
        with _CACHE_LOCK:
            cached = _CACHE.get(key)
            if cached is not None and now - cached.checked_at < self.settings.refresh_seconds:
                return cached.index
            with self.database.session() as session:
                signature = passages_signature(session)
                if cached is not None and cached.signature == signature:
                    cached.checked_at = now
                    return cached.index
                started = time.perf_counter()
                passages, matrix, stale = load_passages(session, encoder.version, encoder.dim)
            if stale:  # changed by another process since `reembed` above; next refresh
                log.info("knowledge base: %d passages of another encoder left out for now",
                         stale)
            index = PassageIndex(passages, matrix)
            _CACHE[key] = _CachedIndex(signature, index, now)
            log.debug(
                "knowledge base index: %d passages loaded in %.0f ms",
                len(index),
                (time.perf_counter() - started) * 1000,
            )
            return index

    def _invalidate(self) -> None:
        with _CACHE_LOCK:
            for key in [k for k in _CACHE if k[0] == self.database.url]:
                del _CACHE[key]
