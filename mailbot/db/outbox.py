"""The outbox: every external effect as a row, written with the state change that calls for it.

A row names what to do (`kind`: a draft to APPEND, a message to flag or move, a reply to
send), on which mailbox's account, and carries an idempotency `key` (the draft token, the
outgoing Message-ID) so that it exists once. A drainer claims it, performs it, and records
the result; after a crash it checks the server before doing anything a second time.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, JSONType, SafeText, UTCDateTime, utcnow


class OutboxKind(StrEnum):
    """What an outbox row does."""

    APPEND_DRAFT = "append_draft"  # the reply into the Drafts folder, with \\Draft
    FLAG = "flag"  # add a keyword to the message (processed or needs-a-person)
    MOVE = "move"  # move the message to another folder
    SEND = "send"  # send a reply over SMTP, then file the copy in Sent, remove the draft
    REMOVE_DRAFT = "remove_draft"  # a draft that will not be sent out of the Drafts folder


class OutboxState(StrEnum):
    """Where an outbox row stands."""

    PENDING = "pending"  # waiting for a drainer (again, after a failed attempt)
    RUNNING = "running"  # claimed; after a crash the server is checked before a retry
    DONE = "done"
    FAILED = "failed"  # gave up after `worker.max_attempts`; the reason is in last_error
    UNCERTAIN = "uncertain"  # a send that may have happened; a person decides


class OutboxEntry(Base):
    """One external effect and what became of it."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_mailbox_id_state", "mailbox_id", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id"))
    kind: Mapped[str] = mapped_column(String(32))
    key: Mapped[str] = mapped_column(String(1000), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    state: Mapped[str] = mapped_column(String(16), default=OutboxState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(SafeText)
    result: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
