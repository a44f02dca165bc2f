"""What becomes of a message once its stages have run: the one place that says so.

The router decides the route once (`RouteDecision`). What follows from it is settled here:
a draft on the small model's route, a cloud call on the LLM's, a person's queue for mail
the router gave a person, and, on either drafting route, a person's queue when the draft
could not be written, failed its safety checks, or the cloud LLM could not answer. The
hand-off reason is added to the decision's reasons, with a stable code for reports.
"""

from __future__ import annotations

from dataclasses import dataclass

from mailbot.db.models import MessageStatus
from mailbot.pipeline.case import Case
from mailbot.route.decision import HUMAN, LLM, NEEDS_HUMAN_PREFIX, SKIP, RouteReason


@dataclass(frozen=True, slots=True)
class Settlement:
    """The message's new status, why, and the reason it went to a person (if it did)."""

    status: MessageStatus
    reason: str | None = None
    handoff: RouteReason | None = None  # why a message on a drafting route went to a person

    @property
    def final(self) -> bool:
        """Whether the message is done with the pipeline (the cloud step still owes it)."""
        return self.status != MessageStatus.ESCALATING


def settle(case: Case) -> Settlement:
    """The status a message gets from what its stages found."""
    decision = case.decision
    if decision is None:
        if case.draft is None and case.no_draft is None:
            return Settlement(MessageStatus.CLASSIFIED if case.classification else
                              MessageStatus.PARSED)
    elif decision.route == SKIP:
        return Settlement(MessageStatus.SKIPPED, f"no automatic reply: {decision.summary()}")
    elif decision.route == HUMAN:
        return Settlement(MessageStatus.NEEDS_HUMAN, decision.summary())
    elif decision.route == LLM:
        escalation = case.escalation
        if escalation is None:
            return Settlement(MessageStatus.ESCALATING, decision.summary())
        if escalation.failure is not None:
            return _to_person(case, escalation.failure)
    if case.no_draft is not None:
        return _to_person(case, RouteReason("no_draft", f"no draft: {case.no_draft}", HUMAN))
    if case.safety is not None and not case.safety.passed:
        return _to_person(case, RouteReason(
            "unsafe_draft", f"draft held back: {case.safety.summary()}", HUMAN,
            {"violations": [v.check for v in case.safety.violations]}))
    if case.draft is None:
        raise ValueError(f"message {case.message_pk} was routed to a draft but has none")
    reason = decision.summary() if decision is not None and decision.reasons else None
    return Settlement(MessageStatus.DRAFTED, reason)


def _to_person(case: Case, why: RouteReason) -> Settlement:
    reasons = (*case.decision.reasons, why) if case.decision is not None else (why,)
    texts = "; ".join(r.text for r in reasons)
    return Settlement(MessageStatus.NEEDS_HUMAN, f"{NEEDS_HUMAN_PREFIX}: {texts}", handoff=why)
