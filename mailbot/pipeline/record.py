"""Writing what the stages found: audit events, personal facts, the settled status, and the
rows for what must happen next (the draft, the outbox's server actions, the cloud request).

Everything for one message is written in the caller's transaction, so a message is either
wholly settled or untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.llm_records import LLMRequest
from mailbot.db.models import Account, Mailbox, Message, MessageFacts, MessageStatus
from mailbot.outbox.queue import enqueue_draft, enqueue_draft_removal, enqueue_server_action
from mailbot.pipeline.case import Case, Step
from mailbot.route.outcome import Settlement, settle

if TYPE_CHECKING:
    from mailbot.config import AccountSettings, Config

# (case) -> (task, payload) of the first cloud request of an escalated message.
Planner = Callable[[Case], tuple[str, dict[str, Any]]]


def record_steps(session: Session, message: Message, steps: Sequence[Step]) -> None:
    """One audit event per step, the personal facts apart, and what parsing learnt."""
    facts: dict[str, Any] = {}
    for step in steps:
        details = dict(step.details)
        if step.reason:
            details.setdefault("reason", step.reason)
        record_event(
            session, step.stage or "pipeline", step.outcome, message_pk=message.id,
            mailbox_id=message.mailbox_id, details=details, model=step.model,
            model_version=step.model_version, latency_ms=round(step.latency_ms, 3),
            tokens_in=step.tokens_in, tokens_out=step.tokens_out, cost=step.cost,
        )
        facts.update(step.facts)
    if steps and steps[-1].case.message is not None:
        parsed = steps[-1].case.message
        message.subject = parsed.subject
        message.sender = parsed.from_addr.email if parsed.from_addr else None
        if parsed.message_id:
            message.message_id = parsed.message_id
    if facts:
        save_facts(session, message.id, facts)


def save_facts(session: Session, message_pk: int, facts: Mapping[str, Any]) -> None:
    """Merge personal facts (field values, generated text) into the message's record."""
    row = session.get(MessageFacts, message_pk)
    if row is None:
        session.add(MessageFacts(message_pk=message_pk, data=dict(facts), updated_at=utcnow()))
    else:
        row.data = {**(row.data or {}), **facts}
        row.updated_at = utcnow()


class Recorder:
    """Settles messages: their status, and what their status calls for, in one transaction."""

    def __init__(self, config: Config | None, planner: Planner | None = None) -> None:
        self.config = config
        self.planner = planner
        self._accounts: dict[str, AccountSettings] = (
            {a.name: a for a in config.accounts} if config is not None else {})

    def account_of(self, session: Session, message: Message) -> AccountSettings | None:
        """The IMAP account settings the message came from (None for local files)."""
        name = session.scalar(select(Account.name).join(Mailbox, Mailbox.account_id == Account.id)
                              .where(Mailbox.id == message.mailbox_id))
        return self._accounts.get(name or "")

    def commit_case(self, session: Session, message: Message, case: Case,
                    steps: Sequence[Step]) -> Settlement:
        """Record the steps and settle the message (the caller's transaction commits)."""
        record_steps(session, message, steps)
        stopped = next((s for s in reversed(steps) if s.stop and s.status is not None), None)
        if stopped is not None:  # a parse failure or an auto-reply: no routing involved
            settlement = Settlement(stopped.status, stopped.reason)  # type: ignore[arg-type]
        else:
            settlement = settle(case)
        self.apply(session, message, case, settlement)
        return settlement

    def apply(self, session: Session, message: Message, case: Case,
              settlement: Settlement) -> None:
        """The new status and everything it calls for."""
        message.status = settlement.status
        message.status_reason = settlement.reason
        message.updated_at = utcnow()
        message.claimed_by = None
        message.claim_expires_at = None
        details: dict[str, Any] = {"status": str(settlement.status)}
        if settlement.handoff is not None:
            details["handoff"] = settlement.handoff.code
            details["handoff_details"] = dict(settlement.handoff.details)
            if case.decision is not None:
                details["codes"] = [*case.decision.codes, settlement.handoff.code]
        record_event(session, "settle", str(settlement.status), message_pk=message.id,
                     mailbox_id=message.mailbox_id, details=details)
        account = self.account_of(session, message)
        if settlement.status == MessageStatus.ESCALATING:
            self._request(session, message, case)
            return
        if settlement.status == MessageStatus.DRAFTED and case.draft is not None:
            record = self._draft(session, message, case, account)
            if account is not None:
                enqueue_draft(session, message, record, account.drafts_folder)
        if account is not None:
            enqueue_server_action(session, message, account)

    def _draft(self, session: Session, message: Message, case: Case,
               account: AccountSettings | None) -> DraftRecord:
        draft = case.draft
        assert draft is not None
        version = draft.template_version
        if case.generated is not None and draft.model == case.generated.model:
            version = case.generated.model_version
        values = {
            "token": draft.token, "reply_message_id": draft.message_id,
            "template": draft.template, "language": draft.language, "subject": draft.subject,
            "body": draft.body, "mime": draft.mime, "fields": dict(draft.fields),
            "passages": [dict(p) for p in draft.passages], "gates": dict(draft.gates),
            "model": draft.model, "model_version": version, "needs_review": draft.needs_review,
            "review_reasons": list(draft.review_reasons), "delivered_at": None,
            "drafts_folder": None, "drafts_uid": None, "created_at": utcnow(),
        }
        record = session.scalar(select(DraftRecord).where(DraftRecord.message_pk == message.id))
        if record is None:
            record = DraftRecord(message_pk=message.id, **values)
            session.add(record)
        else:
            # A new draft (an agent escalated the message): it replaces the old one, here
            # and in the Drafts folder. The row is kept, so outcomes that name it stay valid.
            if account is not None:
                enqueue_draft_removal(session, message, record, account.name,
                                      account.drafts_folder)
            for key, value in values.items():
                setattr(record, key, value)
        session.flush()
        return record

    def _request(self, session: Session, message: Message, case: Case) -> None:
        if self.planner is None:
            raise RuntimeError("a message was escalated but no cloud LLM step is configured")
        task, payload = self.planner(case)
        session.add(LLMRequest(message_pk=message.id, task=task, state="pending",
                               request=payload, reserved_cost=0.0, created_at=utcnow()))
