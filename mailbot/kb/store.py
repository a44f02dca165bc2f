"""Reading and writing the knowledge base tables (kb_documents, kb_passages)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.kb_models import KBDocument, KBPassage
from mailbot.kb.index import IndexedPassage
from mailbot.kb.loaders import LoadedDocument
from mailbot.kb.split import PassageDraft


@dataclass(frozen=True, slots=True)
class DocumentInfo:
    """A stored document as `kb list` shows it."""

    id: int
    source: str
    title: str
    media_type: str
    version: int
    passages: int
    sha256: str
    encoder: str
    encoder_version: str
    added_at: datetime
    updated_at: datetime


def document_info(row: KBDocument) -> DocumentInfo:
    """The plain-data view of a document row."""
    return DocumentInfo(
        id=row.id,
        source=row.source,
        title=row.title,
        media_type=row.media_type,
        version=row.version,
        passages=row.passage_count,
        sha256=row.sha256,
        encoder=row.encoder,
        encoder_version=row.encoder_version,
        added_at=row.added_at,
        updated_at=row.updated_at,
    )


def find_document(session: Session, source: str) -> KBDocument | None:
    """The document stored for this absolute path, if any."""
    return session.scalars(select(KBDocument).where(KBDocument.source == source)).one_or_none()


def save_document(
    session: Session,
    loaded: LoadedDocument,
    drafts: list[PassageDraft],
    vectors: np.ndarray,
    token_counts: tuple[int, ...],
    *,
    encoder: str,
    encoder_version: str,
) -> tuple[KBDocument, bool]:
    """Store a document's passages, replacing any earlier version; returns (row, was_new)."""
    source = str(loaded.path)
    now = utcnow()
    row = find_document(session, source)
    created = row is None
    if row is None:
        row = KBDocument(source=source, version=1, added_at=now)
        session.add(row)
    else:
        session.execute(delete(KBPassage).where(KBPassage.document_id == row.id))
        row.version += 1
    row.title = loaded.title[:500]
    row.media_type = loaded.media_type
    row.sha256 = loaded.sha256
    row.size_bytes = loaded.size_bytes
    row.passage_count = len(drafts)
    row.encoder = encoder
    row.encoder_version = encoder_version
    row.updated_at = now
    session.flush()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    session.add_all(
        KBPassage(
            document_id=row.id,
            position=position,
            heading_path=draft.heading_path,
            text=draft.text,
            token_count=tokens,
            vector=vectors[position].tobytes(),
        )
        for position, (draft, tokens) in enumerate(zip(drafts, token_counts, strict=True))
    )
    return row, created


def list_documents(session: Session) -> list[DocumentInfo]:
    """Every stored document, by source path."""
    rows = session.scalars(select(KBDocument).order_by(KBDocument.source)).all()
    return [document_info(row) for row in rows]


def documents_matching(session: Session, reference: str) -> list[KBDocument]:
    """Documents named by an id, a file path, or a folder path (everything under it)."""
    if reference.isdigit():
        row = session.get(KBDocument, int(reference))
        if row is not None:
            return [row]
    source = str(Path(reference).expanduser().resolve())
    prefix = source.rstrip(os.sep) + os.sep
    rows = session.scalars(
        select(KBDocument).where(
            (KBDocument.source == source) | KBDocument.source.startswith(prefix, autoescape=True)
        )
    ).all()
    return list(rows)


def remove_documents(session: Session, rows: list[KBDocument]) -> None:
    """Delete documents and their passages."""
    ids = [row.id for row in rows]
    session.execute(delete(KBPassage).where(KBPassage.document_id.in_(ids)))
    session.execute(delete(KBDocument).where(KBDocument.id.in_(ids)))


def passages_signature(session: Session) -> tuple[int, int, str]:
    """(count, highest id, latest update) of the passages: changes with every write.

    Passage ids are never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL), so an
    add raises the highest id and a remove lowers the count; re-embedding a document with
    another encoder keeps its passages and moves its `updated_at`.
    """
    count, highest = session.execute(select(func.count(KBPassage.id), func.max(KBPassage.id))).one()
    latest = session.scalar(select(func.max(KBDocument.updated_at)))
    return int(count or 0), int(highest or 0), str(latest or "")


@dataclass(frozen=True, slots=True)
class StaleDocument:
    """A document whose vectors another encoder made."""

    id: int
    source: str
    version: int
    encoder: str
    encoder_version: str
    passages: int


def stale_documents(session: Session, encoder_version: str) -> list[StaleDocument]:
    """Documents whose passages were embedded by an encoder other than this version."""
    rows = session.scalars(
        select(KBDocument)
        .where(KBDocument.encoder_version != encoder_version)
        .order_by(KBDocument.id)
    ).all()
    return [StaleDocument(r.id, r.source, r.version, r.encoder, r.encoder_version,
                          r.passage_count) for r in rows]


def passage_texts(session: Session, document_id: int) -> list[tuple[int, str, str]]:
    """(id, heading path, text) of a document's passages, in order."""
    rows = session.execute(
        select(KBPassage.id, KBPassage.heading_path, KBPassage.text)
        .where(KBPassage.document_id == document_id)
        .order_by(KBPassage.position)
    ).all()
    return [(int(pid), heading, text) for pid, heading, text in rows]


def replace_vectors(
    session: Session,
    stale: StaleDocument,
    passage_ids: list[int],
    vectors: np.ndarray,
    *,
    encoder: str,
    encoder_version: str,
) -> bool:
    """Store a document's vectors from another encoder; False if it changed meanwhile.

    The document row is claimed with a conditional UPDATE (same version, still the old
    encoder), so a concurrent `kb add` of a new version, or another process re-embedding
    the same document, is never overwritten with stale vectors.
    """
    claimed = session.execute(
        update(KBDocument)
        .where(
            KBDocument.id == stale.id,
            KBDocument.version == stale.version,
            KBDocument.encoder_version == stale.encoder_version,
        )
        .values(encoder=encoder, encoder_version=encoder_version, updated_at=utcnow())
    )
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    for pid, vector in zip(passage_ids, vectors, strict=True):
        session.execute(
            update(KBPassage).where(KBPassage.id == pid).values(vector=vector.tobytes())
        )
    return True


def load_passages(
    session: Session, encoder_version: str, dim: int
) -> tuple[list[IndexedPassage], np.ndarray, int]:
    """Passages embedded by this encoder version with their vectors; also how many were not."""
    query = (
        select(
            KBPassage.id,
            KBPassage.document_id,
            KBDocument.source,
            KBPassage.heading_path,
            KBPassage.text,
            KBDocument.version,
            KBPassage.vector,
        )
        .join(KBDocument, KBDocument.id == KBPassage.document_id)
        .where(KBDocument.encoder_version == encoder_version)
        .order_by(KBPassage.id)
    )
    passages: list[IndexedPassage] = []
    blobs: list[bytes] = []
    width = dim * 4
    for pid, doc_id, source, heading, text, version, vector in session.execute(query):
        if len(vector) != width:
            continue
        passages.append(IndexedPassage(pid, doc_id, source, heading, text, version))
        blobs.append(vector)
    matrix = np.frombuffer(b"".join(blobs), dtype=np.float32).reshape(len(blobs), dim)
    other = session.scalar(
        select(func.count(KBPassage.id))
        .join(KBDocument, KBDocument.id == KBPassage.document_id)
        .where(KBDocument.encoder_version != encoder_version)
    )
    return passages, matrix, int(other or 0)
