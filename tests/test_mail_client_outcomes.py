"""What agents did in their mail client, read from a real Dovecot's Sent and Drafts folders:
drafts sent unchanged or edited, discarded, and mail a person answered, each recorded once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text

from mailbot.compose.mime import TOKEN_HEADER
from mailbot.config import Config, load_config
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Event, Message
from mailbot.db.outcomes import DraftOutcome, HumanLabel
from mailbot.db.session import Database
from mailbot.learn.mailclient import draft_distance, scan_all
from mailbot.resources import data_dir
from tests.support.dovecot import ImapUser

SAMPLES = data_dir() / "samples"
ORDER_STATUS, CANCELLATION, ANGRY = "01_order_status.eml", "03_cancellation.eml", \
    "09_complaint_angry.eml"


def write_config(tmp_path: Path, user: ImapUser, db_url: str, models: Path,
                 smtp_port: int | None = None, **outcomes: Any) -> Path:
    account = user.account_settings(support_address="support@northwind.example")
    lines = [f'data_dir = "{tmp_path / "var"}"', "[database]", f'url = "{db_url}"',
             "[models]", f'dir = "{models}"', "[drafts]", 'from_name = "Northwind Support"',
             "[outcomes]", *(f"{k} = {json.dumps(v)}" for k, v in outcomes.items()),
             "[[accounts]]", *(f"{k} = {json.dumps(v)}" for k, v in account.items())]
    if smtp_port is not None:
        lines += ["[accounts.smtp]", 'host = "127.0.0.1"', f"port = {smtp_port}",
                  'tls = "plain"', "timeout = 10"]
    path = tmp_path / "mailbot.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def mailbot(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ}
    env.pop("MAILBOT_FAILPOINTS", None)
    return subprocess.run([sys.executable, "-m", "mailbot", "--config", str(config), *args],
                          capture_output=True, text=True, env=env, timeout=300)


def drafted(tmp_path: Path, user: ImapUser, db_url: str, models: Path, *samples: str,
            **settings: Any) -> tuple[Path, Database]:
    """Customer mail in INBOX, processed by the real worker: drafts in the Drafts folder."""
    user.append_many([(SAMPLES / name).read_bytes() for name in samples])
    config = write_config(tmp_path, user, db_url, models, **settings)
    result = mailbot(config, "run", "--once")
    assert result.returncode == 0, result.stderr
    return config, Database(db_url)


def draft_in_folder(user: ImapUser, token: str) -> tuple[int, bytes]:
    with user.client() as client:
        client.select_folder("Drafts", readonly=True)
        [uid] = client.search(["HEADER", TOKEN_HEADER, token])
        return uid, client.fetch([uid], ["BODY.PEEK[]"])[uid][b"BODY[]"]


def delete_draft(user: ImapUser, uid: int) -> None:
    with user.client() as client:
        client.select_folder("Drafts")
        client.delete_messages([uid])
        client.expunge()


def client_reply(draft: bytes, body: str, *, keep_token: bool,
                 quote: str | None = None) -> bytes:
    """What a mail client files in Sent when an agent sends the draft (with `body`): a new
    Message-ID, the draft's threading headers, the customer's mail quoted below."""
    source = message_from_bytes(draft, policy=policy.default)
    reply = EmailMessage()
    for name in ("From", "To", "Subject", "In-Reply-To", "References"):
        reply[name] = source[name]
    reply["Date"] = format_datetime(utcnow())
    reply["Message-ID"] = make_msgid(domain="northwind.example")
    reply["User-Agent"] = "Mozilla Thunderbird"
    if keep_token:
        reply[TOKEN_HEADER] = source[TOKEN_HEADER]
    if quote is not None:
        quoted = "\n".join(f"> {line}" for line in quote.splitlines())
        body = f"{body.rstrip()}\n\nOn Mon, 26 Feb 2024 at 09:12, Emma Clarke wrote:\n{quoted}\n"
    reply.set_content(body)
    return reply.as_bytes()


def customer_text(name: str) -> str:
    mail = message_from_bytes((SAMPLES / name).read_bytes(), policy=policy.default)
    return str(mail.get_body(("plain",)).get_content())  # type: ignore[union-attr]


def human_reply(name: str, body: str) -> bytes:
    """An agent's own answer to customer mail, written in the mail client."""
    source = message_from_bytes((SAMPLES / name).read_bytes(), policy=policy.default)
    reply = EmailMessage()
    reply["From"] = "Alice at Northwind <support@northwind.example>"
    reply["To"] = source["From"]
    reply["Subject"] = f"Re: {source['Subject']}"
    reply["Date"] = format_datetime(utcnow())
    reply["Message-ID"] = make_msgid(domain="northwind.example")
    reply["In-Reply-To"] = source["Message-ID"]
    reply["References"] = source["Message-ID"]
    reply.set_content(body)
    return reply.as_bytes()


