"""The message ledger: mailbox sync state and message rows.

A message row is unique on (mailbox, UIDVALIDITY, UID), with its Message-ID, SHA-256, Date
and sender beside it so that a UIDVALIDITY change is re-matched (`mailbot.ingest.imap`).
The lease that keeps two pollers off one mailbox is in `mailbot.ingest.lease`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.db.base import utcnow
from mailbot.db.models import Account, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.outbox import OutboxEntry, OutboxState


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of raw bytes, as hex."""
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A fetched message, ready to be committed to the ledger."""

    uidvalidity: int
    uid: int
    raw: bytes | None  # None when the body was not fetched (over-size)
    size: int
    sha256: str
    message_id: str | None
    subject: str | None
    sender: str | None
    received_at: datetime | None
    status: MessageStatus = MessageStatus.FETCHED
    status_reason: str | None = None
    sent_at: datetime | None = None  # the Date header


def get_or_create_mailbox(session: Session, account_name: str, folder: str) -> Mailbox:
    """The mailbox row for an account's folder, created on first sight (two workers starting
    at once both find the one row: the loser of the insert reads the winner's)."""
    for _ in range(3):
        account = session.scalar(select(Account).where(Account.name == account_name))
        mailbox = None if account is None else session.scalar(
            select(Mailbox).where(Mailbox.account_id == account.id, Mailbox.name == folder))
        if mailbox is not None:
            return mailbox
        try:
            with session.begin_nested():
                if account is None:
                    account = Account(name=account_name, created_at=utcnow())
                    session.add(account)
                    session.flush()
                mailbox = Mailbox(account_id=account.id, name=folder, last_uid=0,
                                  consecutive_failures=0)
                session.add(mailbox)
                session.flush()
            return mailbox
        except IntegrityError:
            continue  # created meanwhile by another worker: read it
    raise RuntimeError(f"could not create the mailbox {account_name}/{folder}")


def add_messages(session: Session, mailbox: Mailbox, batch: Sequence[NewMessage]) -> list[Message]:
    """Commit-ready insert of fetched messages; advances the mailbox's last UID."""
    rows: list[Message] = []
    now = utcnow()
    for item in batch:
        row = Message(
            mailbox_id=mailbox.id,
            uidvalidity=item.uidvalidity,
            uid=item.uid,
            message_id=item.message_id,
            sha256=item.sha256,
            size=item.size,
            subject=item.subject,
            sender=item.sender,
            received_at=item.received_at,
            sent_at=item.sent_at,
            fetched_at=now,
            updated_at=now,
            status=item.status,
            status_reason=item.status_reason,
            server_action_done=False,
        )
        session.add(row)
        rows.append(row)
    session.flush()
    for item, row in zip(batch, rows, strict=True):
        if item.raw is not None:
            session.add(RawMessage(message_pk=row.id, raw=item.raw))
        details: dict[str, Any] = {"uid": item.uid, "uidvalidity": item.uidvalidity}
        if item.status_reason:
            details["reason"] = item.status_reason
        outcome = "ok" if item.status == MessageStatus.FETCHED else str(item.status)
        record_event(session, "fetch", outcome, message_pk=row.id, mailbox_id=mailbox.id,
                     details=details)
    if batch:
        mailbox.last_uid = max(mailbox.last_uid, max(item.uid for item in batch))
    return rows


def rematch(session: Session, message: Message, uidvalidity: int, uid: int) -> None:
    """Point a known message at its new (UIDVALIDITY, UID) after a UIDVALIDITY change."""
    old = {"uidvalidity": message.uidvalidity, "uid": message.uid}
    message.uidvalidity = uidvalidity
    message.uid = uid
    record_event(
        session,
        "fetch",
        "rematched",
        message_pk=message.id,
        mailbox_id=message.mailbox_id,
        details={"old": old, "new": {"uidvalidity": uidvalidity, "uid": uid}},
    )


