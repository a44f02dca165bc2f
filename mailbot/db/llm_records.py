"""Records of the cloud LLM's work: each request, and its answers kept as teacher labels.

`llm_requests` holds every call an escalation makes, from before it is sent (the exact,
pseudonymised request) until its answer is committed, so that a crash never sends (and pays
for) the same call twice, and every call counts against the budget. Every escalated
message's answers (intent, priority, sentiment, language, reply) are kept as teacher labels,
one row per (message, kind), with the exact text the LLM saw, so that they can be exported
as training data (`text,label`) and marked once a model was trained on them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, JSONType, SafeText, UTCDateTime, utcnow


class LLMRequest(Base):
    """One call to the cloud LLM for one message: recorded before it is sent.

    `state` moves pending -> sent -> answered | failed; a row found `sent` after a crash is
    never sent again (its answer may have been paid for): the message goes to a person.
    `reserved_cost` is what the budget counts while the call is in flight (an upper bound),
    `cost` what the answer cost.
    """

    __tablename__ = "llm_requests"
    __table_args__ = (
        UniqueConstraint("message_pk", "task"),
        Index("ix_llm_requests_state", "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id"))
    task: Mapped[str] = mapped_column(String(32))  # "classify" or "reply"
    state: Mapped[str] = mapped_column(String(16), default="pending")
    # What goes to the cloud, already pseudonymised: the task's inputs (subject, body,
    # facts, passages, labels) and the placeholder counts.
    request: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The answer (the parsed classification, or the reply text, still pseudonymised).
    answer: Mapped[dict[str, Any] | None] = mapped_column(JSONType)
    error: Mapped[str | None] = mapped_column(SafeText)
    model: Mapped[str | None] = mapped_column(String(200))
    reserved_cost: Mapped[float] = mapped_column(Float, default=0.0)
    cost: Mapped[float | None] = mapped_column(Float)
    tokens_in: Mapped[int | None] = mapped_column(Integer)
    tokens_out: Mapped[int | None] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class BudgetLock(Base):
    """A single row every budget check updates first: the checks of all workers take turns,
    so two of them never both spend the last of the budget."""

    __tablename__ = "budget_lock"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    turns: Mapped[int] = mapped_column(Integer, default=0)


class TeacherLabel(Base):
    """One answer of the cloud LLM about one message, kept to train the small model."""

    __tablename__ = "teacher_labels"
    __table_args__ = (
        UniqueConstraint("message_pk", "kind"),
        Index("ix_teacher_labels_kind_created_at", "kind", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    # "intent", "priority", "sentiment", "language", "fields" or "reply".
    kind: Mapped[str] = mapped_column(String(32))
    # The label for the classification kinds; None for "fields" and "reply".
    label: Mapped[str | None] = mapped_column(String(200))
    # The whole answer for this kind: {"label": ...}, the fields, or {"text": reply}.
    value: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    # The customer's text exactly as the LLM saw it (already pseudonymised).
    input_text: Mapped[str] = mapped_column(SafeText)
    confidence: Mapped[float | None] = mapped_column(Float)
    model: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The version of the small model first trained with this label; None = not used yet.
    used_in_training_version: Mapped[str | None] = mapped_column(String(64))