def draft_of(database: Database, subject_part: str) -> DraftRecord:
    with database.session() as session:
        return session.scalars(select(DraftRecord).join(Message, Message.id ==
                                                        DraftRecord.message_pk)
                               .where(Message.subject.contains(subject_part))).one()


def outcomes(database: Database) -> list[dict[str, Any]]:
    """The managers' view of the draft outcomes."""
    with database.session() as session:
        rows = session.execute(text(
            "SELECT message_pk, outcome, source, edit_distance, agent FROM v_draft_outcomes "
            "ORDER BY outcome_id"))
        return [dict(r._mapping) for r in rows]


def status_of(database: Database, pk: int) -> str:
    with database.session() as session:
        message = session.get(Message, pk)
        assert message is not None
        return message.status


def scan(config_path: Path, database: Database, **kwargs: Any) -> Any:
    [report] = scan_all(load_config(config_path), database, **kwargs)
    assert report.error is None, report.error
    return report


def test_a_draft_sent_unchanged_is_recorded_once_and_confirms_its_labels(
        tmp_path: Path, imap_user: ImapUser, db_url: str, encoder_dir: Path) -> None:
    config, database = drafted(tmp_path, imap_user, db_url, encoder_dir.parent, ORDER_STATUS)
    draft = draft_of(database, "A10234")
    uid, raw = draft_in_folder(imap_user, draft.token)
    # The agent opens the draft in the mail client and presses Send: the client files the
    # reply in Sent (quoting the customer below it) and removes the draft.
    imap_user.append(client_reply(raw, draft.body, keep_token=True,
                                  quote=customer_text(ORDER_STATUS)), "Sent")
    delete_draft(imap_user, uid)

    first = mailbot(config, "outcomes", "scan", "--json")
    assert first.returncode == 0, first.stderr
    [report] = json.loads(first.stdout)
    assert report["sent_folder"] == "Sent" and report["sent_unchanged"] == 1
    assert outcomes(database) == [{"message_pk": draft.message_pk, "outcome": "sent_unchanged",
                                   "source": "mail_client", "edit_distance": 0.0,
                                   "agent": "support@northwind.example"}]
    assert status_of(database, draft.message_pk) == "sent"
    with database.session() as session:
        labels = {(h.kind, h.name): h.value for h in session.scalars(
            select(HumanLabel).where(HumanLabel.source == "confirmed"))}
        classified = session.scalars(select(Event.details).where(
            Event.message_pk == draft.message_pk, Event.stage == "classify")).one()
    assert labels[("intent", None)] == classified["intent"]["label"]
    assert labels[("field", "order_id")] == "A10234"

    # Scanning again, or by the worker's own cycle, finds nothing new to record.
    again = mailbot(config, "outcomes", "scan", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)[0]["read"] == 0
    assert mailbot(config, "run", "--once").returncode == 0
    assert len(outcomes(database)) == 1
    with database.session() as session:
        assert len(session.scalars(select(HumanLabel)).all()) == len(labels)


