"""Records of the cloud LLM's work: its answers kept as teacher labels for the small model.

Every escalated message's LLM answers (intent, priority, sentiment, language, fields, reply)
are stored here, one row per (message, kind), with the exact text the LLM saw, so that they
can be exported as training data (`text,label`) and marked once a model was trained on them.
The full request and response stay in the append-only `events` table.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, JSONType, UTCDateTime, utcnow


class TeacherLabel(Base):
    """One answer of the cloud LLM about one message, kept to train the small model."""

    __tablename__ = "teacher_labels"
    __table_args__ = (
        UniqueConstraint("message_pk", "kind"),
        Index("ix_teacher_labels_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    # "intent", "priority", "sentiment", "language", "fields" or "reply".
    kind: Mapped[str] = mapped_column(String(32))
    # The label for the classification kinds; None for "fields" and "reply".
    label: Mapped[str | None] = mapped_column(String(200))
    # The whole answer for this kind: {"label": ...}, the fields, or {"text": reply}.
    value: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The customer's text exactly as the LLM saw it (already pseudonymised).
    input_text: Mapped[str] = mapped_column(Text)
    confidence: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The version of the small model first trained with this label; None = not used yet.
    used_in_training_version: Mapped[str | None] = mapped_column(String(64))