def record_poll_success(session: Session, mailbox_id: int) -> None:
    now = utcnow()
    session.execute(
        update(Mailbox)
        .where(Mailbox.id == mailbox_id)
        .values(last_poll_at=now, last_success_at=now, consecutive_failures=0, last_error=None)
    )


def record_poll_failure(session: Session, mailbox_id: int, error: str) -> None:
    now = utcnow()
    session.execute(
        update(Mailbox)
        .where(Mailbox.id == mailbox_id)
        .values(
            last_poll_at=now,
            last_error=error,
            last_error_at=now,
            consecutive_failures=Mailbox.consecutive_failures + 1,
        )
    )
    record_event(session, "poll", "error", mailbox_id=mailbox_id, details={"error": error})


@dataclass(frozen=True, slots=True)
class MailboxStatus:
    """One line of `mailbot status`."""

    account: str
    mailbox: str
    uidvalidity: int | None
    last_uid: int
    last_poll_at: datetime | None
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    consecutive_failures: int
    lease_owner: str | None
    counts: dict[str, int]
    # Quarantined messages ({"id", "subject", "reason"}, newest first, at most 20) and
    # outbox actions given up ({"kind", "error"}): what an admin must look at.
    quarantined: list[dict[str, Any]] = field(default_factory=list)
    outbox_failed: list[dict[str, Any]] = field(default_factory=list)


def mailbox_statuses(session: Session) -> list[MailboxStatus]:
    """Every mailbox's sync state, message counts and problems, for `mailbot status`."""
    quarantined: dict[int, list[dict[str, Any]]] = {}
    for mailbox_id, pk, subject, reason in session.execute(
        select(Message.mailbox_id, Message.id, Message.subject, Message.status_reason)
        .where(Message.status == MessageStatus.QUARANTINED).order_by(Message.id.desc())
        .limit(200)
    ):
        quarantined.setdefault(mailbox_id, []).append(
            {"id": pk, "subject": subject, "reason": reason})
    failed: dict[int, list[dict[str, Any]]] = {}
    for mailbox_id, kind, error in session.execute(
        select(OutboxEntry.mailbox_id, OutboxEntry.kind, OutboxEntry.last_error)
        .where(OutboxEntry.state.in_([OutboxState.FAILED, OutboxState.UNCERTAIN]))
        .order_by(OutboxEntry.id.desc()).limit(200)
    ):
        failed.setdefault(mailbox_id, []).append({"kind": kind, "error": error})
    counts: dict[int, dict[str, int]] = {}
    for mailbox_id, status, n in session.execute(
        select(Message.mailbox_id, Message.status, func.count()).group_by(
            Message.mailbox_id, Message.status
        )
    ):
        counts.setdefault(mailbox_id, {})[status] = n
    now = utcnow()
    result = []
    for mailbox, account_name in session.execute(
        select(Mailbox, Account.name)
        .join(Account, Account.id == Mailbox.account_id)
        .order_by(Account.name, Mailbox.name)
    ):
        live_lease = mailbox.lease_expires_at is not None and mailbox.lease_expires_at > now
        result.append(
            MailboxStatus(
                account=account_name,
                mailbox=mailbox.name,
                uidvalidity=mailbox.uidvalidity,
                last_uid=mailbox.last_uid,
                last_poll_at=mailbox.last_poll_at,
                last_success_at=mailbox.last_success_at,
                last_error=mailbox.last_error,
                last_error_at=mailbox.last_error_at,
                consecutive_failures=mailbox.consecutive_failures,
                lease_owner=mailbox.lease_owner if live_lease else None,
                counts=counts.get(mailbox.id, {}),
                quarantined=quarantined.get(mailbox.id, [])[:20],
                outbox_failed=failed.get(mailbox.id, [])[:20],
            )
        )
    return result


__all__ = [
    "MailboxStatus",
    "NewMessage",
    "add_messages",
    "get_or_create_mailbox",
    "mailbox_statuses",
    "record_poll_failure",
    "record_poll_success",
    "rematch",
    "sha256_hex",
]