def test_an_edited_reply_without_the_token_is_matched_by_in_reply_to(
        tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path) -> None:
    config, database = drafted(tmp_path, imap_user, sqlite_url, encoder_dir.parent,
                               ORDER_STATUS, CANCELLATION)
    status_draft, cancel_draft = draft_of(database, "A10234"), draft_of(database, "A10402")
    # Most clients drop unknown headers when a draft is sent: only threading is left.
    _, raw = draft_in_folder(imap_user, status_draft.token)
    imap_user.append(client_reply(raw, status_draft.body, keep_token=False,
                                  quote=customer_text(ORDER_STATUS)), "Sent")
    _, raw = draft_in_folder(imap_user, cancel_draft.token)
    edited = cancel_draft.body.replace("Kind regards", "Your cancellation is confirmed and "
                                       "the refund is on its way.\n\nKind regards")
    imap_user.append(client_reply(raw, edited, keep_token=False,
                                  quote=customer_text(CANCELLATION)), "Sent")

    report = scan(config, database)
    assert (report.sent_unchanged, report.sent_edited) == (1, 1)
    by_message = {o["message_pk"]: o for o in outcomes(database)}
    assert by_message[status_draft.message_pk]["outcome"] == "sent_unchanged"
    cancelled = by_message[cancel_draft.message_pk]
    assert cancelled["outcome"] == "sent_edited" and cancelled["source"] == "mail_client"
    assert 0.0 < cancelled["edit_distance"] < 0.5
    assert cancelled["edit_distance"] == draft_distance(cancel_draft.body, edited)
    with database.session() as session:
        sent = session.scalars(select(DraftOutcome.sent_text).where(
            DraftOutcome.message_pk == cancel_draft.message_pk)).one()
        confirmed = session.scalars(select(HumanLabel.message_pk).where(
            HumanLabel.source == "confirmed")).all()
    assert "refund is on its way" in sent and "wrote:" not in sent  # the quote is not kept
    assert set(confirmed) == {status_draft.message_pk}  # an edited draft confirms nothing


def test_a_draft_deleted_and_never_sent_is_discarded_after_the_grace(
        tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path) -> None:
    config, database = drafted(tmp_path, imap_user, sqlite_url, encoder_dir.parent,
                               ORDER_STATUS, CANCELLATION, discard_after_hours=24.0)
    deleted, kept = draft_of(database, "A10234"), draft_of(database, "A10402")
    uid, _ = draft_in_folder(imap_user, deleted.token)
    delete_draft(imap_user, uid)
    # The other draft the agent edited and saved: the client stored a new message, without
    # our token but still answering the customer's mail.
    uid, raw = draft_in_folder(imap_user, kept.token)
    with imap_user.client() as client:
        client.append("Drafts", client_reply(raw, kept.body + "\nP.S. draft", keep_token=False),
                      flags=[b"\\Draft"])
    delete_draft(imap_user, uid)

    start = utcnow()
    # Without the Sent folder a sent draft cannot be told from a deleted one: none is judged.
    settings = load_config(config)
    elsewhere = settings.model_copy(update={
        "accounts": [settings.accounts[0].model_copy(update={"sent_folder": "Sent Items"})],
        "outcomes": settings.outcomes.model_copy(update={"discard_after_hours": 0.0})})
    [blind] = scan_all(elsewhere, database, now=start + timedelta(days=30))
    assert blind.discarded == 0 and "'Sent Items'" in blind.notes[0]
    assert scan(config, database, now=start).discarded == 0
    assert scan(config, database, now=start + timedelta(hours=23)).discarded == 0
    assert outcomes(database) == []
    later = scan(config, database, now=start + timedelta(hours=24, minutes=1))
    assert later.discarded == 1
    assert [(o["message_pk"], o["outcome"], o["source"]) for o in outcomes(database)] == [
        (deleted.message_pk, "discarded", "mail_client")]
    assert status_of(database, deleted.message_pk) == "handled_elsewhere"
    assert status_of(database, kept.message_pk) == "drafted"
    assert scan(config, database, now=start + timedelta(days=3)).discarded == 0


