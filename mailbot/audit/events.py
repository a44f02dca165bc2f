"""The audit log: one append-only event per step, with what it cost and who did it."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.orm import Session

from mailbot.audit.metrics import observe_event
from mailbot.audit.stats import add_event, event_values
from mailbot.db.base import utcnow
from mailbot.db.models import Event


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
    """Append one audit event (e-mail addresses in its details are masked: the audit log
    never holds personal data, so erasure and append-only coexist), and add it to its
    message's summary row (`message_stats`) in the same transaction."""
    event = Event(
        message_pk=message_pk,
        mailbox_id=mailbox_id,
        stage=stage,
        outcome=outcome,
        details=_masked(details or {}),
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
    if message_pk is not None:
        add_event(session, message_pk, event_values(
            stage, outcome, event.details, model=model, model_version=model_version,
            tokens_in=tokens_in, tokens_out=tokens_out, cost=cost))
    observe_event(stage, outcome, latency_ms, event.details)
    return event


_ADDRESS = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@[\w-]+(?:\.[\w-]+)+")


def _masked(value: Any) -> Any:
    if isinstance(value, str):
        return _ADDRESS.sub("<address>", value) if "@" in value else value
    if isinstance(value, dict):
        return {k: _masked(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_masked(v) for v in value]
    return value
