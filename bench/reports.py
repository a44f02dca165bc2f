"""The managers' views over a large audit log: how long each takes to answer, as revision 0013
writes them (reading the per-message summary `message_stats`) against revision 0011's (summing
every message's events at each query).

Fills a scratch PostgreSQL database (or SQLite with --sqlite) with N synthetic messages and
everything the pipeline and the review desk record for them (tests/support/audit_data.py:
about 9 events a message, drafts, cloud requests, outcomes, corrections), runs ANALYZE, then
reads every view in full (every row and column; on PostgreSQL as COPY text, so Python's row
objects are not what is timed) and runs the example queries of docs/sql.md, first with the
views of 0011 (the baseline), then with those of 0013, then with those and the JIT off:

    .venv/bin/python bench/reports.py [--messages 100000] [--sqlite] [--repeat 3]

Prints the CPU, the time of each view and query (best of --repeat) and the ratio to the
baseline. The last line reads `slowest_view_s=X`. Target: every view under 2 s over 100,000
messages on PostgreSQL.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.orm import Session  # noqa: E402

from mailbot.audit.reports import VIEWS, store_prices  # noqa: E402
from mailbot.config import CostSettings  # noqa: E402
from mailbot.db.session import Database  # noqa: E402
from tests.support.audit_data import insert_rows, synthesize  # noqa: E402

ADMIN_URL = os.environ.get("MAILBOT_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
VIEWS_IN_ORDER = ("v_corrections", "v_escalations", "v_draft_outcomes", "v_daily", "v_messages")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def copy_rows(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """Write rows with PostgreSQL's COPY (the bulk load; the views do not care how)."""
    from psycopg.types.json import Jsonb

    columns = list(rows[0])
    raw = session.connection().connection.driver_connection
    assert raw is not None
    table = model.__tablename__
    with raw.cursor() as cursor, cursor.copy(
            f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([Jsonb(v) if isinstance(v, dict | list) else v
                            for v in (row[c] for c in columns)])


def example_queries(dialect: str) -> list[tuple[str, str]]:
    """The example queries of docs/sql.md for this dialect (see `tests/test_views.py`)."""
    path = Path(__file__).resolve().parents[1] / "docs" / "sql.md"
    if not path.exists():
        return []
    from mailbot.audit.reports import example_queries as parse

    return [(title, sql) for title, sql in parse(path.read_text(), dialect)]


def timed(session: Session, sql: str, repeat: int) -> tuple[float, int]:
    """Best of `repeat`: the time until every row is in (fetched as Python rows)."""
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        count = len(session.execute(text(sql)).all())
        best = min(best, time.perf_counter() - started)
    return best, count


def timed_copy(session: Session, view: str, repeat: int) -> tuple[float, int]:
    """Best of `repeat` on PostgreSQL: every row and column of the view, sent as COPY text, so
    the figure is the database's answer and not Python building 100,000 row objects."""
    raw = session.connection().connection.driver_connection
    assert raw is not None
    best, count = float("inf"), 0
    for _ in range(repeat):
        started = time.perf_counter()
        lines = 0
        with raw.cursor() as cursor, cursor.copy(f"COPY (SELECT * FROM {view}) TO STDOUT") as copy:
            for block in copy:
                lines += bytes(block).count(b"\n")
        best, count = min(best, time.perf_counter() - started), lines
    return best, count


def run_all(database: Database, repeat: int, *, jit: bool = True) -> dict[str, tuple[float, int]]:
    results = {}
    dialect = database.engine.dialect.name
    with database.session() as session:
        if dialect == "postgresql" and not jit:
            session.execute(text("SET LOCAL jit = off"))
        for view in VIEWS:
            results[view] = (timed_copy(session, view, repeat) if dialect == "postgresql"
                             else timed(session, f"SELECT * FROM {view}", repeat))
            print(f"  {view}: {results[view][0]:.3f} s", flush=True)
        for title, sql in example_queries(dialect):
            results[f"query: {title}"] = timed(session, sql, repeat)
    return results


def _migration(name: str) -> Any:
    path = Path(__file__).resolve().parents[1] / "migrations" / "versions" / name
    spec = importlib.util.spec_from_file_location(path.stem.replace("-", "_"), path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def view_sql(database: Database, revision: str) -> dict[str, str]:
    """Every view's SQL as revision "0011" or "0013" wrote it, for this database."""
    dialect = database.engine.dialect.name
    if revision == "0011":
        old = _migration("0011_manager_views.py")
        return {name: build(old._Dialect(dialect)) for name, build in old.BUILDERS.items()}
    return dict(_migration("0013_message_stats.py").builders(dialect))


def use_views(database: Database, sql: dict[str, str]) -> None:
    """Replace the views (v_daily reads v_messages: dropped first, made last)."""
    with database.engine.begin() as conn:
        for name in VIEWS_IN_ORDER:
            conn.execute(text(f"DROP VIEW IF EXISTS {name}"))
        for name in reversed(VIEWS_IN_ORDER):
            conn.execute(text(f"CREATE VIEW {name} AS {sql[name]}"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores), Python {platform.python_version()}, "
          f"load average {os.getloadavg()[0]:.1f}")
    scratch = None
    if args.sqlite:
        folder = tempfile.mkdtemp(prefix="mailbot-bench-reports-")
        url = f"sqlite:///{folder}/bench.db"
    else:
        import psycopg

        scratch = f"mailbot_bench_reports_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{scratch}"')
        url = f"{ADMIN_URL.rsplit('/', 1)[0]}/{scratch}".replace(
            "postgresql://", "postgresql+psycopg://")
    database = Database(url)
    try:
        database.upgrade()
        started = time.perf_counter()
        with database.session() as session:
            store_prices(session, CostSettings())
            made = synthesize(session, args.messages,
                              writer=insert_rows if args.sqlite else copy_rows)
        with database.engine.connect() as conn:
            if not args.sqlite:
                conn = conn.execution_options(isolation_level="AUTOCOMMIT")
                conn.execute(text("VACUUM ANALYZE"))
            else:
                conn.execute(text("ANALYZE"))
                conn.commit()
        print(f"database: {database.engine.dialect.name}; {made.messages} messages, "
              f"{made.events} events, {made.drafts} drafts, {made.outcomes} outcomes, "
              f"{made.labels} corrections, {made.llm_requests} cloud requests "
              f"(filled in {time.perf_counter() - started:.1f} s)")

        current = view_sql(database, "0013")
        use_views(database, view_sql(database, "0011"))
        print("views of 0011 (every message's events summed at each query):")
        baseline = run_all(database, args.repeat)
        use_views(database, current)
        print("views of 0013 (message_stats):")
        indexed = run_all(database, args.repeat)
        # PostgreSQL's JIT compiler costs a second or more on these plans (docs/sql.md).
        no_jit = run_all(database, args.repeat, jit=False) if not args.sqlite else indexed

        print(f"{'what':<50} {'rows':>7} {'0011 s':>10} {'0013 s':>10} {'ratio':>7} "
              f"{'jit off s':>9}")
        for name, (seconds, rows) in indexed.items():
            base = baseline[name][0]
            print(f"{name[:50]:<50} {rows:>7} {base:>10.3f} {seconds:>10.3f} "
                  f"{base / seconds if seconds else float('inf'):>6.2f}x {no_jit[name][0]:>9.3f}")
        print(f"load average now {os.getloadavg()[0]:.1f} (other jobs share these cores)")
        print(f"slowest_view_jit_off_s={max(no_jit[v][0] for v in VIEWS):.3f}")
        slowest_view = max(indexed[v][0] for v in VIEWS)
        slowest_query = max(s for n, (s, _) in indexed.items() if n.startswith("query"))
        print(f"slowest_query_s={slowest_query:.3f}")
        print(f"slowest_view_s={slowest_view:.3f}")
    finally:
        database.dispose()
        if scratch is not None:
            import psycopg

            with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{scratch}" WITH (FORCE)')
    return 0


if __name__ == "__main__":
    sys.exit(main())
