"""The queue: what awaits a person, by tab, filtered, oldest first, with counts and ages."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.models import Account, Event, Mailbox, Message, MessageStatus
from mailbot.db.web import ReviewClaim, ReviewIndex
from mailbot.web.auth import CurrentUser

TABS: dict[str, tuple[str, tuple[str, ...]]] = {
    "drafts": ("Drafts to review", (MessageStatus.DRAFTED,)),
    "human": ("Needs a person", (MessageStatus.NEEDS_HUMAN,)),
    "escalated": ("Escalated", (MessageStatus.ESCALATING,)),
    "failures": ("Failures", (MessageStatus.FAILED, MessageStatus.QUARANTINED,
                              MessageStatus.SENDING, MessageStatus.SEND_FAILED,
                              MessageStatus.SEND_UNCERTAIN)),
}
QUEUE_STATUSES = tuple(s for _, statuses in TABS.values() for s in statuses)


@dataclass(frozen=True, slots=True)
class QueueFilter:
    """What an agent narrowed the queue to."""

    tab: str = "drafts"
    mailbox: int | None = None
    intent: str = ""
    language: str = ""
    reason: str = ""
    min_age_hours: float | None = None

    @classmethod
    def from_args(cls, args: Any) -> QueueFilter:
        def number(key: str) -> float | None:
            try:
                value = float(args.get(key, "") or "nan")
            except ValueError:
                return None
            return value if value == value and value >= 0 else None

        tab = args.get("tab", "drafts")
        mailbox = number("mailbox")
        return cls(tab=tab if tab in TABS else "drafts",
                   mailbox=int(mailbox) if mailbox is not None else None,
                   intent=args.get("intent", "")[:100], language=args.get("language", "")[:16],
                   reason=args.get("reason", "")[:64], min_age_hours=number("age"))


@dataclass(frozen=True, slots=True)
class QueueRow:
    id: int
    subject: str
    sender: str
    mailbox: str
    status: str
    status_reason: str
    arrived: datetime
    age: str
    intent: str
    language: str
    reason: str
    claimed_by: str | None


def age_text(since: datetime, now: datetime) -> str:
    """'5 min', '3 h', '2 d'."""
    seconds = max(0.0, (now - since).total_seconds())
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 86400:
        return f"{int(seconds // 3600)} h"
    return f"{int(seconds // 86400)} d"


def visible_mailboxes(session: Session, user: CurrentUser) -> list[tuple[int, str]]:
    """(id, "account/folder") of the mailboxes this user works."""
    rows = session.execute(select(Mailbox.id, Account.name, Mailbox.name)
                           .join(Account, Account.id == Mailbox.account_id)
                           .order_by(Account.name, Mailbox.name)).all()
    named = [(mid, f"{account}/{folder}") for mid, account, folder in rows]
    if user.sees_all:
        return named
    return [(mid, name) for mid, name in named if name in user.mailboxes]


def index_new(session: Session, limit: int = 5000) -> int:
    """Copy what the queue filters on from the events of messages not indexed yet."""
    missing = session.scalars(
        select(Message.id).outerjoin(ReviewIndex, ReviewIndex.message_pk == Message.id)
        .where(ReviewIndex.message_pk.is_(None), Message.status.in_(QUEUE_STATUSES))
        .limit(limit)).all()
    if not missing:
        return 0
    found: dict[int, dict[str, Any]] = {pk: {} for pk in missing}
    for pk, stage, details in session.execute(
            select(Event.message_pk, Event.stage, Event.details)
            .where(Event.message_pk.in_(missing), Event.stage.in_(("classify", "route")))
            .order_by(Event.id)):
        found[pk][stage] = details or {}
    rows = []
    for pk, stages in found.items():
        classify = stages.get("classify", {})
        codes = [c for c in stages.get("route", {}).get("codes", []) if isinstance(c, str)]
        rows.append({"message_pk": pk, "intent": _label(classify.get("intent")),
                     "priority": _label(classify.get("priority")),
                     "language": (classify.get("language") or None),
                     "route_reason": codes[0][:64] if codes else None})
    table = ReviewIndex.__table__
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    session.execute(insert(table).values(rows).on_conflict_do_nothing())  # type: ignore[arg-type]
    return len(rows)


def _label(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("label")
    return str(value)[:100] if value else None


def _scoped(query: Any, user: CurrentUser, mailboxes: list[tuple[int, str]]) -> Any:
    if user.sees_all:
        return query
    return query.where(Message.mailbox_id.in_([mid for mid, _ in mailboxes]))


def tab_counts(session: Session, user: CurrentUser, mailboxes: list[tuple[int, str]]
               ) -> dict[str, int]:
    """How many items each tab holds."""
    query = _scoped(select(Message.status, func.count()).where(
        Message.status.in_(QUEUE_STATUSES)), user, mailboxes).group_by(Message.status)
    by_status = dict(session.execute(query).all())
    return {tab: sum(by_status.get(s, 0) for s in statuses)
            for tab, (_, statuses) in TABS.items()}


def filter_choices(session: Session) -> dict[str, list[str]]:
    """The intents, languages and route reasons found in the queue, for the filter menus."""
    def distinct(column: Any) -> list[str]:
        return [v for v in session.scalars(select(column).distinct().where(column.is_not(None))
                                           .order_by(column)) if v]

    return {"intent": distinct(ReviewIndex.intent), "language": distinct(ReviewIndex.language),
            "reason": distinct(ReviewIndex.route_reason)}


def queue_rows(session: Session, user: CurrentUser, wanted: QueueFilter,
               mailboxes: list[tuple[int, str]], limit: int) -> list[QueueRow]:
    """The tab's items, oldest first."""
    now = utcnow()
    names = dict(mailboxes)
    query = (select(Message.id, Message.subject, Message.sender, Message.mailbox_id,
                    Message.status, Message.status_reason, Message.fetched_at,
                    ReviewIndex.intent, ReviewIndex.language,
                    ReviewIndex.route_reason, ReviewClaim.agent, ReviewClaim.expires_at)
             .outerjoin(ReviewIndex, ReviewIndex.message_pk == Message.id)
             .outerjoin(ReviewClaim, ReviewClaim.message_pk == Message.id)
             .where(Message.status.in_(TABS[wanted.tab][1])))
    query = _scoped(query, user, mailboxes)
    if wanted.mailbox is not None:
        query = query.where(Message.mailbox_id == wanted.mailbox)
    if wanted.intent:
        query = query.where(ReviewIndex.intent == wanted.intent)
    if wanted.language:
        query = query.where(ReviewIndex.language == wanted.language)
    if wanted.reason:
        query = query.where(ReviewIndex.route_reason == wanted.reason)
    if wanted.min_age_hours is not None:
        query = query.where(Message.fetched_at <= now - timedelta(hours=wanted.min_age_hours))
    query = query.order_by(Message.fetched_at, Message.id).limit(limit)
    rows = []
    for (pk, subject, sender, mailbox_id, status, reason, fetched, intent, language,
         route_reason, agent, expires) in session.execute(query):
        arrived = fetched
        claimed = agent if agent and expires and expires > now else None
        rows.append(QueueRow(pk, subject or "(no subject)", sender or "", names.get(
            mailbox_id, str(mailbox_id)), status, reason or "", arrived, age_text(arrived, now),
            intent or "", language or "", route_reason or "", claimed))
    return rows
