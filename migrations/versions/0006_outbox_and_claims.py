"""outbox, message claims, cloud LLM requests, personal facts apart from events

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 09:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_EVENT_COLUMNS = ("id", "message_pk", "mailbox_id", "stage", "outcome", "details", "model",
                  "model_version", "latency_ms", "tokens_in", "tokens_out", "cost", "actor",
                  "created_at")


def upgrade() -> None:
    with op.batch_alter_table("mailboxes") as batch:
        batch.add_column(sa.Column("lease_epoch", sa.BigInteger(), nullable=False,
                                   server_default="0"))
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("body_hash", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("claimed_by", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("claim_expires_at", sa.DateTime(timezone=True),
                                   nullable=True))
        batch.add_column(sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_error", sa.Text(), nullable=True))
        batch.add_column(sa.Column("erased_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_messages_mailbox_body_hash", ["mailbox_id", "body_hash"])

    op.create_table(
        "message_facts",
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("data", _JSON, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_message_facts_message_pk_messages")),
        sa.PrimaryKeyConstraint("message_pk", name=op.f("pk_message_facts")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=True),
        sa.Column("mailbox_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key", sa.String(length=1000), nullable=False),
        sa.Column("payload", _JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("claim_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("result", _JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["mailbox_id"], ["mailboxes.id"],
                                name=op.f("fk_outbox_mailbox_id_mailboxes")),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"],
                                name=op.f("fk_outbox_message_pk_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
        sa.UniqueConstraint("key", name=op.f("uq_outbox_key")),
    )
    op.create_index("ix_outbox_mailbox_id_state", "outbox", ["mailbox_id", "state"])
    op.create_index(op.f("ix_outbox_message_pk"), "outbox", ["message_pk"])
    op.create_table(
        "llm_requests",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("request", _JSON, nullable=False),
        sa.Column("answer", _JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("reserved_cost", sa.Float(), nullable=False),
        sa.Column("cost", sa.Float(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), nullable=True),
        sa.Column("tokens_out", sa.Integer(), nullable=True),
        sa.Column("claimed_by", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"],
                                name=op.f("fk_llm_requests_message_pk_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_llm_requests")),
        sa.UniqueConstraint("message_pk", "task", name=op.f("uq_llm_requests_message_pk_task")),
    )
    op.create_index("ix_llm_requests_state", "llm_requests", ["state"])
    budget = op.create_table(
        "budget_lock",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("turns", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_budget_lock")),
    )
    op.bulk_insert(budget, [{"id": 1, "turns": 0}])

    # Events keep their message and mailbox: erasure scrubs a message's personal data and
    # keeps its row, so nothing needs to null these columns any more, and the guard can
    # refuse every change.
    _drop_guard()
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("fk_events_message_pk_messages", type_="foreignkey")
        batch.drop_constraint("fk_events_mailbox_id_mailboxes", type_="foreignkey")
        batch.create_foreign_key("fk_events_message_pk_messages", "messages",
                                 ["message_pk"], ["id"])
        batch.create_foreign_key("fk_events_mailbox_id_mailboxes", "mailboxes",
                                 ["mailbox_id"], ["id"])
    _create_guard()


def downgrade() -> None:
    _drop_guard()
    with op.batch_alter_table("events") as batch:
        batch.drop_constraint("fk_events_message_pk_messages", type_="foreignkey")
        batch.drop_constraint("fk_events_mailbox_id_mailboxes", type_="foreignkey")
        batch.create_foreign_key("fk_events_message_pk_messages", "messages",
                                 ["message_pk"], ["id"], ondelete="SET NULL")
        batch.create_foreign_key("fk_events_mailbox_id_mailboxes", "mailboxes",
                                 ["mailbox_id"], ["id"], ondelete="SET NULL")
    _create_old_guard()
    op.drop_table("budget_lock")
    op.drop_index("ix_llm_requests_state", table_name="llm_requests")
    op.drop_table("llm_requests")
    op.drop_index(op.f("ix_outbox_message_pk"), table_name="outbox")
    op.drop_index("ix_outbox_mailbox_id_state", table_name="outbox")
    op.drop_table("outbox")
    op.drop_table("message_facts")
    with op.batch_alter_table("messages") as batch:
        batch.drop_index("ix_messages_mailbox_body_hash")
        for column in ("erased_at", "last_error", "retry_at", "attempts", "claim_expires_at",
                       "claimed_by", "body_hash", "sent_at"):
            batch.drop_column(column)
    with op.batch_alter_table("mailboxes") as batch:
        batch.drop_column("lease_epoch")


# The audit log is append-only: the database itself refuses every UPDATE, DELETE and
# TRUNCATE of events, whichever column, whoever asks.
_PG_GUARD = """
CREATE FUNCTION mailbot_events_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'events is an append-only audit log (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION mailbot_events_append_only();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION mailbot_events_append_only();
"""


def _create_guard() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(_PG_GUARD)
    elif dialect == "sqlite":
        # SQLite has no TRUNCATE: a DELETE without WHERE fires the row trigger too.
        op.execute("CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
                   "BEGIN SELECT RAISE(ABORT, 'events is an append-only audit log'); END")
        op.execute("CREATE TRIGGER events_no_update BEFORE UPDATE ON events "
                   "BEGIN SELECT RAISE(ABORT, 'events is an append-only audit log'); END")


def _drop_guard() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS events_no_truncate ON events")
        op.execute("DROP TRIGGER IF EXISTS events_append_only ON events")
        op.execute("DROP FUNCTION IF EXISTS mailbot_events_append_only()")
    elif dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS events_no_delete")
        op.execute("DROP TRIGGER IF EXISTS events_no_update")


def _create_old_guard() -> None:
    # The guard of revision 0001, for a downgrade.
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("""
CREATE FUNCTION mailbot_events_append_only() RETURNS trigger AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND NEW.id = OLD.id AND NEW.stage = OLD.stage
       AND NEW.outcome = OLD.outcome AND NEW.created_at = OLD.created_at
       AND NEW.details::text = OLD.details::text
       AND (NEW.message_pk IS NULL OR NEW.mailbox_id IS NULL) THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'events is an append-only audit log';
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION mailbot_events_append_only();
""")
    elif dialect == "sqlite":
        op.execute("CREATE TRIGGER events_no_delete BEFORE DELETE ON events "
                   "BEGIN SELECT RAISE(ABORT, 'events is an append-only audit log'); END")
        op.execute("CREATE TRIGGER events_no_update BEFORE UPDATE OF "
                   + ", ".join(_EVENT_COLUMNS[:1] + _EVENT_COLUMNS[3:])
                   + " ON events BEGIN SELECT RAISE(ABORT, "
                   "'events is an append-only audit log'); END")
