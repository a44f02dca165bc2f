"""The audit log: one append-only event per step, with what it cost and who did it."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

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
    """Append one audit event."""
    event = Event(
        message_pk=message_pk,
        mailbox_id=mailbox_id,
        stage=stage,
        outcome=outcome,
        details=details or {},
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
    return event
