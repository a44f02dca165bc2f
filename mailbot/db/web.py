"""The review desk's own tables: who may log in, and who is answering which message."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, SafeString, UTCDateTime, utcnow


class Role(StrEnum):
    """What a desk user may do: agents work the queue, managers also see every mailbox,
    admins also manage users."""

    AGENT = "agent"
    MANAGER = "manager"
    ADMIN = "admin"

    @property
    def rank(self) -> int:
        return {Role.AGENT: 0, Role.MANAGER: 1, Role.ADMIN: 2}[self]


class WebUser(Base):
    """One person who logs in to the desk."""

    __tablename__ = "web_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[str] = mapped_column(String(16), default=Role.AGENT)
    password_hash: Mapped[str] = mapped_column(String(400))
    # Raised when the password changes: sessions made before it end.
    session_epoch: Mapped[int] = mapped_column(Integer, default=0)
    # Mailboxes ("account/folder") an agent works; empty = all of them.
    mailboxes: Mapped[str] = mapped_column(SafeString(4000), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ReviewClaim(Base):
    """An agent working on a message: others see it and cannot send until it is released
    (by hand, by the send, or when it expires)."""

    __tablename__ = "review_claims"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    agent: Mapped[str] = mapped_column(String(200))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ReviewIndex(Base):
    """What the queue filters on, copied once from a message's events (intent, language,
    the first route reason) and kept up to date with agents' corrections."""

    __tablename__ = "review_index"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    intent: Mapped[str | None] = mapped_column(String(100))
    priority: Mapped[str | None] = mapped_column(String(32))
    language: Mapped[str | None] = mapped_column(String(16))
    route_reason: Mapped[str | None] = mapped_column(String(64))


class LoginFailure(Base):
    """One failed desk login (per user name and per client address), kept while it counts:
    every desk process (the production server runs several) sees the same failures."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key_failed_at", "key", "failed_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    key: Mapped[str] = mapped_column(String(300))
    failed_at: Mapped[datetime] = mapped_column(UTCDateTime)
