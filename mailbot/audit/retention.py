"""Retention and erasure: personal data leaves, the audit trail keeps its shape.

Personal data lives in the raw messages, the message rows' subject and sender, the drafts,
the extracted facts (`message_facts`), the cloud requests and the teacher labels' text;
the append-only `events` hold none of it (addresses are masked there). So both of these
scrub those places and keep every row and every event:

- `apply_retention`: raw mail after `retention.raw_days`, everything personal after
  `retention.text_days` (the daemon runs it every few hours; `mailbot retention` by hand);
- `erase_sender`: a data-protection request, everything personal about one address now
  (`mailbot erase --sender ADDRESS`).

Each run is one audit event with counts (and, for an erasure, a hash of the address, so
that a later audit can tell that this address was erased without the log naming it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.llm_records import LLMRequest, TeacherLabel
from mailbot.db.models import Message, MessageFacts, MessageStatus, RawMessage
from mailbot.db.outbox import OutboxEntry
from mailbot.db.outcomes import DraftOutcome, HumanLabel, LabelKind

if TYPE_CHECKING:
    from mailbot.config import RetentionSettings

# Mail still on its way through the pipeline keeps its raw bytes whatever its age.
_IN_FLIGHT = (MessageStatus.FETCHED, MessageStatus.ESCALATING)
ERASED = "(erased)"


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What one retention run or erasure removed."""

    messages: int = 0  # messages whose personal data was scrubbed
    raw: int = 0  # raw messages deleted
    drafts: int = 0
    cloud_requests: int = 0
    teacher_labels: int = 0

    def to_json(self) -> dict[str, int]:
        """The counts, as the audit event and `--json` show them."""
        return {"messages": self.messages, "raw": self.raw, "drafts": self.drafts,
                "cloud_requests": self.cloud_requests, "teacher_labels": self.teacher_labels}


def address_hash(address: str) -> str:
    """A stable hash of an address (lower case), recorded instead of the address."""
    return hashlib.sha256(address.strip().lower().encode("utf-8")).hexdigest()


def apply_retention(session: Session, settings: RetentionSettings,
                    now: datetime | None = None) -> ErasureReport:
    """Delete raw mail older than `raw_days` and scrub personal data older than
    `text_days` (0 keeps it); in the caller's transaction."""
    now = now or utcnow()
    raw = 0
    if settings.raw_days:
        cutoff = now - timedelta(days=settings.raw_days)
        old = (select(Message.id).where(Message.fetched_at < cutoff,
                                        Message.status.not_in(list(_IN_FLIGHT))))
        raw = _delete_raw(session, old)
    report = ErasureReport(raw=raw)
    if settings.text_days:
        cutoff = now - timedelta(days=settings.text_days)
        pks = list(session.scalars(
            select(Message.id).where(Message.fetched_at < cutoff, Message.erased_at.is_(None),
                                     Message.status.not_in(list(_IN_FLIGHT)))))
        report = _scrub(session, pks, raw=raw)
    if report.messages or report.raw:
        record_event(session, "retention", "applied", details={
            **report.to_json(), "raw_days": settings.raw_days,
            "text_days": settings.text_days})
    return report


def erase_sender(session: Session, address: str, *, actor: str = "admin") -> ErasureReport:
    """Remove everything personal about mail from `address` (any case); rows stay."""
    wanted = address.strip().lower()
    pattern = f"%{_like_escape(wanted)}%"
    pks = list(session.scalars(
        select(Message.id).where(or_(func.lower(Message.sender) == wanted,
                                     func.lower(Message.sender).like(pattern, escape="\\")))))
    report = _scrub(session, pks, raw=None)
    record_event(session, "erase", "done", actor=actor,
                 details={**report.to_json(), "address_sha256": address_hash(wanted)})
    return report


def _like_escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _delete_raw(session: Session, pks: Any) -> int:
    result = session.execute(delete(RawMessage).where(RawMessage.message_pk.in_(pks)),
                             execution_options={"synchronize_session": False})
    return int(getattr(result, "rowcount", 0) or 0)


def _scrub(session: Session, pks: list[int], *, raw: int | None) -> ErasureReport:
    if not pks:
        return ErasureReport(raw=raw or 0)
    now = utcnow()
    removed_raw = raw if raw is not None else 0
    drafts = cloud = labels = 0
    for start in range(0, len(pks), 500):
        chunk = pks[start:start + 500]
        if raw is None:
            removed_raw += _delete_raw(session, chunk)
        else:
            _delete_raw(session, chunk)
        session.execute(delete(MessageFacts).where(MessageFacts.message_pk.in_(chunk)),
                        execution_options={"synchronize_session": False})
        drafts += _count(session.execute(
            update(DraftRecord).where(DraftRecord.message_pk.in_(chunk))
            .values(subject=ERASED, body="", mime=b"", fields={}, passages=[], gates={})))
        cloud += _count(session.execute(
            update(LLMRequest).where(LLMRequest.message_pk.in_(chunk))
            .values(request={}, answer=None, error=None)))
        labels += _count(session.execute(
            update(TeacherLabel).where(TeacherLabel.message_pk.in_(chunk))
            .values(input_text="", value={})))
        # A corrected field value is personal; a corrected intent or priority is not.
        labels += _count(session.execute(
            update(HumanLabel).where(HumanLabel.message_pk.in_(chunk),
                                     HumanLabel.kind == LabelKind.FIELD)
            .values(value=None, previous=None)))
        session.execute(
            update(DraftOutcome).where(DraftOutcome.message_pk.in_(chunk))
            .values(proposed_text=None, sent_text=None, note=None, sent_message_id=None),
            execution_options={"synchronize_session": False})
        # A reply waiting to be sent carries its text; drafts, flags and moves only ids.
        session.execute(update(OutboxEntry).where(OutboxEntry.message_pk.in_(chunk),
                                                  OutboxEntry.kind == "send")
                        .values(payload={}, result={}, last_error=None))
        session.execute(
            update(Message).where(Message.id.in_(chunk))
            .values(subject=None, sender=None, message_id=None, status_reason=ERASED,
                    last_error=None, erased_at=now),
            execution_options={"synchronize_session": False})
    return ErasureReport(messages=len(pks), raw=removed_raw, drafts=drafts,
                         cloud_requests=cloud, teacher_labels=labels)


def _count(result: object) -> int:
    return int(getattr(result, "rowcount", 0) or 0)
