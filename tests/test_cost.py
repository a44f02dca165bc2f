"""Cost functions on known inputs, CPU measurement, and the cloud budget by day and month."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from mailbot.audit.cost import (
    TokenPrices,
    budget_state,
    cpu_cost,
    estimate_tokens,
    llm_cost,
    measure_cpu,
    period_starts,
    record_budget_exhausted,
)
from mailbot.config import CostSettings
from mailbot.db.models import Event


def test_llm_cost_on_known_inputs() -> None:
    prices = TokenPrices(input_per_million=2.5, output_per_million=10.0)
    assert llm_cost(1_000_000, 0, prices) == pytest.approx(2.5)
    assert llm_cost(0, 1_000_000, prices) == pytest.approx(10.0)
    assert llm_cost(1200, 300, prices) == pytest.approx(0.003 + 0.003)
    assert llm_cost(0, 0, prices) == 0.0
    with pytest.raises(ValueError):
        llm_cost(-1, 0, prices)


def test_cpu_cost_on_known_inputs() -> None:
    assert cpu_cost(3600, 0.05) == pytest.approx(0.05)
    assert cpu_cost(0.36, 0.05) == pytest.approx(0.000005)
    with pytest.raises(ValueError):
        cpu_cost(-1, 0.05)


@pytest.mark.parametrize(("chars", "ratio", "tokens"), [(0, 4, 0), (1, 4, 1), (8, 4, 2),
                                                       (9, 4, 3), (700, 3.5, 200)])
def test_estimate_tokens(chars: int, ratio: float, tokens: int) -> None:
    assert estimate_tokens(chars, ratio) == tokens


def test_measure_cpu_counts_work_not_waiting() -> None:
    with measure_cpu() as busy:
        deadline = time.perf_counter() + 0.15
        while time.perf_counter() < deadline:
            sum(range(1000))
    with measure_cpu("thread") as idle:
        time.sleep(0.15)
    assert busy.seconds > 0.05
    assert idle.seconds < 0.05


def llm_event(session, cost: float, at: datetime, stage: str = "llm") -> None:
    # Direct rows, because record_event stamps the current time and these need past ones.
    session.add(Event(stage=stage, outcome="ok", details={}, cost=cost, actor="worker",
                      created_at=at))


def settings(**values) -> CostSettings:
    return CostSettings(**values)


def test_daily_budget(database) -> None:
    now = datetime(2026, 3, 10, 15, 0, tzinfo=UTC)
    with database.session() as session:
        llm_event(session, 0.6, now - timedelta(hours=2))
        llm_event(session, 0.3, now - timedelta(hours=1))
        llm_event(session, 5.0, now - timedelta(days=1))  # yesterday: not today's
        llm_event(session, 9.0, now - timedelta(hours=1), stage="classify")  # not the cloud
    cfg = settings(daily_budget=1.0)
    with database.session() as session:
        state = budget_state(session, now, cfg)
        assert state.allowed and state.spent_today == pytest.approx(0.9)
        assert state.spent_month == pytest.approx(5.9)
        llm_event(session, 0.1, now - timedelta(minutes=1))
    with database.session() as session:
        state = budget_state(session, now, cfg)
        assert not state.allowed
        assert state.reason.startswith("daily cloud LLM budget reached: spent 1.0000 of 1.00 USD")
        assert budget_state(session, now + timedelta(days=1), cfg).allowed  # a new day


def test_monthly_budget(database) -> None:
    now = datetime(2026, 3, 31, 12, 0, tzinfo=UTC)
    cfg = settings(daily_budget=10.0, monthly_budget=20.0, currency="EUR")
    with database.session() as session:
        for day in range(1, 31):  # 0.7 a day for 30 days: 21.0, never 10 in one day
            llm_event(session, 0.7, datetime(2026, 3, day, 9, 0, tzinfo=UTC))
        llm_event(session, 50.0, datetime(2026, 2, 28, 9, 0, tzinfo=UTC))  # last month
    with database.session() as session:
        state = budget_state(session, now, cfg)
        assert not state.allowed
        assert state.spent_month == pytest.approx(21.0) and state.spent_today == 0.0
        assert "monthly cloud LLM budget reached" in state.reason and "EUR" in state.reason
        assert budget_state(session, datetime(2026, 4, 1, 0, 0, tzinfo=UTC), cfg).allowed
        assert budget_state(session, now, settings(daily_budget=10.0)).allowed  # 0 = no limit
        event = record_budget_exhausted(session, state, message_pk=None)
        session.flush()
        stored = session.scalars(select(Event).where(Event.stage == "budget")).one()
        assert stored is event and stored.outcome == "exhausted"
        assert stored.details["route"] == "human"
        assert stored.details["spent_month"] == pytest.approx(21.0)
        assert "monthly" in stored.details["reason"]


def test_budget_days_follow_the_configured_time_zone(sqlite_database) -> None:
    # 23:30 UTC on 1 March is already 2 March in Berlin.
    with sqlite_database.session() as session:
        llm_event(session, 2.0, datetime(2026, 3, 1, 23, 30, tzinfo=UTC))
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    with sqlite_database.session() as session:
        assert budget_state(session, now, settings(daily_budget=1.0)).allowed
        berlin = settings(daily_budget=1.0, timezone="Europe/Berlin")
        assert not budget_state(session, now, berlin).allowed
    day, month = period_starts(now, "Europe/Berlin")
    assert day == datetime(2026, 3, 1, 23, 0, tzinfo=UTC)
    assert month == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)


def test_unknown_time_zone_is_a_config_error() -> None:
    from mailbot.config import config_from_dict
    from mailbot.errors import ConfigError

    expected = "cost.timezone = .Mars/Olympus.: expected an IANA time zone name"
    with pytest.raises(ConfigError, match=expected):
        config_from_dict({"cost": {"timezone": "Mars/Olympus"}})
