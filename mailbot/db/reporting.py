"""What the managers' SQL views need beyond the audit log: the prices of `[cost]`, and one
summary row of each message's events (kept by `mailbot.audit.stats`).

The views (`v_messages`, `v_daily`, ... in migration 0011; see docs/sql.md) price the
all-cloud estimate with the one row of `cost_prices`, which the worker writes at start and
`mailbot report` refreshes from the configuration.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, UTCDateTime, utcnow


class CostPrices(Base):
    """The prices the views use: one row, id 1."""

    __tablename__ = "cost_prices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    currency: Mapped[str] = mapped_column(String(8))
    llm_input_per_million: Mapped[float] = mapped_column(Float)
    llm_output_per_million: Mapped[float] = mapped_column(Float)
    chars_per_token: Mapped[float] = mapped_column(Float)
    prompt_overhead_tokens: Mapped[int] = mapped_column(Integer)
    typical_output_tokens: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class MessageStats(Base):
    """What the views read of one message's events (derived: `rebuild_message_stats`)."""

    __tablename__ = "message_stats"

    message_pk: Mapped[int] = mapped_column(
        ForeignKey("messages.id", ondelete="CASCADE"), primary_key=True)
    work_events: Mapped[int] = mapped_column(Integer, default=0)  # every stage but fetch
    cost: Mapped[float | None] = mapped_column(Float)
    llm_calls: Mapped[int] = mapped_column(Integer, default=0)
    llm_failures: Mapped[int] = mapped_column(Integer, default=0)
    llm_tokens_in: Mapped[int] = mapped_column(Integer, default=0)
    llm_tokens_out: Mapped[int] = mapped_column(Integer, default=0)
    llm_cost: Mapped[float] = mapped_column(Float, default=0.0)
    text_chars: Mapped[float | None] = mapped_column(Float)
    intent: Mapped[str | None] = mapped_column(String(200))
    intent_confidence: Mapped[float | None] = mapped_column(Float)
    priority: Mapped[str | None] = mapped_column(String(64))
    sentiment: Mapped[str | None] = mapped_column(String(64))
    language: Mapped[str | None] = mapped_column(String(16))
    out_of_scope_score: Mapped[float | None] = mapped_column(Float)
    head_version: Mapped[str | None] = mapped_column(String(200))
    classifier_model: Mapped[str | None] = mapped_column(String(200))
    classifier_version: Mapped[str | None] = mapped_column(String(200))
    route: Mapped[str | None] = mapped_column(String(64))
    route_reasons: Mapped[str | None] = mapped_column(String(1000))
    handoff: Mapped[str | None] = mapped_column(String(200))
