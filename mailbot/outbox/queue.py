"""Writing outbox rows with the state change that calls for them, and claiming them.

`enqueue_*` run inside the transaction that settles a message, so the effect and the state
change commit together or not at all. `claim` hands a drainer the rows it may perform; a
row another drainer holds is skipped (`FOR UPDATE SKIP LOCKED` on PostgreSQL), one whose
holder died is taken over once its claim expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.models import ATTENTION_STATUSES, Message, MessageStatus
from mailbot.db.outbox import OutboxEntry, OutboxKind, OutboxState

if TYPE_CHECKING:
    from mailbot.config import AccountSettings
    from mailbot.db.drafts import DraftRecord


@dataclass(frozen=True, slots=True)
class Job:
    """One claimed outbox row, detached from its session."""

    id: int
    kind: str
    key: str
    message_pk: int | None
    mailbox_id: int
    payload: dict[str, Any]
    attempts: int  # started before this one: more than 0 means check the server first


def enqueue(
    session: Session,
    *,
    kind: OutboxKind,
    key: str,
    mailbox_id: int,
    message_pk: int | None,
    payload: dict[str, Any],
) -> OutboxEntry | None:
    """Add an outbox row unless one with the same idempotency key exists; returns it."""
    if session.scalar(select(OutboxEntry.id).where(OutboxEntry.key == key)) is not None:
        return None
    entry = OutboxEntry(kind=kind, key=key, mailbox_id=mailbox_id, message_pk=message_pk,
                        payload=payload, state=OutboxState.PENDING, attempts=0,
                        created_at=utcnow(), result={})
    session.add(entry)
    return entry


def enqueue_draft(session: Session, message: Message, draft: DraftRecord, folder: str) -> None:
    """The draft into the account's Drafts folder (`folder` empty: found by SPECIAL-USE)."""
    enqueue(session, kind=OutboxKind.APPEND_DRAFT, key=f"draft:{draft.token}",
            mailbox_id=message.mailbox_id, message_pk=message.id,
            payload={"draft_id": draft.id, "token": draft.token, "folder": folder})


def enqueue_draft_removal(session: Session, message: Message, draft: DraftRecord,
                          account: str, folder: str) -> OutboxEntry | None:
    """The draft out of the Drafts folder: it will not be sent (rejected, handled elsewhere,
    replaced by a new one). A delivery not begun yet is dropped instead."""
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.key == f"draft:{draft.token}", OutboxEntry.state == OutboxState.PENDING,
               OutboxEntry.attempts == 0)
        .values(state=OutboxState.DONE, done_at=utcnow(),
                result={"skipped": "the draft was withdrawn before it was delivered"}))
    # Removed even when never delivered: an attempt may have appended it before it failed,
    # and removing an absent draft does nothing.
    return enqueue(session, kind=OutboxKind.REMOVE_DRAFT, key=f"undraft:{draft.token}",
                   mailbox_id=message.mailbox_id, message_pk=message.id,
                   payload={"draft_id": draft.id, "token": draft.token, "account": account,
                            "folder": folder})


def server_action(account: AccountSettings, status: str) -> tuple[str, str] | None:
    """The action for a message with this status: (kind, flag or folder), or None.

    Mail a person must handle (needs a person, failed, quarantined) gets the account's
    attention action, by default none: it stays where agents look. Everything else gets the
    processed action once mailbot is done with it.
    """
    if status in (MessageStatus.FETCHED, MessageStatus.ESCALATING, MessageStatus.ROUTED):
        return None
    if status in ATTENTION_STATUSES:
        action = account.attention_action
        target = account.attention_flag if action == "flag" else account.attention_folder
    else:
        action = account.processed_action
        target = account.processed_flag if action == "flag" else account.processed_folder
    if action == "none":
        return None
    return action, target


def enqueue_server_action(session: Session, message: Message, account: AccountSettings) -> None:
    """Queue the flag or move the message's status calls for (once per message)."""
    found = server_action(account, message.status)
    message.server_action_done = True
    if found is None:
        return
    action, target = found
    kind = OutboxKind.FLAG if action == "flag" else OutboxKind.MOVE
    payload = {"flag": target} if kind == OutboxKind.FLAG else {"folder": target}
    # Per UIDVALIDITY: a message re-matched after a server migration gets the action again.
    enqueue(session, kind=kind, key=f"{kind}:{message.id}:{message.uidvalidity}",
            mailbox_id=message.mailbox_id, message_pk=message.id, payload=payload)


