"""The message ledger: mailbox sync state, leases, message rows and audit events.

All writes go through here so that the rules of the ledger live in one place:
a message row is unique on (mailbox, UIDVALIDITY, UID); the events table is only appended to;
a mailbox is polled by one worker at a time (a lease row, taken with one conditional UPDATE).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.models import Account, Event, Mailbox, Message, MessageStatus, RawMessage

# The pipeline commits each message's whole pass in one transaction, so any status other
# than FETCHED means the pipeline is done with it and the server-side action may follow.


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def worker_identity() -> str:
    """Who holds a lease: host and pid, so a dead holder on this host can be recognised."""
    return f"{socket.gethostname()}:{os.getpid()}"


def _holder_is_dead(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


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


def record_event(
    session: Session,
    stage: str,
    outcome: str,
    *,
    message_pk: int | None = None,
    mailbox_id: int | None = None,
    details: dict[str, Any] | None = None,
    model: str | None = None,
    model_version: str | None = None,
    latency_ms: float | None = None,
    tokens_in: int | None = None,
    tokens_out: int | None = None,
    cost: float | None = None,
    actor: str = "worker",
) -> Event:
    """Append one audit event."""
    event = Event(
        message_pk=message_pk,
        mailbox_id=mailbox_id,
        stage=stage,
        outcome=outcome,
        details=details or {},
        model=model,
        model_version=model_version,
        latency_ms=latency_ms,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        cost=cost,
        actor=actor,
        created_at=utcnow(),
    )
    session.add(event)
    return event


def get_or_create_mailbox(session: Session, account_name: str, folder: str) -> Mailbox:
    """The mailbox row for an account's folder, created on first sight."""
    account = session.scalar(select(Account).where(Account.name == account_name))
    if account is None:
        account = Account(name=account_name, created_at=utcnow())
        session.add(account)
        session.flush()
    mailbox = session.scalar(
        select(Mailbox).where(Mailbox.account_id == account.id, Mailbox.name == folder)
    )
    if mailbox is None:
        mailbox = Mailbox(account_id=account.id, name=folder, last_uid=0, consecutive_failures=0)
        session.add(mailbox)
        session.flush()
    return mailbox


def acquire_lease(session: Session, mailbox_id: int, owner: str, seconds: float) -> bool:
    """Take or renew the mailbox lease; False while another live worker holds it."""
    now = utcnow()
    until = now + timedelta(seconds=seconds)
    claimed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Mailbox)
        .where(
            Mailbox.id == mailbox_id,
            or_(
                Mailbox.lease_owner.is_(None),
                Mailbox.lease_owner == owner,
                Mailbox.lease_expires_at < now,
            ),
        )
        .values(lease_owner=owner, lease_expires_at=until)
    )
    if claimed.rowcount == 1:
        return True
    holder = session.scalar(select(Mailbox.lease_owner).where(Mailbox.id == mailbox_id))
    if holder and _holder_is_dead(holder):
        taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
            update(Mailbox)
            .where(Mailbox.id == mailbox_id, Mailbox.lease_owner == holder)
            .values(lease_owner=owner, lease_expires_at=until)
        )
        return taken.rowcount == 1
    return False


def release_lease(session: Session, mailbox_id: int, owner: str) -> None:
    session.execute(
        update(Mailbox)
        .where(Mailbox.id == mailbox_id, Mailbox.lease_owner == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


def lease_holder(session: Session, mailbox_id: int) -> tuple[str | None, datetime | None]:
    row = session.execute(
        select(Mailbox.lease_owner, Mailbox.lease_expires_at).where(Mailbox.id == mailbox_id)
    ).one()
    return row[0], row[1]


def find_known(
    session: Session, mailbox_id: int, sha256: str, message_id: str | None
) -> Message | None:
    """A message already in the ledger with the same bytes (any UIDVALIDITY)."""
    query = select(Message).where(Message.mailbox_id == mailbox_id, Message.sha256 == sha256)
    if message_id:
        # Prefer the row whose Message-ID agrees too; a hash match alone also counts.
        query = query.order_by((Message.message_id == message_id).desc(), Message.id)
    return session.scalars(query.limit(1)).first()


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


def pending_messages(
    session: Session, mailbox_id: int | None = None, limit: int = 100
) -> list[int]:
    """Messages that still have pipeline work to do, oldest first."""
    query = select(Message.id).where(Message.status == MessageStatus.FETCHED)
    if mailbox_id is not None:
        query = query.where(Message.mailbox_id == mailbox_id)
    return list(session.scalars(query.order_by(Message.id).limit(limit)))


def awaiting_server_action(session: Session, mailbox: Mailbox) -> list[Message]:
    """Settled messages of the current UIDVALIDITY whose flag/move is not yet done."""
    return list(
        session.scalars(
            select(Message)
            .where(
                Message.mailbox_id == mailbox.id,
                Message.uidvalidity == mailbox.uidvalidity,
                Message.server_action_done.is_(False),
                Message.status != MessageStatus.FETCHED,
            )
            .order_by(Message.uid)
        )
    )


def mark_server_action_done(session: Session, message_pks: Iterable[int]) -> None:
    ids = list(message_pks)
    if ids:
        session.execute(
            update(Message).where(Message.id.in_(ids)).values(server_action_done=True)
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


def mailbox_statuses(session: Session) -> list[MailboxStatus]:
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
            )
        )
    return result


__all__ = [
    "MailboxStatus",
    "NewMessage",
    "acquire_lease",
    "add_messages",
    "awaiting_server_action",
    "find_known",
    "get_or_create_mailbox",
    "mailbox_statuses",
    "mark_server_action_done",
    "pending_messages",
    "record_event",
    "record_poll_failure",
    "record_poll_success",
    "rematch",
    "release_lease",
    "sha256_hex",
    "worker_identity",
]
