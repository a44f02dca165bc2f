"""Drafted replies: what was written, from what, and whether it reached the Drafts folder."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, JSONType, SafeText, UTCDateTime, utcnow


class DraftRecord(Base):
    """One drafted reply to one message.

    `token` is also written into the reply as a header, so that the worker can find a draft
    it already appended (after a crash) instead of appending a second one.
    """

    __tablename__ = "drafts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), unique=True
    )
    token: Mapped[str] = mapped_column(String(64), unique=True)
    reply_message_id: Mapped[str] = mapped_column(String(998))
    template: Mapped[str | None] = mapped_column(String(400))
    language: Mapped[str | None] = mapped_column(String(16))
    subject: Mapped[str] = mapped_column(SafeText)
    body: Mapped[str] = mapped_column(SafeText)
    mime: Mapped[bytes] = mapped_column(LargeBinary)
    fields: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    passages: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    gates: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    model: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(200))
    needs_review: Mapped[bool] = mapped_column(Boolean, default=False)
    review_reasons: Mapped[list[Any]] = mapped_column(JSONType, default=list)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    drafts_folder: Mapped[str | None] = mapped_column(String(1000))
    drafts_uid: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