def claim(
    session: Session,
    owner: str,
    *,
    mailbox_id: int | None = None,
    kinds: Sequence[str] | None = None,
    limit: int = 100,
    seconds: float = 300.0,
    now: datetime | None = None,
) -> list[Job]:
    """Claim up to `limit` rows that are due; each is then this owner's to perform."""
    now = now or utcnow()
    _release_dead(session, owner, mailbox_id)
    query = select(OutboxEntry).where(_due(now, owner))
    if mailbox_id is not None:
        query = query.where(OutboxEntry.mailbox_id == mailbox_id)
    if kinds is not None:
        query = query.where(OutboxEntry.kind.in_(list(kinds)))
    rows = session.scalars(
        query.order_by(OutboxEntry.id).limit(limit).with_for_update(skip_locked=True)
    ).all()
    jobs = []
    for row in rows:
        # Counted when started: a row started before (and not completed) may have had its
        # effect already, so the drainer checks the server before doing it again.
        jobs.append(Job(row.id, row.kind, row.key, row.message_pk, row.mailbox_id,
                        dict(row.payload or {}), row.attempts))
        row.attempts += 1
        row.state = OutboxState.RUNNING
        row.claimed_by = owner
        row.claim_expires_at = now + timedelta(seconds=seconds)
    return jobs


def _release_dead(session: Session, owner: str, mailbox_id: int | None) -> None:
    # A drainer that died on this machine: its rows are taken over at once (and, having
    # been started, are checked on the server before they are done again).
    from mailbot.ingest.lease import holder_is_dead

    query = select(OutboxEntry.claimed_by).where(OutboxEntry.state == OutboxState.RUNNING,
                                                 OutboxEntry.claimed_by != owner)
    if mailbox_id is not None:
        query = query.where(OutboxEntry.mailbox_id == mailbox_id)
    dead = [h for h in session.scalars(query.distinct()) if h and holder_is_dead(h)]
    if dead:
        session.execute(update(OutboxEntry).where(OutboxEntry.claimed_by.in_(dead))
                        .values(claim_expires_at=now_minus_one()))


def has_due(session: Session, *, mailbox_id: int, kinds: Sequence[str],
            now: datetime | None = None) -> bool:
    """Whether a row of these kinds is waiting for a drainer (cheap; claims nothing)."""
    return session.scalar(select(OutboxEntry.id).where(
        _due(now or utcnow()), OutboxEntry.mailbox_id == mailbox_id,
        OutboxEntry.kind.in_(list(kinds))
    ).limit(1)) is not None


def _due(now: datetime, owner: str | None = None) -> Any:
    """Rows a drainer may take: pending and due, or started by a holder whose claim expired
    (or by `owner` itself, resuming after a lost connection)."""
    taken_over = OutboxEntry.claim_expires_at < now
    if owner is not None:
        taken_over = or_(taken_over, OutboxEntry.claimed_by == owner)
    return or_(
        (OutboxEntry.state == OutboxState.PENDING)
        & or_(OutboxEntry.retry_at.is_(None), OutboxEntry.retry_at <= now),
        (OutboxEntry.state == OutboxState.RUNNING) & taken_over,
    )


def hand_over(session: Session, owner: str, mailbox_id: int) -> int:
    """Let any drainer take this owner's claimed rows of a mailbox at once (its connection
    broke mid-drain). Their attempts stay counted: whoever goes on checks the server first."""
    done = session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.claimed_by == owner, OutboxEntry.mailbox_id == mailbox_id,
               OutboxEntry.state == OutboxState.RUNNING)
        .values(claim_expires_at=now_minus_one()))
    return int(getattr(done, "rowcount", 0) or 0)


def now_minus_one() -> datetime:
    """A moment just past: a claim set to it has expired."""
    return utcnow() - timedelta(seconds=1)


def complete(session: Session, job: Job, owner: str, result: dict[str, Any]) -> bool:
    """Record that the job was done; False when another drainer took it over meanwhile."""
    done = session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.id == job.id, OutboxEntry.claimed_by == owner,
               OutboxEntry.state == OutboxState.RUNNING)
        .values(state=OutboxState.DONE, done_at=utcnow(), result=result, claimed_by=None,
                claim_expires_at=None, last_error=None)
    )
    return bool(getattr(done, "rowcount", 0))


def fail(
    session: Session,
    job: Job,
    owner: str,
    error: str,
    *,
    retry_in: float | None,
    state: OutboxState = OutboxState.PENDING,
) -> None:
    """Record a failed attempt: due again after `retry_in` seconds, or given up (`state`)."""
    values: dict[str, Any] = {"state": state, "last_error": error, "claimed_by": None,
                              "claim_expires_at": None}
    if retry_in is not None:
        values["retry_at"] = utcnow() + timedelta(seconds=retry_in)
    session.execute(
        update(OutboxEntry)
        .where(OutboxEntry.id == job.id, OutboxEntry.claimed_by == owner)
        .values(**values)
    )


def release(session: Session, jobs: Sequence[Job], owner: str) -> None:
    """Hand claimed rows back untouched (the drainer stops before performing them)."""
    ids = [j.id for j in jobs]
    if ids:
        session.execute(
            update(OutboxEntry)
            .where(OutboxEntry.id.in_(ids), OutboxEntry.claimed_by == owner,
                   OutboxEntry.state == OutboxState.RUNNING)
            .values(state=OutboxState.PENDING, claimed_by=None, claim_expires_at=None,
                    attempts=OutboxEntry.attempts - 1)
        )
