"""The knowledge base: source documents and their embedded passages.

A document is one file, keyed by its absolute path. Re-adding a changed file replaces all of
its passages in one transaction and bumps `version`; the vectors are float32 bytes from the
encoder named in `encoder_version`, so a different encoder is detected rather than mixed in.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, UTCDateTime, utcnow


class KBDocument(Base):
    """One source file of the knowledge base (Markdown, text, HTML or PDF)."""

    __tablename__ = "kb_documents"
    __table_args__ = (UniqueConstraint("source"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    source: Mapped[str] = mapped_column(String(1024))
    title: Mapped[str] = mapped_column(String(500))
    media_type: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    version: Mapped[int] = mapped_column(Integer, default=1)
    passage_count: Mapped[int] = mapped_column(Integer, default=0)
    encoder: Mapped[str] = mapped_column(String(200))
    encoder_version: Mapped[str] = mapped_column(String(64))
    added_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class KBPassage(Base):
    """One passage of a document with its heading path and embedding."""

    __tablename__ = "kb_passages"
    __table_args__ = (
        UniqueConstraint("document_id", "position"),
        # Ids are never reused (SQLite would otherwise recycle the highest one), so
        # (count, max id) tells a process cheaply whether its in-memory index is stale.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    document_id: Mapped[int] = mapped_column(
        ForeignKey("kb_documents.id", ondelete="CASCADE"), index=True
    )
    position: Mapped[int] = mapped_column(Integer)
    heading_path: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int] = mapped_column(Integer)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
