"""One learning run at a time, across every process and host sharing the database.

Two runs at once (the daemon's schedule and an admin's `mailbot learn`, or two workers)
would each train a candidate, and the second promotion would undo the first's comparison.
On PostgreSQL the lock is a session advisory lock, held on its own connection for the
length of the run; SQLite is one host's file, so a lock file beside it does. Either is
released when the process ends, however it ends.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text

from mailbot.db.session import Database
from mailbot.errors import AlreadyRunning

# An arbitrary, fixed 64-bit key for pg_try_advisory_lock ("mailbot learn").
ADVISORY_KEY = 0x6D61696C_6C726E01


class LearningBusy(AlreadyRunning):
    """Another learning run holds the lock; this one did nothing."""


@contextmanager
def learning_lock(database: Database, fallback_dir: Path) -> Iterator[None]:
    """Hold the learning lock for the block, or raise `LearningBusy` at once."""
    busy = LearningBusy("another learning run is in progress (the daemon's schedule or "
                        "`mailbot learn`); this one did nothing: run it again when that "
                        "one has finished")
    if database.engine.dialect.name == "postgresql":
        with database.engine.connect() as conn:
            if not conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                {"k": ADVISORY_KEY}).scalar():
                raise busy
            conn.commit()
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                conn.commit()
        return
    sqlite = database.sqlite_path
    path = (sqlite.with_name(sqlite.name + ".learn-lock") if sqlite is not None
            else fallback_dir / "learn.lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy from None
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
