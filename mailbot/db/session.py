"""Engine and session handling, schema upgrades, and clear errors when the database is down."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from mailbot.errors import ConfigError, DatabaseUnavailable, ExitCode, PermanentError

log = logging.getLogger(__name__)


class SchemaOutOfDate(PermanentError):
    """The database schema is older (or newer) than this version of mailbot expects."""

    exit_code = ExitCode.UNAVAILABLE


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLAlchemy, not the sqlite3 module, begins transactions (see `_sqlite_begin`): the
    # module's own implicit BEGIN breaks savepoints.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status, reports) run while the worker writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Any) -> None:
    # Every transaction takes the write lock at its start. Threads of one worker (the poll,
    # the cloud calls, the lease keeper) write at once; a transaction that read first and
    # wrote later would fail at once (SQLITE_BUSY_SNAPSHOT) instead of waiting its turn.
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str, *, echo: bool = False) -> Engine:
    """Create an engine (SQLite gets WAL mode); nothing is created until first use."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError(
            f"database.url = {url!r}: expected an SQLAlchemy URL such as "
            "'sqlite:////var/lib/mailbot/mailbot.db' or "
            "'postgresql+psycopg://mailbot@db.example.com/mailbot'"
        ) from None
    if parsed.drivername.startswith("sqlite"):
        engine = create_engine(parsed, echo=echo, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        return create_engine(parsed, echo=echo, pool_pre_ping=True)
    except ImportError as exc:
        raise ConfigError(f"database.url = {url!r}: driver not installed ({exc})") from None


def migrations_dir() -> Path:
    """The Alembic script directory (top-level migrations/, shipped as mailbot.migrations)."""
    return Path(str(resources.files("mailbot.migrations")))


def _describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


class Database:
    """The ledger and audit database: an engine, a session factory and schema management."""

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, echo=echo)
        database = self.engine.url.database
        self.sqlite_path = (
            Path(database) if self.engine.dialect.name == "sqlite" and database
            and database != ":memory:" else None
        )
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error."""
        try:
            with self._sessions.begin() as session:
                yield session
        except OperationalError as exc:
            raise self.unavailable(exc) from exc

    def unavailable(self, exc: Exception) -> DatabaseUnavailable:
        reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        return DatabaseUnavailable(
            f"database {_describe_url(self.url)} is unavailable: {reason}; "
            "check that the server is running and database.url is right"
        )

    def alembic_config(self) -> Any:
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(migrations_dir()))
        cfg.set_main_option("sqlalchemy.url", self.url.replace("%", "%%"))
        return cfg

    def upgrade(self, revision: str = "head") -> None:
        """Apply migrations up to `revision`, in one transaction with the version record."""
        from alembic import command

        if self.sqlite_path is not None:
            self.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
        self._run_alembic(command.upgrade, revision)

    def downgrade(self, revision: str) -> None:
        from alembic import command

        self._run_alembic(command.downgrade, revision)

    def _run_alembic(self, fn: Any, revision: str) -> None:
        cfg = self.alembic_config()
        try:
            with self.engine.begin() as connection:
                cfg.attributes["connection"] = connection
                fn(cfg, revision)
        except OperationalError as exc:
            raise self.unavailable(exc) from exc

    def current_revision(self) -> str | None:
        from alembic.runtime.migration import MigrationContext

        try:
            with self.engine.connect() as connection:
                return MigrationContext.configure(connection).get_current_revision()
        except OperationalError as exc:
            raise self.unavailable(exc) from exc

    def head_revision(self) -> str | None:
        from alembic.script import ScriptDirectory

        return ScriptDirectory.from_config(self.alembic_config()).get_current_head()

    def check_schema(self) -> None:
        """Refuse to run against a database whose schema is not at this version's head."""
        if self.sqlite_path is not None and not self.sqlite_path.exists():
            raise SchemaOutOfDate(
                f"there is no database at {self.sqlite_path} yet; run `mailbot db upgrade` "
                "(or `mailbot run`, which creates it)"
            )
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise SchemaOutOfDate(
                f"database {_describe_url(self.url)} is at schema revision {current or 'none'}, "
                f"this mailbot needs {head}; run `mailbot db upgrade`"
            )

    def ensure_schema(self) -> None:
        """Upgrade a fresh or SQLite database in place; check (never touch) any other one."""
        if self.engine.dialect.name == "sqlite" or not inspect(self.engine).get_table_names():
            self.upgrade()
        else:
            self.check_schema()

    def dispose(self) -> None:
        self.engine.dispose()
