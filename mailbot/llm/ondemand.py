"""Escalations an agent asks for on the message page: a new draft from the cloud LLM.

The desk does not call the cloud LLM itself. Pressing *Escalate* commits, in one short
transaction, an `llm_requests` row in state `requested` (with the agent's name in the audit
log) and sets the message to `escalating`; the worker's cloud step plans it (the local
stages run again there, where the models are loaded, so the desk's web processes never
load a model), then sends and records it exactly like an escalation the router made: the
same pseudonymisation, budget lock, retries, crash rules and teacher labels. Why not call
it from the web request: a cloud call may take a minute with its retries, the desk runs as
several web processes that would each need the models and the budget lock, and a request
killed mid-call must not be paid for twice; the outbox-like row gives all of that for free.

The budget is checked on the desk too, so an agent learns at once when it is spent (and
nothing changes); the worker checks it again, under the lock, before the call.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.audit.cost import budget_state
from mailbot.audit.events import record_event
from mailbot.db.base import utcnow
from mailbot.db.llm_records import LLMRequest
from mailbot.db.models import Account, Event, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.outcomes import HumanLabel, LabelKind, LabelSource
from mailbot.errors import MailbotError
from mailbot.route.decision import HUMAN, LLM, RouteDecision, RouteReason

if TYPE_CHECKING:
    from mailbot.config import Config

# The states of a request before it is planned (see mailbot.llm.escalate for the rest).
REQUESTED, PLANNING = "requested", "planning"
DESK_TASK = "desk"  # the task of a request not planned yet
OPEN_STATES = (REQUESTED, PLANNING, "pending", "sent")
AGENT_ESCALATED = "agent_escalated"  # the route reason an agent's escalation adds


class EscalationRefused(MailbotError):
    """The message cannot be escalated now (no cloud LLM, budget spent, no-cloud rule...)."""


def escalation_available(config: Config) -> bool:
    """Whether the worker has a cloud step to escalate to (what the desk's button needs)."""
    return config.llm.enabled and config.route.enabled and config.classifier.enabled


def request_escalation(session: Session, config: Config, message: Message, agent: str,
                       now: datetime | None = None) -> LLMRequest:
    """Queue the message for the cloud LLM's new draft (the caller's transaction commits);
    EscalationRefused with the reason when it cannot be, and nothing changes."""
    from mailbot.llm.escalate import in_flight
    from mailbot.route.stage import no_cloud

    if not escalation_available(config):
        raise EscalationRefused("no cloud LLM is configured ([llm] base_url and model, with "
                                "routing and the classifier on): nothing to escalate to")
    account, folder = session.execute(
        select(Account.name, Mailbox.name).join(Mailbox, Mailbox.account_id == Account.id)
        .where(Mailbox.id == message.mailbox_id)).one()
    rule = no_cloud(config, account, folder)
    if rule is not None:
        raise EscalationRefused(f"this mail must not leave the server (route.no_cloud: {rule})")
    spent = budget_state(session, now or datetime.now(UTC), config.cost,
                         reserved=in_flight(session))
    if not spent.allowed:
        raise EscalationRefused(str(spent.reason))
    if session.get(RawMessage, message.id) is None:
        raise EscalationRefused("the mail itself was removed (retention or erasure); there is "
                                "nothing to send to the cloud LLM")
    route = session.scalar(select(Event.details).where(
        Event.message_pk == message.id, Event.stage == "route").order_by(Event.id.desc()))
    if not route:
        raise EscalationRefused("this message was never classified and routed; the cloud LLM "
                                "has nothing to start from")
    earlier = list(session.scalars(select(LLMRequest).where(LLMRequest.message_pk == message.id)
                                   .with_for_update()))
    if any(r.state in OPEN_STATES for r in earlier):
        raise EscalationRefused("this message is already waiting for the cloud LLM")
    for row in earlier:
        # A message's requests are unique per task: the answered ones step aside, kept.
        row.task = f"{row.task}@{row.id}"[:32]
    session.flush()
    reason = RouteReason(AGENT_ESCALATED, f"{agent} asked the cloud LLM for a new draft", LLM,
                         {"agent": agent})
    decision = RouteDecision.from_json(route)
    decision = RouteDecision(LLM, (*(r for r in decision.reasons if r.action != HUMAN), reason))
    request = LLMRequest(message_pk=message.id, task=DESK_TASK, state=REQUESTED,
                         request={"decision": decision.to_json(), "agent": agent,
                                  **_corrected(session, message.id)},
                         reserved_cost=0.0, created_at=utcnow())
    session.add(request)
    previous = message.status
    message.status = MessageStatus.ESCALATING
    message.status_reason = f"escalated by {agent}: waiting for the cloud LLM's new draft"
    message.updated_at = utcnow()
    record_event(session, "desk", "escalated", message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor=agent,
                 details={"previous_status": str(previous), "codes": decision.codes})
    return request


def _corrected(session: Session, message_pk: int) -> dict[str, Any]:
    """The intent and language an agent corrected: the cloud LLM answers for those."""
    found: dict[str, Any] = {}
    for kind in (LabelKind.INTENT, LabelKind.LANGUAGE):
        value = session.scalar(select(HumanLabel.value).where(
            HumanLabel.message_pk == message_pk, HumanLabel.kind == kind,
            HumanLabel.source == LabelSource.DESK).order_by(HumanLabel.id.desc()))
        if value:
            found[kind.value] = value
    return found


def planned(asked: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
    """The planned request with the agent's corrections in it."""
    return {**payload, **{k: asked[k] for k in ("intent", "language") if asked.get(k)},
            "asked_by": asked.get("agent")}