def test_a_person_answering_mail_mailbot_did_not_draft_marks_it_handled(
        tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path) -> None:
    config, database = drafted(tmp_path, imap_user, sqlite_url, encoder_dir.parent, ANGRY)
    with database.session() as session:
        message = session.scalars(select(Message)).one()
    assert message.status == "needs_human"
    imap_user.append(human_reply(ANGRY, "I am so sorry about the jacket. A replacement is "
                                 "on its way and your refund was issued today."), "Sent")
    # Other mail in Sent (an agent writing to a supplier) answers nothing mailbot holds.
    imap_user.append(human_reply(ANGRY, "x").replace(b"In-Reply-To:", b"X-Old-Reply:")
                     .replace(b"References:", b"X-Old-Refs:"), "Sent")

    report = scan(config, database)
    assert (report.read, report.handled) == (2, 1)
    assert [(o["message_pk"], o["outcome"], o["source"], o["edit_distance"])
            for o in outcomes(database)] == [(message.id, "handled_elsewhere", "mail_client",
                                              None)]
    assert status_of(database, message.id) == "handled_elsewhere"
    assert scan(config, database).handled == 0


def test_a_new_uidvalidity_of_sent_reads_it_again_without_recording_twice(
        tmp_path: Path, imap_user: ImapUser, sqlite_url: str, encoder_dir: Path) -> None:
    config, database = drafted(tmp_path, imap_user, sqlite_url, encoder_dir.parent,
                               ORDER_STATUS)
    draft = draft_of(database, "A10234")
    _, raw = draft_in_folder(imap_user, draft.token)
    imap_user.append(client_reply(raw, draft.body, keep_token=True), "Sent")
    assert scan(config, database).sent_unchanged == 1
    imap_user.doveadm("mailbox", "update", "-u", imap_user.name, "--uid-validity", "777",
                      "Sent")
    after = scan(config, database)
    assert after.uidvalidity_changed and after.read == 1 and after.already == 1
    assert len(outcomes(database)) == 1


def test_a_reply_sent_from_the_desk_is_not_counted_again(
        tmp_path: Path, imap_user: ImapUser, db_url: str, encoder_dir: Path) -> None:
    from mailbot.outbox.send import drain_sends, enqueue_send
    from tests.support.desk import Relay, free_port

    relay = Relay(free_port()).start()
    try:
        imap_user.append((SAMPLES / ORDER_STATUS).read_bytes())
        config_path = write_config(tmp_path, imap_user, db_url, encoder_dir.parent,
                                   smtp_port=relay.port)
        assert mailbot(config_path, "run", "--once").returncode == 0
        config: Config = load_config(config_path)
        database = Database(db_url)
        draft = draft_of(database, "A10234")
        with database.session() as session:
            message = session.get(Message, draft.message_pk)
            enqueue_send(session, config, message, body=draft.body + "\nThanks!", agent="alice",
                         draft=draft)
        sent = drain_sends(config, database)
        assert sent.sent == 1 and len(relay.messages) == 1
    finally:
        relay.stop()
    report = scan(config_path, database)
    assert report.read == 1 and report.already == 1
    assert [(o["outcome"], o["source"], o["agent"]) for o in outcomes(database)] == [
        ("sent_edited", "desk", "alice")]


@pytest.mark.parametrize("proposed, sent, unchanged", [
    ("Hello,\n\nYour order ships today.\n\nKind regards,\nSupport\n",
     "Hello,\n\nYour order ships\ntoday.\n\nKind regards,\nSupport\n\n-- \nAlice, Northwind", True),
    ("Hello,\n\nYour order ships today.\n", "Hello,\n\nYour order ships tomorrow.\n", False),
])
def test_rewrapped_lines_and_signatures_are_no_edit(proposed: str, sent: str,
                                                    unchanged: bool) -> None:
    assert (draft_distance(proposed, sent) == 0.0) is unchanged
