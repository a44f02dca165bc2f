"""What the managers' SQL views need beyond the audit log: the prices of `[cost]`.

The views (`v_messages`, `v_daily`, ... in migration 0011; see docs/sql.md) price the
all-cloud estimate with the one row of `cost_prices`, which the worker writes at start and
`mailbot report` refreshes from the configuration.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Integer, String
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
