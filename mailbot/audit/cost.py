"""Cost accounting: what each step cost, the cloud budget, and the all-cloud comparison.

Prices come from `[cost]` in the config. The cloud model costs its price per million input
and output tokens; the small model costs the CPU time it used at a price per CPU-hour.
`cost_report` answers the manager's question: what did we spend, and what would the same
mail have cost sent entirely to the cloud model?

Token estimates, where no tokens were counted, use `chars_per_token` characters per token
(4.0 by default: OpenAI's rule of thumb for English; German or Spanish text is nearer 3.5).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.config import CostSettings
from mailbot.db.models import Event, Message, MessageStatus, RawMessage

log = logging.getLogger(__name__)

# The audit-log stage of every cloud LLM call (written by `mailbot.llm.audit`).
LLM_STAGE = "llm"
BUDGET_STAGE = "budget"
_EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class TokenPrices:
    """A cloud model's prices per million input and output tokens."""

    input_per_million: float = 0.0
    output_per_million: float = 0.0

    @classmethod
    def from_settings(cls, settings: CostSettings) -> TokenPrices:
        return cls(settings.llm_input_per_million, settings.llm_output_per_million)


def llm_cost(tokens_in: int, tokens_out: int, prices: TokenPrices) -> float:
    """The price of one cloud call: tokens times the price per million, in and out."""
    if tokens_in < 0 or tokens_out < 0:
        raise ValueError("token counts must be >= 0")
    return (tokens_in * prices.input_per_million + tokens_out * prices.output_per_million) / 1e6


def cpu_cost(cpu_seconds: float, price_per_cpu_hour: float) -> float:
    """The price of `cpu_seconds` of CPU time at `price_per_cpu_hour`."""
    if cpu_seconds < 0:
        raise ValueError("cpu_seconds must be >= 0")
    return cpu_seconds / 3600.0 * price_per_cpu_hour


def estimate_tokens(chars: int, chars_per_token: float = 4.0) -> int:
    """Tokens in a text of `chars` characters, rounded up (0 for an empty text)."""
    if chars <= 0:
        return 0
    return math.ceil(chars / chars_per_token)


@dataclass(slots=True)
class CpuUsage:
    """CPU seconds used inside a `measure_cpu` block (filled in when the block ends)."""

    seconds: float = 0.0


@contextmanager
def measure_cpu(scope: Literal["process", "thread"] = "process") -> Iterator[CpuUsage]:
    """Measure the CPU time of a block: `with measure_cpu() as usage: ...; usage.seconds`.

    "process" (the default) counts every thread of the process, which includes the worker
    threads CTranslate2 runs inference on; "thread" counts only the calling thread, for a
    stage that does all its work itself while other threads are busy.
    """
    clock = time.process_time if scope == "process" else time.thread_time
    usage = CpuUsage()
    started = clock()
    try:
        yield usage
    finally:
        usage.seconds = max(0.0, clock() - started)


# --- budgets ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetState:
    """Whether the cloud LLM may be called now, and why not."""

    allowed: bool
    reason: str | None
    spent_today: float
    spent_month: float
    daily_budget: float  # 0 = no limit
    monthly_budget: float  # 0 = no limit
    currency: str = "USD"


