"""Writing cloud LLM calls to the audit log, so the cost report and budgets can find them.

Every call, answered or failed, is one event with stage "llm": tokens, latency, cost and a
hash of the exact request. The request and the answer themselves (pseudonymised, but still
the customer's words) are kept in `llm_requests`, which retention and erasure can clear.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from sqlalchemy.orm import Session

from mailbot.audit.cost import LLM_STAGE
from mailbot.audit.events import record_event
from mailbot.db.models import Event
from mailbot.llm.client import LLMCall
from mailbot.llm.errors import LLMRequestRejected, LLMResponseInvalid, LLMUnavailable


def call_details(call: LLMCall) -> dict[str, Any]:
    """The audit details of a call: its shape and a hash of what was sent, not the text."""
    sent = json.dumps(dict(call.request), sort_keys=True, ensure_ascii=False)
    return {
        "task": call.task,
        "messages": len(call.messages),
        "request_sha256": hashlib.sha256(sent.encode("utf-8")).hexdigest(),
        "response_chars": len(call.response_text),
        "response_model": call.response_model,
        "attempts": call.attempts,
        "repaired": call.repaired,
        "finish_reason": call.finish_reason,
        "tokens_estimated": call.tokens_estimated,
        "request_id": call.request_id,
    }


def record_llm_call(
    session: Session,
    call: LLMCall,
    *,
    message_pk: int | None,
    mailbox_id: int | None = None,
    outcome: str = "ok",
    details: dict[str, Any] | None = None,
) -> Event:
    """Append the audit event of an answered cloud LLM call."""
    return record_event(
        session,
        LLM_STAGE,
        outcome,
        message_pk=message_pk,
        mailbox_id=mailbox_id,
        details={**call_details(call), **(details or {})},
        model=call.model,
        model_version=call.response_model,
        latency_ms=call.latency_ms,
        tokens_in=call.tokens_in,
        tokens_out=call.tokens_out,
        cost=call.cost,
    )


def record_llm_failure(
    session: Session,
    task: str,
    error: LLMUnavailable | LLMResponseInvalid | LLMRequestRejected,
    *,
    model: str,
    message_pk: int | None,
    mailbox_id: int | None = None,
) -> Event:
    """Append the audit event of a failed call; an unusable answer still records its cost."""
    details: dict[str, Any] = {"task": task, "error": str(error)}
    if isinstance(error, LLMUnavailable):
        outcome = "unavailable"
        details["reason"] = error.reason
        details["retry_in"] = error.retry_in
    elif isinstance(error, LLMRequestRejected):
        outcome = "rejected"
        details["status_code"] = error.status_code
    else:
        outcome = "invalid"
    call = getattr(error, "call", None)
    if isinstance(call, LLMCall):
        return record_llm_call(session, call, message_pk=message_pk, mailbox_id=mailbox_id,
                               outcome=outcome, details=details)
    return record_event(session, LLM_STAGE, outcome, message_pk=message_pk,
                        mailbox_id=mailbox_id, details=details, model=model)
