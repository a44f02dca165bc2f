"""What the router needs from the ledger, read by the runner's side, never by a rule.

`LedgerLookup` answers, for one message, the mailbox it came from and how many earlier
messages the same customer wrote in the same thread. `BudgetGate` says whether the cloud
budget leaves room for another call. Both only read the database; the stages get them
through their constructors, so a stage stays testable without one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, or_, select

from mailbot.audit.cost import BudgetState, budget_state
from mailbot.config import CostSettings
from mailbot.db.models import Mailbox, Message, MessageStatus
from mailbot.db.session import Database
from mailbot.parse.message import InboundMessage
from mailbot.route.rules import thread_subject

_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class ThreadKey:
    """How a message is tied to its thread: its ids, references, sender and subject."""

    message_pk: int
    message_id: str | None
    references: tuple[str, ...]
    sender: str
    subject: str  # as `thread_subject` normalises it

    @classmethod
    def of(cls, message_pk: int, message: InboundMessage) -> ThreadKey:
        refs = tuple(dict.fromkeys((*message.references, *filter(None, [message.in_reply_to]))))
        sender = message.from_addr.email.lower() if message.from_addr else ""
        return cls(message_pk, message.message_id, refs, sender, thread_subject(message.subject))

    def follows(self, earlier: ThreadKey) -> bool:
        """Whether `earlier` is this customer's earlier message in the same thread."""
        if earlier.message_pk >= self.message_pk or earlier.sender != self.sender:
            return False
        linked = earlier.message_id is not None and earlier.message_id in self.references
        return linked or (bool(self.subject) and earlier.subject == self.subject)


class LedgerLookup:
    """Reads a message's mailbox and its thread history from the ledger."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def mailbox_of(self, message_pk: int) -> str | None:
        """The folder name the message was fetched from (None when unknown)."""
        with self.database.session() as session:
            return session.scalar(
                select(Mailbox.name).join(Message, Message.mailbox_id == Mailbox.id)
                .where(Message.id == message_pk)
            )

    def earlier_in_thread(self, key: ThreadKey) -> int:
        """The customer's earlier messages in this thread (linked by Message-ID, or by the
        same sender and subject), not counting auto-replies and other skipped mail."""
        if not key.sender:
            return 0
        with self.database.session() as session:
            rows = session.execute(
                select(Message.id, Message.message_id, Message.sender, Message.subject)
                .where(Message.id < key.message_pk, Message.status != MessageStatus.SKIPPED,
                       or_(func.lower(Message.sender) == key.sender,
                           Message.message_id.in_(list(key.references))))
                .order_by(Message.id.desc()).limit(500)
            ).all()
        earlier = [ThreadKey(pk, mid, (), (sender or "").lower(), thread_subject(subject))
                   for pk, mid, sender, subject in rows]
        return sum(1 for e in earlier if key.follows(e))


def count_in_batch(key: ThreadKey, others: Iterable[ThreadKey]) -> int:
    """Earlier messages of the same thread among those processed together (not yet
    committed, so the ledger does not show them)."""
    return sum(1 for other in others if key.follows(other))


class BudgetGate:
    """Whether the cloud LLM budget allows another call, counting calls not yet committed."""

    def __init__(self, database: Database, settings: CostSettings,
                 clock: type[datetime] = datetime) -> None:
        self.database = database
        self.settings = settings
        self._clock = clock

    @property
    def limited(self) -> bool:
        """Whether any budget is set at all (no query is needed otherwise)."""
        return bool(self.settings.daily_budget or self.settings.monthly_budget)

    def state(self, pending: float = 0.0) -> BudgetState:
        """The budget as recorded, plus `pending` spent in this process and not yet committed."""
        with self.database.session() as session:
            state = budget_state(session, self._clock.now(UTC), self.settings)
        if not pending:
            return state
        return with_pending(state, pending, self.settings)


def with_pending(state: BudgetState, pending: float, settings: CostSettings) -> BudgetState:
    """`state` with `pending` more spent today and this month."""
    today, month = state.spent_today + pending, state.spent_month + pending
    reason = None
    if settings.daily_budget and today >= settings.daily_budget - _EPSILON:
        reason = (f"daily cloud LLM budget reached: spent {today:.4f} of "
                  f"{settings.daily_budget:.2f} {settings.currency} today ({settings.timezone})")
    elif settings.monthly_budget and month >= settings.monthly_budget - _EPSILON:
        reason = (f"monthly cloud LLM budget reached: spent {month:.4f} of "
                  f"{settings.monthly_budget:.2f} {settings.currency} this month "
                  f"({settings.timezone})")
    return BudgetState(
        allowed=reason is None, reason=reason, spent_today=today, spent_month=month,
        daily_budget=settings.daily_budget, monthly_budget=settings.monthly_budget,
        currency=settings.currency,
    )
