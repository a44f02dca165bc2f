"""Drafts land in the real Dovecot's Drafts folder: threaded, flagged, and exactly once,
whatever point the worker is killed at."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from email import message_from_bytes, policy
from pathlib import Path

import pytest
from sqlalchemy import select

from mailbot.compose.mime import TOKEN_HEADER
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Event, Message
from mailbot.db.session import Database
from mailbot.resources import data_dir
from tests.support.dovecot import ImapUser
from tests.support.mail import bounce, out_of_office

SAMPLES = data_dir() / "samples"


def write_config(tmp_path: Path, user: ImapUser, db_url: str, models: Path) -> Path:
    account = user.account_settings(support_address="support@northwind.example")
    lines = [f'data_dir = "{tmp_path / "var"}"', "[database]", f'url = "{db_url}"',
             "[models]", f'dir = "{models}"', "[drafts]", 'from_name = "Northwind Support"',
             "[[accounts]]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in account.items()]
    path = tmp_path / "mailbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_once(config: Path, failpoint: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("MAILBOT_FAILPOINTS", None)
    if failpoint:
        env["MAILBOT_FAILPOINTS"] = failpoint
    return subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config), "run",
                           "--once"], capture_output=True, text=True, env=env, timeout=300)


def drafts_in_folder(user: ImapUser) -> list[tuple[set[bytes], bytes]]:
    with user.client() as client:
        client.select_folder("Drafts", readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["FLAGS", "BODY.PEEK[]"]) if uids else {}
    return [(set(f[b"FLAGS"]), f[b"BODY[]"]) for f in fetched.values()]


def test_customer_email_gets_one_threaded_draft(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path
) -> None:
    original = (SAMPLES / "01_order_status.eml").read_bytes()
    imap_user.append_many([original, out_of_office(2), bounce(3)])
    config = write_config(tmp_path, imap_user, sqlite_url, encoder_dir.parent)
    first = run_once(config)
    assert first.returncode == 0, first.stderr
    [(flags, raw)] = drafts_in_folder(imap_user)
    assert b"\\Draft" in flags
    reply = message_from_bytes(raw, policy=policy.default)
    source = message_from_bytes(original, policy=policy.default)
    assert reply["In-Reply-To"] == source["Message-ID"]
    assert reply["Subject"] == "Re: Where is my order #A10234?"
    assert reply["From"] == "Northwind Support <support@northwind.example>"
    assert reply["To"].addresses[0].addr_spec == "emma.clarke@example.com"
    assert reply["Auto-Submitted"] == "auto-generated"
    assert "A10234" in reply.get_body(("plain",)).get_content()

    database = Database(sqlite_url)
    with database.session() as session:
        statuses = sorted(session.scalars(select(Message.status)))
        [draft] = session.scalars(select(DraftRecord)).all()
    assert statuses == ["drafted", "skipped", "skipped"]
    assert draft.token == reply[TOKEN_HEADER] and draft.delivered_at is not None
    assert draft.fields["order_id"] == "A10234"

    again = run_once(config)
    assert again.returncode == 0, again.stderr
    assert len(drafts_in_folder(imap_user)) == 1


@pytest.mark.parametrize(
    "failpoint",
    ["fetch.after_commit", "pipeline.after_commit", "draft.after_append", "draft.after_record"],
)
def test_a_kill_at_any_step_leaves_exactly_one_draft(
    tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path, failpoint: str
) -> None:
    imap_user.append((SAMPLES / "03_cancellation.eml").read_bytes())
    config = write_config(tmp_path, imap_user, sqlite_url, encoder_dir.parent)
    killed = run_once(config, failpoint)
    assert killed.returncode == -9, killed.stderr  # died at the failpoint, SIGKILL
    resumed = run_once(config)
    assert resumed.returncode == 0, resumed.stderr
    assert len(drafts_in_folder(imap_user)) == 1
    database = Database(sqlite_url)
    with database.session() as session:
        assert len(session.scalars(select(Message)).all()) == 1
        [draft] = session.scalars(select(DraftRecord)).all()
        delivered = session.scalars(select(Event.outcome).where(Event.stage == "deliver")).all()
    assert draft.delivered_at is not None
    if failpoint == "draft.after_append":
        # The APPEND happened but was not recorded: the token finds it, no second APPEND.
        assert delivered == ["found"]
    elif failpoint == "draft.after_record":
        assert delivered == ["ok"]
