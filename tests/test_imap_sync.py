"""IMAP ingestion against a real Dovecot: every message in the ledger exactly once."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import pytest
from sqlalchemy import func, select

from mailbot.config import config_from_dict
from mailbot.daemon import Worker
from mailbot.db.models import Event, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.session import Database
from mailbot.ingest.ledger import mailbox_statuses
from mailbot.parse.stage import ParseStage
from mailbot.pipeline.case import Case, Step
from tests.support.dovecot import ImapUser
from tests.support.mail import bounce, out_of_office, support_email


def make_worker(database: Database, *accounts: dict[str, Any], **worker: Any) -> Worker:
    config = config_from_dict({
        "accounts": list(accounts),
        "classifier": {"enabled": False},
        "worker": {"retry_base_seconds": 0.05, "retry_max_seconds": 0.2, **worker},
    })
    return Worker(config, db=database)


def ledger(database: Database) -> list[Message]:
    with database.session() as session:
        return list(session.scalars(select(Message).order_by(Message.uid)))


def events(database: Database, stage: str, outcome: str | None = None) -> list[Event]:
    with database.session() as session:
        query = select(Event).where(Event.stage == stage)
        if outcome:
            query = query.where(Event.outcome == outcome)
        return list(session.scalars(query.order_by(Event.id)))


def assert_each_once(database: Database, expected: int) -> None:
    """Every message is in the ledger once, and went through the pipeline once."""
    rows = ledger(database)
    assert len(rows) == expected
    assert len({r.sha256 for r in rows}) == expected
    parse_counts = Counter(e.message_pk for e in events(database, "parse"))
    assert set(parse_counts) == {r.id for r in rows}
    assert set(parse_counts.values()) == {1}


class Recorder:
    """A stage after parse that notes which messages reach later stages."""

    name = "recorder"

    def __init__(self) -> None:
        self.seen: list[str] = []

    def run(self, case: Case) -> Step:
        self.seen.append(case.parsed().subject)
        return Step(case, "ok")


def test_incremental_fetch_and_restart(database: Database, imap_user: ImapUser) -> None:
    imap_user.append_many([support_email(i) for i in range(3)])
    worker = make_worker(database, imap_user.account_settings())
    [report] = worker.poll_all()
    assert (report.fetched, report.processed, report.error) == (3, 3, None)
    assert [m.status for m in ledger(database)] == [MessageStatus.PARSED] * 3

    imap_user.append_many([support_email(i) for i in range(3, 5)])
    [report] = worker.poll_all()
    assert report.fetched == 2

    # A new worker process on the same database resumes where the last one stopped.
    restarted = make_worker(database, imap_user.account_settings())
    [report] = restarted.poll_all()
    assert report.fetched == 0
    assert_each_once(database, 5)
    with database.session() as session:
        mailbox = session.scalars(select(Mailbox)).one()
        assert mailbox.last_uid == 5
        assert mailbox.last_error is None and mailbox.last_poll_at is not None


def test_fetch_never_marks_mail_seen(sqlite_database: Database, imap_user: ImapUser) -> None:
    imap_user.append_many([support_email(i) for i in range(2)])
    make_worker(sqlite_database, imap_user.account_settings()).poll_all()
    with imap_user.client() as client:
        client.select_folder("INBOX", readonly=True)
        flags = client.get_flags(client.search("ALL"))
    assert len(flags) == 2
    assert all(b"\\Seen" not in f for f in flags.values())


def test_oversize_message_is_recorded_for_a_person(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append(support_email(1))
    imap_user.append(support_email(2, padding=20_000))
    imap_user.append(support_email(3))
    worker = make_worker(sqlite_database, imap_user.account_settings(max_message_bytes=8192))
    [report] = worker.poll_all()
    assert report.oversize == 1
    rows = ledger(sqlite_database)
    assert [r.status for r in rows] == ["parsed", "needs_human", "parsed"]
    assert "over-size" in rows[1].status_reason and "8192" in rows[1].status_reason
    assert rows[1].subject == "Question about order A00002"
    with sqlite_database.session() as session:
        assert session.get(RawMessage, rows[1].id) is None


def test_auto_replies_and_bounces_are_recorded_not_passed_on(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(1), out_of_office(2), bounce(3), support_email(4)])
    worker = make_worker(sqlite_database, imap_user.account_settings())
    recorder = Recorder()
    worker.pipeline.stages = [ParseStage(), recorder]
    worker.poll_all()
    rows = ledger(sqlite_database)
    assert [r.status for r in rows] == ["parsed", "skipped", "skipped", "parsed"]
    assert all(r.status_reason and "no automatic reply" in r.status_reason for r in rows[1:3])
    assert recorder.seen == ["Question about order A00001", "Question about order A00004"]
    skipped = events(sqlite_database, "parse", "skipped")
    assert len(skipped) == 2 and all(e.details.get("auto_reply") for e in skipped)


def test_uidvalidity_change_rematches_without_duplicates(
    database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(i) for i in range(3)])
    worker = make_worker(database, imap_user.account_settings())
    worker.poll_all()
    imap_user.doveadm("mailbox", "update", "-u", imap_user.name, "--uid-validity", "4242", "INBOX")
    imap_user.append(support_email(3))
    [report] = worker.poll_all()
    assert report.uidvalidity_changed
    assert (report.rematched, report.fetched) == (3, 1)
    assert_each_once(database, 4)
    assert {r.uidvalidity for r in ledger(database)} == {4242}
    [change] = events(database, "uidvalidity", "changed")
    assert change.details["new"] == 4242
    assert len(events(database, "fetch", "rematched")) == 3


def test_genuine_uid_reset_loses_nothing(sqlite_database: Database, imap_user: ImapUser) -> None:
    imap_user.append_many([support_email(i) for i in range(4)])
    worker = make_worker(sqlite_database, imap_user.account_settings())
    worker.poll_all()
    before = {r.sha256: r.uidvalidity for r in ledger(sqlite_database)}
    # Deleting one message then resetting renumbers the rest from UID 1.
    with imap_user.client() as client:
        client.select_folder("INBOX")
        client.delete_messages([1])
        client.expunge()
    imap_user.server.reset_uids(imap_user)
    imap_user.append(support_email(10))
    [report] = worker.poll_all()
    assert report.error is None, report.error
    assert report.uidvalidity_changed and report.rematched == 3 and report.fetched == 1
    assert_each_once(sqlite_database, 5)
    after = {r.sha256: r.uidvalidity for r in ledger(sqlite_database)}
    assert set(before) <= set(after)
    assert len(events(sqlite_database, "uidvalidity", "changed")) == 1


class SlowStage:
    """Makes each message take a little while, so a fault can land mid-batch."""

    name = "slow"

    def run(self, case: Case) -> Step:
        time.sleep(0.01)
        return Step(case, "ok")


def test_connection_cut_mid_fetch_recovers(sqlite_database: Database, imap_user: ImapUser) -> None:
    total = 120
    imap_user.append_many([support_email(i) for i in range(total)])
    worker = make_worker(sqlite_database, imap_user.account_settings(fetch_batch=10))
    worker.pipeline.stages = [ParseStage(), SlowStage()]
    kicked = threading.Event()

    def kick_when_busy() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with sqlite_database.session() as session:
                done = session.scalar(select(func.count()).select_from(Message))
            if done and done >= 20:
                imap_user.doveadm("kick", imap_user.name)
                kicked.set()
                return
            time.sleep(0.02)

    kicker = threading.Thread(target=kick_when_busy)
    kicker.start()
    [report] = worker.poll_all()
    kicker.join()
    assert kicked.is_set()
    assert report.error is None, report.error
    assert report.retries >= 1
    assert_each_once(sqlite_database, total)


def test_a_broken_account_never_stops_the_others(
    database: Database, imap_user: ImapUser
) -> None:
    other = imap_user.server.add_user()
    other.append(support_email(1))
    imap_user.append(support_email(2))
    bad = imap_user.account_settings(name="wrongpw", password="not-the-password")
    good = other.account_settings(mailboxes=["INBOX", "NoSuchFolder"])
    worker = make_worker(database, bad, good, retry_attempts=1)
    reports = {(r.account, r.mailbox): r for r in worker.poll_all()}
    assert "refused" in reports[("wrongpw", "INBOX")].error
    assert "NoSuchFolder" in reports[(other.name, "NoSuchFolder")].error
    assert reports[(other.name, "INBOX")].error is None
    assert reports[(other.name, "INBOX")].fetched == 1
    with database.session() as session:
        status = {(s.account, s.mailbox): s for s in mailbox_statuses(session)}
    assert "refused" in status[("wrongpw", "INBOX")].last_error
    assert "NoSuchFolder" in status[(other.name, "NoSuchFolder")].last_error
    assert status[(other.name, "INBOX")].last_error is None
    assert status[(other.name, "INBOX")].counts == {"parsed": 1}


@pytest.mark.parametrize("action", ["flag", "move"])
def test_server_action_after_local_commit(
    sqlite_database: Database, imap_user: ImapUser, action: str
) -> None:
    imap_user.append_many([support_email(i) for i in range(3)])
    worker = make_worker(
        sqlite_database, imap_user.account_settings(processed_action=action,
                                                    processed_folder="Done")
    )
    [report] = worker.poll_all()
    assert report.server_actions == 3
    with imap_user.client() as client:
        client.select_folder("INBOX")
        inbox = client.search("ALL")
        if action == "flag":
            flags = client.get_flags(inbox)
            assert all(b"$MailbotProcessed" in f for f in flags.values())
            assert len(inbox) == 3
        else:
            assert inbox == []
            client.select_folder("Done")
            assert len(client.search("ALL")) == 3
    assert all(r.server_action_done for r in ledger(sqlite_database))


class Unreachable:
    """A stage whose backing service is down: the message must stay where it was."""

    name = "unreachable"

    def run(self, case: Case) -> Step:
        from mailbot.errors import TransientError

        raise TransientError("service down")


def test_no_server_action_before_the_work_is_committed(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append(support_email(1))
    worker = make_worker(sqlite_database, imap_user.account_settings(processed_action="move"),
                         retry_attempts=0)
    worker.pipeline.stages = [ParseStage(), Unreachable()]
    [report] = worker.poll_all()
    assert "service down" in (report.error or "")
    [row] = ledger(sqlite_database)
    assert row.status == MessageStatus.FETCHED and not row.server_action_done
    with imap_user.client() as client:
        client.select_folder("INBOX")
        assert len(client.search("ALL")) == 1  # still there: nothing was moved
    worker.pipeline.stages = [ParseStage()]
    [report] = worker.poll_all()
    assert report.server_actions == 1
    assert_each_once(sqlite_database, 1)


def test_second_worker_is_kept_off_a_busy_mailbox(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(i) for i in range(40)])
    first = make_worker(sqlite_database, imap_user.account_settings(fetch_batch=5))
    first.pipeline.stages = [ParseStage(), SlowStage()]
    second = make_worker(sqlite_database, imap_user.account_settings())
    thread = threading.Thread(target=first.poll_all)
    thread.start()
    deadline = time.monotonic() + 20
    while not ledger(sqlite_database) and time.monotonic() < deadline:
        time.sleep(0.01)
    [report] = second.poll_all()
    thread.join()
    assert report.lease_held_by is not None and report.fetched == 0
    assert_each_once(sqlite_database, 40)
