"""message_stats: one summary row per message; the views read it instead of all events

Every view of 0011 aggregated or searched the whole `events` table per query (seconds over
100,000 messages). `message_stats` holds the same per-message figures, kept by the worker
as it appends events (`mailbot.audit.stats`), and filled here from the events there are.
The views keep their columns and meaning; only where they read from changes.

Revision ID: 0013
Revises: 0012_sentwatch
Create Date: 2026-12-02 19:00:00
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op
from sqlalchemy.orm import Session

revision: str = "0013"
down_revision: str | None = "0012_sentwatch"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _views_0011() -> ModuleType:
    """The view builders of revision 0011 (a file name Python cannot import by name)."""
    path = Path(__file__).with_name("0011_manager_views.py")
    spec = importlib.util.spec_from_file_location("mailbot_migration_0011", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_CLASSIFY = ("intent, intent_confidence, priority, sentiment, language, out_of_scope_score, "
             "head_version, classifier_model AS model, classifier_version AS model_version")


def _replace_block(sql: str, start: str, end: str, replacement: str) -> str:
    pattern = re.escape(start) + r".*?" + re.escape(end)
    new, count = re.subn(pattern, replacement, sql, count=1, flags=re.DOTALL)
    assert count == 1, f"view SQL changed: {start!r}"
    return new


def builders(dialect_name: str) -> dict[str, str]:
    """The SQL of every view, reading `message_stats` ("sqlite" or "postgresql")."""
    old = _views_0011()
    dialect = old._Dialect(dialect_name)

    def join_classify(d: object, outer: str) -> str:
        return (f"LEFT JOIN (SELECT message_pk, {_CLASSIFY} FROM message_stats) c "
                f"ON c.message_pk = {outer}")

    old.join_classify = join_classify
    sql = {name: old.BUILDERS[name](dialect) for name in old.VIEWS}
    sql["v_messages"] = _replace_block(
        sql["v_messages"], "LEFT JOIN (\n  SELECT\n    e.message_pk,",
        ") ev ON ev.message_pk = m.id", "LEFT JOIN message_stats ev ON ev.message_pk = m.id")
    sql["v_escalations"] = _replace_block(
        sql["v_escalations"], "LEFT JOIN (\n  SELECT e.message_pk,\n         COUNT(*) AS llm_calls",
        ") l ON l.message_pk = x.message_pk",
        "LEFT JOIN message_stats l ON l.message_pk = x.message_pk")
    return sql


def upgrade() -> None:
    op.create_table(
        "message_stats",
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("work_events", sa.Integer(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("llm_calls", sa.Integer(), nullable=False),
        sa.Column("llm_failures", sa.Integer(), nullable=False),
        sa.Column("llm_tokens_in", sa.Integer(), nullable=False),
        sa.Column("llm_tokens_out", sa.Integer(), nullable=False),
        sa.Column("llm_cost", sa.Float(), nullable=False),
        sa.Column("text_chars", sa.Float(), nullable=True),
        sa.Column("intent", sa.String(length=200), nullable=True),
        sa.Column("intent_confidence", sa.Float(), nullable=True),
        sa.Column("priority", sa.String(length=64), nullable=True),
        sa.Column("sentiment", sa.String(length=64), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("out_of_scope_score", sa.Float(), nullable=True),
        sa.Column("head_version", sa.String(length=200), nullable=True),
        sa.Column("classifier_model", sa.String(length=200), nullable=True),
        sa.Column("classifier_version", sa.String(length=200), nullable=True),
        sa.Column("route", sa.String(length=64), nullable=True),
        sa.Column("route_reasons", sa.String(length=1000), nullable=True),
        sa.Column("handoff", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_message_stats_message_pk_messages")),
        sa.PrimaryKeyConstraint("message_pk", name=op.f("pk_message_stats")),
    )
    from mailbot.audit.stats import rebuild_message_stats

    rebuild_message_stats(Session(bind=op.get_bind()))
    sql = builders(op.get_bind().dialect.name)
    old = _views_0011()
    for name in old.VIEWS:  # v_messages last: v_daily reads it
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name in reversed(old.VIEWS):
        op.execute(f"CREATE VIEW {name} AS {sql[name]}")


def downgrade() -> None:
    old = _views_0011()
    dialect = old._Dialect(op.get_bind().dialect.name)
    for name in old.VIEWS:
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for name in reversed(old.VIEWS):
        op.execute(f"CREATE VIEW {name} AS {old.BUILDERS[name](dialect)}")
    op.drop_table("message_stats")