def period_starts(now: datetime, timezone: str = "UTC") -> tuple[datetime, datetime]:
    """The start of `now`'s day and month in `timezone`, as UTC datetimes."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    zone = ZoneInfo(timezone)
    local = now.astimezone(zone)
    day = datetime(local.year, local.month, local.day, tzinfo=zone)
    month = datetime(local.year, local.month, 1, tzinfo=zone)
    return day.astimezone(UTC), month.astimezone(UTC)


def llm_spent(session: Session, since: datetime, until: datetime | None = None) -> float:
    """The summed cost of cloud LLM calls recorded since `since` (and before `until`)."""
    query = select(func.coalesce(func.sum(Event.cost), 0.0)).where(
        Event.stage == LLM_STAGE, Event.created_at >= since
    )
    if until is not None:
        query = query.where(Event.created_at < until)
    return float(session.scalar(query) or 0.0)


def budget_state(
    session: Session,
    now: datetime,
    settings: CostSettings,
    *,
    reserved: float = 0.0,
    more: float = 0.0,
) -> BudgetState:
    """Whether today's and this month's cloud spending leave room for another call.

    `reserved` is what calls now in flight may still cost, `more` what the next call may
    cost; the budget allows the call only if all of it fits.
    """
    day_start, month_start = period_starts(now, settings.timezone)
    spent_today = llm_spent(session, day_start, now) + reserved
    spent_month = llm_spent(session, month_start, now) + reserved
    reason = None
    # A small tolerance: 0.6 + 0.3 + 0.1 sums to 0.9999999999999999 in floating point.
    if settings.daily_budget and spent_today + more > settings.daily_budget + _EPSILON or (
            settings.daily_budget and spent_today >= settings.daily_budget - _EPSILON):
        reason = (
            f"daily cloud LLM budget reached: spent {spent_today:.4f} of "
            f"{settings.daily_budget:.2f} {settings.currency} today ({settings.timezone})"
        )
    elif settings.monthly_budget and (
            spent_month + more > settings.monthly_budget + _EPSILON
            or spent_month >= settings.monthly_budget - _EPSILON):
        reason = (
            f"monthly cloud LLM budget reached: spent {spent_month:.4f} of "
            f"{settings.monthly_budget:.2f} {settings.currency} this month ({settings.timezone})"
        )
    return BudgetState(
        allowed=reason is None,
        reason=reason,
        spent_today=spent_today,
        spent_month=spent_month,
        daily_budget=settings.daily_budget,
        monthly_budget=settings.monthly_budget,
        currency=settings.currency,
    )


def record_budget_exhausted(
    session: Session,
    state: BudgetState,
    *,
    message_pk: int | None = None,
    mailbox_id: int | None = None,
) -> Event:
    """Audit that a message went to a human instead of the cloud LLM because of the budget."""
    return record_event(
        session,
        BUDGET_STAGE,
        "exhausted",
        message_pk=message_pk,
        mailbox_id=mailbox_id,
        details={
            "reason": state.reason,
            "spent_today": round(state.spent_today, 6),
            "spent_month": round(state.spent_month, 6),
            "daily_budget": state.daily_budget,
            "monthly_budget": state.monthly_budget,
            "currency": state.currency,
            "route": "human",
        },
    )


# --- the report ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CostReport:
    """What `mailbot report cost` prints."""

    since: datetime | None
    until: datetime | None
    currency: str
    messages: int  # messages handled in the window
    escalated: int  # of those, messages with a cloud LLM call
    spent: float  # the sum of every recorded cost
    spent_llm: float
    spent_local: float  # the small model and everything else that recorded a cost
    llm_tokens_in: int
    llm_tokens_out: int
    all_cloud_estimate: float  # the same mail sent entirely to the cloud model
    all_cloud_tokens_in: int
    all_cloud_tokens_out: int
    estimated_messages: int  # messages whose all-cloud tokens were estimated from text length
    assumptions: dict[str, Any] = field(default_factory=dict)

    @property
    def escalated_share(self) -> float:
        return self.escalated / self.messages if self.messages else 0.0

    @property
    def saving(self) -> float:
        """The share of the all-cloud cost not spent (0.8 = 80 % saved)."""
        if self.all_cloud_estimate <= 0:
            return 0.0
        return 1.0 - self.spent / self.all_cloud_estimate

    def to_json(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "currency": self.currency,
            "messages": self.messages,
            "escalated": self.escalated,
            "escalated_share": round(self.escalated_share, 6),
            "spent": round(self.spent, 6),
            "spent_llm": round(self.spent_llm, 6),
            "spent_local": round(self.spent_local, 6),
            "llm_tokens_in": self.llm_tokens_in,
            "llm_tokens_out": self.llm_tokens_out,
            "all_cloud_estimate": round(self.all_cloud_estimate, 6),
            "all_cloud_tokens_in": self.all_cloud_tokens_in,
            "all_cloud_tokens_out": self.all_cloud_tokens_out,
            "estimated_messages": self.estimated_messages,
            "saving_percent": round(self.saving * 100.0, 2),
            "assumptions": self.assumptions,
        }


@dataclass(slots=True)
class _Tally:
    llm_calls: int = 0
    llm_in: int = 0
    llm_out: int = 0


def local_midnight(day: date, timezone: str = "UTC") -> datetime:
    """The start of a calendar day in `timezone`, in UTC."""
    return datetime(day.year, day.month, day.day, tzinfo=ZoneInfo(timezone)).astimezone(UTC)


def cost_report(
    session: Session,
    settings: CostSettings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> CostReport:
    """Spending and the all-cloud comparison for the events in [since, until).

    A message counts as handled when a stage after fetching recorded an event for it in the
    window and it is neither still waiting (fetched) nor left alone (skipped: auto-replies,
    bounces). Its all-cloud cost is
    its recorded cloud tokens when it was escalated; otherwise its text length in tokens plus
    `prompt_overhead_tokens` in and `typical_output_tokens` out.
    """
    window = []
    if since is not None:
        window.append(Event.created_at >= since)
    if until is not None:
        window.append(Event.created_at < until)

    spent_llm = spent_all = 0.0
    for stage, total in session.execute(
        select(Event.stage, func.coalesce(func.sum(Event.cost), 0.0))
        .where(*window)
        .group_by(Event.stage)
    ):
        spent_all += float(total or 0.0)
        if stage == LLM_STAGE:
            spent_llm += float(total or 0.0)

    handled: dict[int, _Tally] = {}
    rows = session.execute(
        select(Event.message_pk, Event.stage, Event.tokens_in, Event.tokens_out)
        .join(Message, Message.id == Event.message_pk)
        .where(
            *window,
            # Fetching is not handling: a message counts once a stage has worked on it.
            Event.stage != "fetch",
            Message.status.not_in([MessageStatus.FETCHED, MessageStatus.SKIPPED]),
        )
    )
    for message_pk, stage, tokens_in, tokens_out in rows:
        assert message_pk is not None  # the inner join guarantees it
        tally = handled.setdefault(message_pk, _Tally())
        if stage == LLM_STAGE:
            tally.llm_calls += 1
            tally.llm_in += tokens_in or 0
            tally.llm_out += tokens_out or 0

    prices = TokenPrices.from_settings(settings)
    cloud_in = cloud_out = 0
    llm_in = sum(t.llm_in for t in handled.values())
    llm_out = sum(t.llm_out for t in handled.values())
    to_estimate = []
    for message_pk, tally in handled.items():
        if tally.llm_calls and tally.llm_in > 0:
            cloud_in += tally.llm_in
            cloud_out += tally.llm_out
        else:
            to_estimate.append(message_pk)
    for chars in _text_lengths(session, to_estimate):
        cloud_in += settings.prompt_overhead_tokens + estimate_tokens(
            chars, settings.chars_per_token
        )
        cloud_out += settings.typical_output_tokens

    return CostReport(
        since=since,
        until=until,
        currency=settings.currency,
        messages=len(handled),
        escalated=sum(1 for t in handled.values() if t.llm_calls),
        spent=spent_all,
        spent_llm=spent_llm,
        spent_local=spent_all - spent_llm,
        llm_tokens_in=llm_in,
        llm_tokens_out=llm_out,
        all_cloud_estimate=llm_cost(cloud_in, cloud_out, prices),
        all_cloud_tokens_in=cloud_in,
        all_cloud_tokens_out=cloud_out,
        estimated_messages=len(to_estimate),
        assumptions={
            "llm_input_per_million": prices.input_per_million,
            "llm_output_per_million": prices.output_per_million,
            "chars_per_token": settings.chars_per_token,
            "prompt_overhead_tokens": settings.prompt_overhead_tokens,
            "typical_output_tokens": settings.typical_output_tokens,
        },
    )


def _text_lengths(session: Session, message_pks: list[int]) -> Iterator[int]:
    """Characters of each message's subject and new text, as its parse event recorded them
    (the SQL views use the same figure); parsed again for mail parsed before that was
    recorded, and its raw size if unparsable."""
    from mailbot.errors import ParseError
    from mailbot.parse.mime import parse_message

    for start in range(0, len(message_pks), 500):
        chunk = message_pks[start : start + 500]
        recorded: dict[int, int] = {}
        for pk, details in session.execute(
            select(Event.message_pk, Event.details)
            .where(Event.stage == "parse", Event.message_pk.in_(chunk))
            .order_by(Event.id)
        ):
            chars = (details or {}).get("text_chars")
            if pk is not None and isinstance(chars, int):
                recorded[pk] = chars
        yield from (recorded[pk] for pk in chunk if pk in recorded)
        chunk = [pk for pk in chunk if pk not in recorded]
        if not chunk:
            continue
        found = dict(
            session.execute(
                select(RawMessage.message_pk, RawMessage.raw).where(
                    RawMessage.message_pk.in_(chunk)
                )
            ).all()
        )
        sizes = dict(
            session.execute(select(Message.id, Message.size).where(Message.id.in_(chunk))).all()
        )
        for pk in chunk:
            raw = found.get(pk)
            if raw is None:
                yield int(sizes.get(pk) or 0)
                continue
            try:
                message = parse_message(bytes(raw))
            except ParseError:
                yield len(raw)
                continue
            yield len(message.subject or "") + len(message.new_text or message.text or "")
