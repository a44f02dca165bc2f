"""What the stages need from the ledger, read by the runner between stages.

After parsing, each case learns how many earlier messages the same customer wrote in the
same thread (the router's repeated-contact rule). One query per batch; the stages stay pure.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from mailbot.db.models import Message, MessageStatus
from mailbot.pipeline.case import Case
from mailbot.route.history import ThreadKey
from mailbot.route.rules import thread_subject

_HISTORY_ROWS = 500  # the newest rows looked at per sender; threads are far shorter


def with_thread_history(session: Session, cases: Sequence[Case]) -> list[Case]:
    """The cases with `earlier_in_thread` filled in from the committed ledger."""
    out = []
    for case in cases:
        if case.message is None or not case.message_pk:
            out.append(case)
            continue
        key = ThreadKey.of(case.message_pk, case.message)
        out.append(case.with_(earlier_in_thread=earlier_in_thread(session, key)))
    return out


def earlier_in_thread(session: Session, key: ThreadKey) -> int:
    """The customer's earlier messages in this thread (linked by Message-ID, or by the same
    sender and subject), not counting auto-replies and other skipped mail."""
    if not key.sender:
        return 0
    rows = session.execute(
        select(Message.id, Message.message_id, Message.sender, Message.subject)
        .where(Message.id < key.message_pk, Message.status != MessageStatus.SKIPPED,
               or_(func.lower(Message.sender) == key.sender,
                   Message.message_id.in_(list(key.references))))
        .order_by(Message.id.desc()).limit(_HISTORY_ROWS)
    ).all()
    earlier = [ThreadKey(pk, mid, (), (sender or "").lower(), thread_subject(subject))
               for pk, mid, sender, subject in rows]
    return sum(1 for e in earlier if key.follows(e))
