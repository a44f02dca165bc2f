"""Tables of the ledger and the audit log.

- `accounts` and `mailboxes`: sync state per IMAP folder (UIDVALIDITY, last UID, last poll,
  last error) and the lease that keeps two workers off one mailbox.
- `messages`: one row per fetched email, unique on (mailbox, UIDVALIDITY, UID), with the
  Message-ID and SHA-256 of the raw bytes kept as a backstop identity, and a current status.
- `raw_messages`: the raw bytes, apart so that queries over `messages` stay light.
- `events`: the append-only audit log; one row per step, never updated or deleted.

Later stages add their own records (classifications, extractions, drafts, reviews) in their
own tables that reference `messages.id`, each with its own migration.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from mailbot.db.base import Base, JSONType, SafeString, SafeText, UTCDateTime, utcnow


class MessageStatus(StrEnum):
    """Where a message stands; it only moves forward, each move an audit event."""

    FETCHED = "fetched"  # committed to the ledger, not yet processed
    PARSED = "parsed"  # parsed; no later stage is configured (classifier off)
    SKIPPED = "skipped"  # never to be answered automatically (auto-reply, bounce, own mail)
    FAILED = "failed"  # could not be parsed; the reason is recorded
    QUARANTINED = "quarantined"  # failed `worker.max_attempts` times; the reason is recorded
    CLASSIFIED = "classified"
    ROUTED = "routed"  # on its way to a draft (small model or cloud LLM)
    ESCALATING = "escalating"  # waiting for the cloud LLM's answer (llm_requests)
    NEEDS_HUMAN = "needs_human"  # no automatic draft: a person must answer (see status_reason)
    DRAFTED = "drafted"
    DONE = "done"
    # The review desk's side: a reply on its way and what became of it.
    SENDING = "sending"  # an agent approved a reply; the outbox sends it
    SENT = "sent"
    SEND_FAILED = "send_failed"  # the relay refused it, or it failed every attempt
    SEND_UNCERTAIN = "send_uncertain"  # it may have gone out; a person checks and decides
    REJECTED = "rejected"  # an agent rejected the draft with a reason
    HANDLED_ELSEWHERE = "handled_elsewhere"  # answered outside mailbot, or no answer needed


# Statuses that need a person's attention: this mail stays where agents look.
ATTENTION_STATUSES = frozenset({MessageStatus.NEEDS_HUMAN, MessageStatus.FAILED,
                                MessageStatus.QUARANTINED})


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    mailboxes: Mapped[list[Mailbox]] = relationship(back_populates="account")


class Mailbox(Base):
    __tablename__ = "mailboxes"
    __table_args__ = (UniqueConstraint("account_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(1000))
    uidvalidity: Mapped[int | None] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    last_poll_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_success_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(SafeText)
    last_error_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    consecutive_failures: Mapped[int] = mapped_column(Integer, default=0)
    lease_owner: Mapped[str | None] = mapped_column(String(200))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The fencing token: raised at every take-over, so a worker that lost the lease (and
    # still thinks it holds it) cannot commit.
    lease_epoch: Mapped[int] = mapped_column(BigInteger, default=0)

    account: Mapped[Account] = relationship(back_populates="mailboxes")


class Message(Base):
    __tablename__ = "messages"
    __table_args__ = (
        UniqueConstraint("mailbox_id", "uidvalidity", "uid"),
        Index("ix_messages_mailbox_sha256", "mailbox_id", "sha256"),
        Index("ix_messages_mailbox_message_id", "mailbox_id", "message_id"),
        Index("ix_messages_mailbox_body_hash", "mailbox_id", "body_hash"),
        # The arrival day the managers' views group by (migration 0011 writes it per
        # dialect; SQLite's is `date(COALESCE(received_at, fetched_at))`).
        Index("ix_messages_day",
              text("CAST(timezone('UTC', COALESCE(received_at, fetched_at)) AS DATE)"),
              "mailbox_id").ddl_if(dialect="postgresql"),
        Index("ix_messages_status_fetched_at", "status", "fetched_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    mailbox_id: Mapped[int] = mapped_column(ForeignKey("mailboxes.id", ondelete="CASCADE"))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    uid: Mapped[int] = mapped_column(BigInteger)
    message_id: Mapped[str | None] = mapped_column(SafeString(998))
    sha256: Mapped[str] = mapped_column(String(64))
    # The identity that survives a server migration which rewrites the bytes: the Date
    # header and a hash of the decoded, whitespace-normalised text (ingest.identity).
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    body_hash: Mapped[str | None] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(Integer)
    subject: Mapped[str | None] = mapped_column(SafeText)
    sender: Mapped[str | None] = mapped_column(SafeString(998))
    received_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[str] = mapped_column(String(32), default=MessageStatus.FETCHED, index=True)
    status_reason: Mapped[str | None] = mapped_column(SafeText)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Whether the server-side action (flag/move) has been queued in the outbox.
    server_action_done: Mapped[bool] = mapped_column(default=False)
    # Pipeline work is claimed per message (several workers share one mailbox); a claim that
    # outlives its holder expires. A failing message is retried `worker.max_attempts` times.
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    claim_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    retry_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(SafeText)
    # Set when personal data was removed (retention or `mailbot erase`); the row stays.
    erased_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    mailbox: Mapped[Mailbox] = relationship()


class RawMessage(Base):
    __tablename__ = "raw_messages"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    raw: Mapped[bytes] = mapped_column(LargeBinary)


class MessageFacts(Base):
    """What the stages found about one message that is personal data (field values, the
    generator's text, a held-back draft), kept apart from the append-only `events` so that
    retention and erasure can remove it while the audit trail keeps its shape."""

    __tablename__ = "message_facts"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Event(Base):
    """One step of one message (or of a mailbox), appended and never changed.

    Events hold no personal data (that lives in `message_facts`, `drafts`, `llm_requests`),
    so the database can refuse every change to them and erasure still works.
    """

    __tablename__ = "events"
    __table_args__ = (
        # The managers' views (migration 0011) read events per message and per stage.
        Index("ix_events_message_pk_stage", "message_pk", "stage",
              postgresql_include=["outcome", "cost", "tokens_in", "tokens_out"]),
        Index("ix_events_stage_outcome", "stage", "outcome"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    message_pk: Mapped[int | None] = mapped_column(ForeignKey("messages.id"), index=True)
    mailbox_id: Mapped[int | None] = mapped_column(ForeignKey("mailboxes.id"), index=True)
    stage: Mapped[str] = mapped_column(String(64), index=True)
    outcome: Mapped[str] = mapped_column(String(64))
    details: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    model: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float | None] = mapped_column(Float)
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    cost: Mapped[float | None] = mapped_column(Float)
    actor: Mapped[str] = mapped_column(String(200), default="worker")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
