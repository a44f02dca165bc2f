"""The Alembic migrations and the SQLAlchemy models agree, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, select, text
from sqlalchemy.exc import DBAPIError

import mailbot.db  # noqa: F401  (all tables registered)
from mailbot.audit.events import record_event
from mailbot.db.base import Base
from mailbot.db.session import Database
from mailbot.ingest.ledger import get_or_create_mailbox


def schema_diff(database: Database) -> list:
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def test_upgrade_downgrade_upgrade_and_models_agree(db_url: str) -> None:
    database = Database(db_url)
    database.upgrade()
    assert database.current_revision() == database.head_revision()
    assert schema_diff(database) == []
    database.downgrade("base")
    tables = set(inspect(database.engine).get_table_names()) - {"alembic_version"}
    assert tables == set()
    database.upgrade()
    assert schema_diff(database) == []
    assert {"accounts", "mailboxes", "messages", "events", "raw_messages"} <= set(
        inspect(database.engine).get_table_names())
    database.dispose()


def test_events_are_append_only(database: Database) -> None:
    with database.session() as session:
        mailbox = get_or_create_mailbox(session, "acct", "INBOX")
        record_event(session, "poll", "ok", mailbox_id=mailbox.id, details={"n": 1})
    with pytest.raises(DBAPIError), database.engine.begin() as conn:
        conn.execute(text("UPDATE events SET outcome = 'forged'"))
    with pytest.raises(DBAPIError), database.engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT outcome FROM events")).scalars().all() == ["ok"]


def test_schema_check_refuses_an_old_database(db_url: str) -> None:
    from mailbot.db.session import SchemaOutOfDate

    database = Database(db_url)
    with pytest.raises(SchemaOutOfDate, match="mailbot db upgrade"):
        database.check_schema()
    database.upgrade()
    database.check_schema()
    database.dispose()


def test_database_down_gives_a_clear_error() -> None:
    from mailbot.errors import DatabaseUnavailable

    database = Database("postgresql://nobody@127.0.0.1:1/none")
    with (
        pytest.raises(DatabaseUnavailable, match="127.0.0.1:1.*unavailable.*server is running"),
        database.session() as session,
    ):
        session.execute(select(1))
