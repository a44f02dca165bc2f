"""The worker as an admin runs it: a real process, real signals, a real Dovecot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from sqlalchemy import func, select

from mailbot.db.models import Event, Message, MessageStatus
from mailbot.db.session import Database
from tests.support.dovecot import ImapUser
from tests.support.mail import support_email


def write_config(
    tmp_path: Path, user: ImapUser, db_url: str, models: Path | None = None, **account: object
) -> Path:
    """A config for `user`; with `models`, the classify stage runs on those models."""
    settings = user.account_settings(**account)
    lines = [f'data_dir = "{tmp_path / "var"}"', "[database]", f'url = "{db_url}"',
             "[worker]", "retry_base_seconds = 0.1", "retry_max_seconds = 1.0",
             "[models]", f'dir = "{models or tmp_path}"',
             "[classifier]", f"enabled = {'true' if models else 'false'}", "[[accounts]]"]
    for key, value in settings.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path = tmp_path / "mailbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def mailbot(config: Path, *args: str, **kwargs: object) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "mailbot", "--config", str(config), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            **kwargs)


def count(database: Database, status: str | None = None) -> int:
    query = select(func.count()).select_from(Message)
    if status:
        query = query.where(Message.status == status)
    with database.session() as session:
        return int(session.scalar(query) or 0)


def test_sigkill_mid_batch_then_restart_keeps_every_message_once(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str
) -> None:
    total = 400
    imap_user.append_many([support_email(i) for i in range(total)])
    config = write_config(tmp_path, imap_user, sqlite_url, fetch_batch=10)
    database = Database(sqlite_url)
    database.upgrade()
    worker = mailbot(config, "run")
    try:
        deadline = time.monotonic() + 60
        while count(database) < 30 and time.monotonic() < deadline:
            time.sleep(0.005)
        seen_before_kill = count(database)
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=10)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert 0 < seen_before_kill < total, "the kill should land in the middle of the sync"

    again = mailbot(config, "run", "--once")
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    with database.session() as session:
        rows = session.execute(select(Message.uid, Message.sha256)).all()
        parses = Counter(session.scalars(select(Event.message_pk).where(Event.stage == "parse")))
    assert len(rows) == total
    assert len({uid for uid, _ in rows}) == total and len({sha for _, sha in rows}) == total
    assert len(parses) == total and set(parses.values()) == {1}


def test_sigterm_stops_cleanly_and_status_shows_the_mailbox(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path
) -> None:
    imap_user.append_many([support_email(i) for i in range(5)])
    config = write_config(tmp_path, imap_user, sqlite_url, models=encoder_dir.parent,
                          poll_interval=3600)
    database = Database(sqlite_url)
    database.upgrade()
    worker = mailbot(config, "run")
    try:
        deadline = time.monotonic() + 60
        while (count(database) - count(database, MessageStatus.FETCHED) < 5
               and time.monotonic() < deadline):
            time.sleep(0.05)
        worker.send_signal(signal.SIGTERM)
        _, err = worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, err
    assert "stopped" in err

    status = mailbot(config, "status", "--json")
    out, err = status.communicate(timeout=60)
    assert status.returncode == 0, err
    [row] = json.loads(out)
    assert row["account"] == imap_user.name and row["mailbox"] == "INBOX"
    assert sum(row["counts"].values()) == 5 and "fetched" not in row["counts"]
    assert row["last_uid"] == 5
    assert row["last_error"] is None
    # Each classification names the model and version that produced it.
    with database.session() as session:
        classified = list(session.scalars(select(Event).where(Event.stage == "classify")))
    assert len(classified) == 5
    assert all(e.model == "all-MiniLM-L6-v2" and e.model_version for e in classified)
    assert all(e.details["intent"]["label"] for e in classified)


def test_idle_picks_up_new_mail_without_waiting_for_the_poll(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str
) -> None:
    config = write_config(tmp_path, imap_user, sqlite_url, poll_interval=3600, idle=True)
    database = Database(sqlite_url)
    database.upgrade()
    worker = mailbot(config, "run")
    try:
        deadline = time.monotonic() + 30
        while not _polled(database) and time.monotonic() < deadline:
            time.sleep(0.1)
        # Give the watcher a moment to enter IDLE, then deliver a message.
        time.sleep(1.0)
        imap_user.append(support_email(1))
        deadline = time.monotonic() + 30
        while count(database) < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert count(database) == 1, "IDLE should have triggered a poll within seconds"
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()


def _polled(database: Database) -> bool:
    from mailbot.db.models import Mailbox

    with database.session() as session:
        return session.scalar(select(Mailbox.last_poll_at).limit(1)) is not None


def test_run_once_exit_code_reflects_a_failing_mailbox(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str
) -> None:
    config = write_config(tmp_path, imap_user, sqlite_url, password="wrong")
    run = mailbot(config, "run", "--once")
    out, err = run.communicate(timeout=120)
    assert run.returncode == 1
    assert "refused" in out and "Traceback" not in err
    status = mailbot(config, "status")
    out, _ = status.communicate(timeout=60)
    assert "last error" in out and "refused" in out
