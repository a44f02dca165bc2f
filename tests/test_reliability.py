"""Trust under failure: the lease, one bad message, mail a person must handle, a server
migration that rewrites the bytes, and what a poll must never lose."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select, text, update

from mailbot.config import config_from_dict
from mailbot.daemon import Worker
from mailbot.db.base import utcnow
from mailbot.db.models import Event, Mailbox, Message, MessageStatus
from mailbot.db.outbox import OutboxEntry
from mailbot.db.session import Database
from mailbot.errors import LeaseLost
from mailbot.ingest import lease as leases
from mailbot.ingest.imap import PollReport, fetch_chunks
from mailbot.ingest.ledger import get_or_create_mailbox, mailbox_statuses
from mailbot.parse.stage import ParseStage
from mailbot.pipeline.case import Case, Step
from tests.support.dovecot import ImapUser
from tests.support.mail import out_of_office, support_email


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


def parse_counts(database: Database) -> Counter[int]:
    with database.session() as session:
        return Counter(session.scalars(select(Event.message_pk).where(Event.stage == "parse")))


def inbox(user: ImapUser, folder: str = "INBOX") -> dict[int, set[bytes]]:
    with user.client() as client:
        client.select_folder(folder, readonly=True)
        uids = client.search("ALL")
        return {uid: set(flags) for uid, flags in client.get_flags(uids).items()} if uids \
            else {}


class Poison:
    """A stage that fails on one kind of message (a bug that bad data triggers)."""

    name = "poison"

    def run(self, case: Case) -> Step:
        if "POISON" in case.parsed().subject:
            raise ValueError("cannot handle this one")
        return Step(case, "ok")


class Unstorable:
    """A stage whose result the database refuses for one kind of message."""

    name = "unstorable"

    def run(self, case: Case) -> Step:
        if "UNSTORABLE" in case.parsed().subject:
            return Step(case, "ok", details={"value": object()})  # not JSON: refused at flush
        return Step(case, "ok")


# --- the lease ------------------------------------------------------------------------------


def test_a_worker_that_lost_its_lease_cannot_commit(database: Database) -> None:
    with database.session() as session:
        mailbox_id = get_or_create_mailbox(session, "acct", "INBOX").id
        first = leases.acquire(session, mailbox_id, "a", 60)
        assert first is not None
        assert leases.acquire(session, mailbox_id, "b", 60) is None  # held and alive
    with database.session() as session:  # the first worker stalls past its lease
        session.execute(update(Mailbox).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    with database.session() as session:
        second = leases.acquire(session, mailbox_id, "b", 60)
    assert second is not None and second.epoch == first.epoch + 1
    with pytest.raises(LeaseLost), database.session() as session:
        leases.fence(session, first, 60)
    with database.session() as session:
        assert not leases.renew(session, first, 60)
        leases.fence(session, second, 60)  # the new holder commits


def test_worker_names_are_unique_and_a_stranger_is_never_taken_for_dead() -> None:
    names = {leases.worker_identity() for _ in range(50)}
    assert len(names) == 50
    mine = leases.worker_identity()
    host, pid, machine, _ = mine.split(":")
    assert not leases.holder_is_dead(mine)  # this process
    # The same host name and pid in another container (another pid namespace): not ours to
    # judge, so it is never taken for dead (its lease expires instead).
    assert not leases.holder_is_dead(f"{host}:999999:other-namespace:abc")
    assert leases.holder_is_dead(f"{host}:999999:{machine}:abc")  # no such process here
    assert not leases.holder_is_dead("old-style-host:1234")


class Slow:
    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def run(self, case: Case) -> Step:
        time.sleep(self.seconds)
        return Step(case, "ok")


def test_a_poll_longer_than_the_lease_keeps_it_and_no_message_is_processed_twice(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(i) for i in range(24)])
    account = imap_user.account_settings(fetch_batch=4)
    first = make_worker(sqlite_database, account, lease_seconds=10)
    first.pipeline.stages = [ParseStage(), Slow(0.6)]  # ~15 s of work, longer than the lease
    second = make_worker(sqlite_database, account, lease_seconds=10)
    second.pipeline.stages = [ParseStage(), Slow(0.6)]
    thread = threading.Thread(target=first.poll_all)
    started = time.monotonic()
    thread.start()
    reports: list[tuple[float, PollReport]] = []
    while thread.is_alive():
        time.sleep(1.0)
        reports.extend((time.monotonic() - started, r) for r in second.poll_all())
    thread.join()
    assert time.monotonic() - started > 12
    # The lease was renewed throughout: the second worker found it held poll after poll,
    # also long after a lease that was not renewed would have expired, and only helped.
    held = [at for at, r in reports if r.lease_held_by == first.owner]
    assert len(held) >= 3 and max(held) > 11
    assert sum(r.fetched for _, r in reports) == 0
    counts = parse_counts(sqlite_database)
    assert len(counts) == 24 and set(counts.values()) == {1}


# --- one bad message ------------------------------------------------------------------------


def test_a_message_that_keeps_failing_is_quarantined_and_never_blocks_the_rest(
    database: Database, imap_user: ImapUser
) -> None:
    messages = [support_email(i) for i in range(6)]
    messages.insert(2, support_email(90, subject="POISON in the subject"))
    imap_user.append_many(messages)
    worker = make_worker(database, imap_user.account_settings(processed_action="flag"),
                         max_attempts=3, group_size=20, retry_base_seconds=30,
                         retry_max_seconds=60)
    worker.pipeline.stages = [ParseStage(), Poison()]
    [report] = worker.poll_all()
    assert report.error is None
    rows = {r.subject: r for r in ledger(database)}
    poison = rows["POISON in the subject"]
    assert poison.status == MessageStatus.FETCHED and poison.attempts == 1
    assert all(r.status == "parsed" for s, r in rows.items() if "POISON" not in s)
    flags = inbox(imap_user)
    assert sum(b"$MailbotProcessed" in f for f in flags.values()) == 6  # the others went on

    for _ in range(2):
        with database.session() as session:  # the retry is due
            session.execute(update(Message).values(retry_at=None))
        worker.poll_all()
    [poison] = [r for r in ledger(database) if "POISON" in (r.subject or "")]
    assert poison.status == MessageStatus.QUARANTINED and poison.attempts == 3
    assert "quarantined after 3 failed attempt(s)" in poison.status_reason
    assert "cannot handle this one" in poison.status_reason
    with database.session() as session:
        [status] = mailbox_statuses(session)
        outcomes = [e.outcome for e in session.scalars(
            select(Event).where(Event.stage == "pipeline", Event.message_pk == poison.id)
            .order_by(Event.id))]
    assert status.counts == {"parsed": 6, "quarantined": 1}
    assert status.quarantined[0]["id"] == poison.id
    assert outcomes == ["retry", "retry", "quarantined"]
    # A quarantined message needs a person: it stays in the inbox, unflagged.
    assert sum(b"$MailbotProcessed" in f for f in inbox(imap_user).values()) == 6


def test_rows_the_database_refuses_fail_only_their_message(
    database: Database, imap_user: ImapUser
) -> None:
    raws = [support_email(1), support_email(2, subject="UNSTORABLE result"),
            support_email(3, subject="NUL \x00 in the subject", body="a NUL\x00 in the body"),
            support_email(4)]
    imap_user.append_many(raws)
    worker = make_worker(database, imap_user.account_settings(), max_attempts=1)
    worker.pipeline.stages = [ParseStage(), Unstorable()]
    [report] = worker.poll_all()
    assert report.error is None
    statuses = {r.uid: r.status for r in ledger(database)}
    assert statuses == {1: "parsed", 2: "quarantined", 3: "parsed", 4: "parsed"}
    [nul] = [r for r in ledger(database) if r.uid == 3]
    assert nul.subject.startswith("NUL ") and "\x00" not in nul.subject  # stored, not refused


# --- mail a person must handle --------------------------------------------------------------


def test_mail_for_a_person_stays_where_agents_look(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(1), out_of_office(2),
                           support_email(3, padding=20_000),
                           support_email(4, subject="POISON again")])
    worker = make_worker(sqlite_database, imap_user.account_settings(
        processed_action="move", processed_folder="Done", max_message_bytes=8192,
        attention_action="flag"), max_attempts=1)
    worker.pipeline.stages = [ParseStage(), Poison()]
    [report] = worker.poll_all()
    assert report.error is None
    statuses = sorted(r.status for r in ledger(sqlite_database))
    assert statuses == ["needs_human", "parsed", "quarantined", "skipped"]
    left = inbox(imap_user)
    assert len(left) == 2  # the over-size one and the quarantined one
    assert all(b"$MailbotNeedsHuman" in flags for flags in left.values())
    assert len(inbox(imap_user, "Done")) == 2


def test_without_uidplus_a_persons_deleted_mail_is_never_expunged(
    sqlite_database: Database, imap_user: ImapUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    from imapclient import IMAPClient

    imap_user.append_many([support_email(1), support_email(2)])
    with imap_user.client() as client:  # a person marks one deleted in their mail client
        client.select_folder("INBOX")
        client.add_flags([1], [b"\\Deleted"])
    real = IMAPClient.has_capability
    monkeypatch.setattr(IMAPClient, "has_capability",
                        lambda self, cap: cap.upper() not in ("MOVE", "UIDPLUS")
                        and real(self, cap))
    worker = make_worker(sqlite_database, imap_user.account_settings(
        processed_action="move", processed_folder="Done"))
    worker.poll_all()
    flags = inbox(imap_user)
    assert set(flags) == {1, 2}  # nothing was expunged: the person's deleted mail is there
    assert all(b"\\Deleted" in f for f in flags.values())
    assert len(inbox(imap_user, "Done")) == 2
    worker.poll_all()  # a second poll does not copy them again
    assert len(inbox(imap_user, "Done")) == 2


# --- a server migration ---------------------------------------------------------------------


def _rewritten(raw: bytes) -> bytes:
    """What a migration tool does to a message: a header added in front, the body
    re-encoded (here as quoted-printable, lines re-folded), line endings normalised."""
    from email import message_from_bytes, policy
    from email.message import EmailMessage

    source = message_from_bytes(raw, policy=policy.default)
    assert isinstance(source, EmailMessage)
    body = source.get_body(("plain",))
    assert body is not None
    content = body.get_content()
    copy = EmailMessage()
    copy["Received"] = "from old-imap.example.com by new-imap.example.com; Mon, 2 Nov 2026"
    for name, value in source.items():
        if name.lower() not in ("content-type", "content-transfer-encoding", "mime-version"):
            copy[name] = value
    copy.set_content(content, cte="quoted-printable")
    return copy.as_bytes().replace(b"\r\n", b"\n")


def test_a_migration_that_rewrites_every_message_is_rematched_not_redrafted(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    with imap_user.client() as client:
        client.create_folder("Support")
    originals = [support_email(i) for i in range(6)]
    imap_user.append_many(originals, folder="Support")
    worker = make_worker(sqlite_database, imap_user.account_settings(
        mailboxes=["Support"], processed_action="flag"))
    worker.poll_all()
    before = {r.id: r.uidvalidity for r in ledger(sqlite_database)}
    assert len(before) == 6

    # The migration: the folder is rebuilt on the "new server" and every message is copied
    # in through IMAP with rewritten bytes.
    with imap_user.client() as client:
        client.select_folder("Support")
        fetched = client.fetch(client.search("ALL"), ["BODY.PEEK[]"])
        client.close_folder()
        client.delete_folder("Support")
        client.create_folder("Support")
    time.sleep(1.1)  # Dovecot's UIDVALIDITY is the creation time
    copies = [_rewritten(bytes(f[b"BODY[]"])) for f in fetched.values()]
    assert all(copy != original for copy, original in zip(copies, originals, strict=True))
    imap_user.append_many(copies + [support_email(50)], folder="Support")

    [report] = worker.poll_all()
    assert report.uidvalidity_changed and report.rematched == 6 and report.fetched == 1
    rows = ledger(sqlite_database)
    assert len(rows) == 7
    counts = parse_counts(sqlite_database)
    assert set(counts.values()) == {1}  # nothing was processed a second time
    # The processed flag (lost in the migration) is set again on the new copies.
    assert all(b"$MailbotProcessed" in f for f in inbox(imap_user, "Support").values())


# --- fetching -------------------------------------------------------------------------------


def test_fetches_are_bounded_by_count_and_bytes() -> None:
    sizes = {1: 10, 2: 10, 3: 90, 4: 200, 5: 5, 6: 5}
    chunks = fetch_chunks([1, 2, 3, 4, 5, 6], sizes, count=3, max_bytes=100)
    assert chunks == [[1, 2], [3], [4], [5, 6]]
    assert all(sum(sizes[u] for u in c) <= 100 or len(c) == 1 for c in chunks)
    assert fetch_chunks([1, 2, 3, 5, 6], sizes, count=2, max_bytes=10_000) == [[1, 2], [3, 5],
                                                                                [6]]


def test_a_mailbox_larger_than_one_fetch_is_ingested_whole(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(i, padding=3000) for i in range(12)])
    worker = make_worker(sqlite_database, imap_user.account_settings(
        fetch_batch=100, fetch_max_bytes=8192))
    [report] = worker.poll_all()
    assert report.fetched == 12 and report.error is None


# --- the outbox -----------------------------------------------------------------------------


def test_every_server_action_is_an_outbox_row_done_once(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    imap_user.append_many([support_email(i) for i in range(3)])
    worker = make_worker(sqlite_database, imap_user.account_settings(processed_action="flag"))
    worker.poll_all()
    worker.poll_all()
    with sqlite_database.session() as session:
        rows = session.scalars(select(OutboxEntry)).all()
    assert [(r.kind, r.state) for r in rows] == [("flag", "done")] * 3
    assert len({r.key for r in rows}) == 3


def test_a_worker_helping_on_a_busy_mailbox_delivers_drafts_and_leaves_flags_to_the_holder(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    from email.message import EmailMessage

    from mailbot.compose.mime import TOKEN_HEADER
    from mailbot.db.drafts import DraftRecord
    from mailbot.outbox.queue import enqueue, enqueue_draft

    imap_user.append_many([support_email(i) for i in range(3)])
    account = imap_user.account_settings(processed_action="flag")
    worker = make_worker(sqlite_database, account)
    worker.poll_all()  # the three are in the ledger and flagged
    tokens = [f"helper-{i}" for i in range(2)]
    with sqlite_database.session() as session:
        messages = session.scalars(select(Message).order_by(Message.uid)).all()
        for message, token in zip(messages, tokens, strict=False):
            reply = EmailMessage()
            reply["Subject"], reply[TOKEN_HEADER] = "Re: your order", token
            reply.set_content("Thank you, we are on it.")
            draft = DraftRecord(message_pk=message.id, token=token, subject="Re: your order",
                                reply_message_id=f"<{token}@mailbot>", body="Thank you.",
                                mime=reply.as_bytes())
            session.add(draft)
            session.flush()
            enqueue_draft(session, message, draft, "")
        enqueue(session, kind="flag", key="flag:helper", mailbox_id=messages[0].mailbox_id,
                message_pk=messages[0].id, payload={"flag": "$Helper"})
        mailbox_id = messages[0].mailbox_id
        # Another worker, on another host, holds the mailbox's lease.
        lease = leases.acquire(session, mailbox_id, "elsewhere:1:other:abc", 300)
    assert lease is not None

    [report] = worker.poll_all()
    assert report.lease_held_by == "elsewhere:1:other:abc" and report.fetched == 0
    # The helper appended the drafts over its own connection, each once...
    assert report.drafts_delivered == 2
    in_drafts = sorted(draft_tokens(imap_user))
    assert in_drafts == tokens
    # ...and left the flag, which names a UID, to the worker that holds the lease.
    assert all(b"$Helper" not in flags for flags in inbox(imap_user).values())
    with sqlite_database.session() as session:
        states = dict(session.execute(select(OutboxEntry.key, OutboxEntry.state)).all())
    assert states["flag:helper"] == "pending"
    assert {states[f"draft:{t}"] for t in tokens} == {"done"}

    with sqlite_database.session() as session:
        leases.release(session, lease)
    [report] = worker.poll_all()  # now it holds the lease itself
    assert report.lease_held_by is None
    assert b"$Helper" in inbox(imap_user)[messages[0].uid]
    assert sorted(draft_tokens(imap_user)) == tokens  # nothing appended twice


def draft_tokens(user: ImapUser) -> list[str]:
    from email import message_from_bytes, policy

    from mailbot.compose.mime import TOKEN_HEADER

    with user.client() as client:
        if not client.folder_exists("Drafts"):
            return []
        client.select_folder("Drafts", readonly=True)
        uids = client.search("ALL")
        fetched = client.fetch(uids, ["BODY.PEEK[HEADER]"]) if uids else {}
    return [str(message_from_bytes(f[b"BODY[HEADER]"], policy=policy.default)[TOKEN_HEADER])
            for f in fetched.values()]


# --- IDLE -----------------------------------------------------------------------------------


def test_new_mail_announced_during_a_poll_gets_a_poll_of_its_own(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    worker = make_worker(sqlite_database, imap_user.account_settings())
    [sync] = worker.syncs
    polls: list[int] = []
    real = sync.poll

    def poll() -> PollReport:
        polls.append(1)
        if len(polls) == 1:
            worker.wake[id(sync)].set()  # IDLE saw new mail while this poll ran
        return real()

    sync.poll = poll  # type: ignore[method-assign]
    worker.poll(sync)
    assert len(polls) == 2
    worker.poll(sync)
    assert len(polls) == 3


# --- the audit log --------------------------------------------------------------------------


_COLUMNS = {"message_pk": "NULL", "mailbox_id": "NULL", "stage": "'x'", "outcome": "'x'",
            "details": "'{}'", "model": "'x'", "model_version": "'x'", "latency_ms": "1",
            "tokens_in": "1", "tokens_out": "1", "cost": "1", "actor": "'x'",
            "created_at": "CURRENT_TIMESTAMP", "id": "id + 1000"}


def test_no_column_of_an_event_can_be_changed_and_none_removed(database: Database) -> None:
    from sqlalchemy.exc import DBAPIError

    from mailbot.audit.events import record_event

    with database.session() as session:
        mailbox = get_or_create_mailbox(session, "acct", "INBOX")
        record_event(session, "poll", "ok", mailbox_id=mailbox.id, details={"n": 1})
    dialect = database.engine.dialect.name
    for column, value in _COLUMNS.items():
        if dialect == "postgresql" and column == "details":
            value = "'{}'::jsonb"
        with pytest.raises(DBAPIError), database.engine.begin() as conn:
            conn.execute(text(f"UPDATE events SET {column} = {value}"))
    with pytest.raises(DBAPIError), database.engine.begin() as conn:
        conn.execute(text("DELETE FROM events"))
    if dialect == "postgresql":
        with pytest.raises(DBAPIError), database.engine.begin() as conn:
            conn.execute(text("TRUNCATE events"))
    with database.engine.connect() as conn:
        assert conn.execute(text("SELECT stage, outcome FROM events")).all() == [("poll", "ok")]


# --- the cloud LLM --------------------------------------------------------------------------


def test_mailbot_draft_never_calls_the_cloud_unless_asked(
    tmp_path: Any, encoder_dir: Any, fake_llm: Any
) -> None:
    import json as json_module

    from click.testing import CliRunner

    from mailbot.cli import cli

    config = tmp_path / "mailbot.toml"
    config.write_text("\n".join([
        f'data_dir = "{tmp_path / "var"}"', "[models]", f'dir = "{encoder_dir.parent}"',
        "[llm]", f'base_url = "{fake_llm.base_url}"', 'model = "fake-model"']) + "\n")
    mail = tmp_path / "hard.eml"
    mail.write_bytes(support_email(1, body="Order A10234 is three weeks late. My lawyer will "
                                           "take you to court."))
    runner = CliRunner()
    plain = runner.invoke(cli, ["--config", str(config), "draft", "--file", str(mail), "--json"],
                          standalone_mode=False)
    assert plain.return_value == 1, plain.output
    out = json_module.loads(plain.output[plain.output.index("{"):])
    assert out["draft"] is None and "pass --llm" in out["note"]
    assert fake_llm.requests == []  # nothing paid, nothing left the server
    asked = runner.invoke(cli, ["--config", str(config), "draft", "--file", str(mail), "--llm",
                                "--json"], standalone_mode=False)
    assert asked.return_value == 0, asked.output
    assert json_module.loads(asked.output[asked.output.index("{"):])["draft"]["model"] == \
        "fake-model"
    assert len(fake_llm.chat_requests) >= 1


def test_several_workers_never_spend_past_the_budget_together(
    postgres_url: str, tmp_path: Any, encoder_dir: Any, fake_llm: Any
) -> None:
    """Four workers (their own owners and clients) send the same pending escalations at
    once; the budget in the database lets through only what fits, counting calls in flight."""
    from mailbot.db.llm_records import LLMRequest
    from mailbot.ingest.maildir import ingest_local
    from mailbot.llm.client import LLMClient
    from mailbot.llm.escalate import reserve_for
    from mailbot.pipeline.wiring import build_pipeline, build_stages
    from tests.support.fake_openai import Reply, default_answer
    from tests.test_escalation import HARD, messages
    from tests.test_route import config_for

    def expensive(request: Any) -> Reply:
        # Slow, so that calls overlap; and charging what the request's size allows at most,
        # so that the real spending runs the budget out.
        answer = default_answer(request)
        answer.delay = 0.3
        answer.usage = (len(request.text().encode()), 64)
        return answer

    fake_llm.default = expensive
    settings = {"base_url": fake_llm.base_url, "model": "fake-model", "max_output_tokens": 64,
                "concurrency": 3}
    probe = config_for(tmp_path, encoder_dir, llm=settings)
    one_call = reserve_for(LLMClient.from_config(probe), "reply",
                           {"subject": "Late order 00", "body": HARD, "intent": "complaint",
                            "language": "en", "facts": {"order_id": "<ORDER_1>"}},
                           probe.drafts.company)
    config = config_for(tmp_path, encoder_dir, llm=settings, route={"llm_classify": "never"},
                        database={"url": postgres_url},
                        cost={"daily_budget": round(one_call * 5.5, 6)})
    database = Database(postgres_url)
    database.upgrade()
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(16):
        (folder / f"{n:02d}.eml").write_bytes(support_email(
            n, body=HARD, sender=f"C{n} <c{n}@example.org>", subject=f"Late order {n:02d}"))
    stages = build_stages(config, database)
    first = build_pipeline(config, database, stages=stages)
    ingest_local(database, sorted(folder.iterdir()), first.pipeline)  # requests pending
    runners = [build_pipeline(config, database, stages=stages).escalations for _ in range(4)]
    threads = [threading.Thread(target=r.run) for r in runners if r is not None]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with database.session() as session:
        states = Counter(session.scalars(select(LLMRequest.state)))
    assert states["answered"] == len(fake_llm.chat_requests) < 16, states
    assert states["refused"] == 16 - states["answered"], (states, Counter(
        (m.status, m.status_reason) for m in messages(database)))
    spent = sum(e.cost or 0 for e in events_of(database, "llm"))
    assert 0 < spent <= config.cost.daily_budget
    statuses = Counter(m.status for m in messages(database))
    assert statuses == {"drafted": states["answered"], "needs_human": states["refused"]}


def events_of(database: Database, stage: str) -> list[Event]:
    with database.session() as session:
        return list(session.scalars(
            select(Event).where(Event.stage == stage).order_by(Event.id)))


# --- configuration --------------------------------------------------------------------------


def test_secrets_never_show_and_plain_http_goes_only_to_loopback() -> None:
    from mailbot.errors import ConfigError

    account = {"name": "a", "host": "imap.example.com", "username": "u"}
    config = config_from_dict({"accounts": [{**account, "password": "hunter2-secret"}]})
    assert "hunter2" not in repr(config) and "hunter2" not in str(config.accounts[0])
    assert config.accounts[0].resolve_password() == "hunter2-secret"
    with pytest.raises(ConfigError) as bad:
        config_from_dict({"accounts": [{**account, "password": 1234567}]})
    assert "1234567" not in str(bad.value) and "password" in str(bad.value)
    with pytest.raises(ConfigError, match="loopback"):
        config_from_dict({"llm": {"base_url": "http://llm.example.com/v1", "model": "m"}})
    assert config_from_dict({"llm": {"base_url": "http://127.0.0.1:8000/v1", "model": "m"}})
    assert config_from_dict({"llm": {"base_url": "https://llm.example.com/v1", "model": "m"}})


# --- personal data --------------------------------------------------------------------------


def test_erasure_removes_a_persons_data_and_keeps_the_audit_trail(
    database: Database, imap_user: ImapUser, tmp_path: Any
) -> None:
    import json as json_module

    from click.testing import CliRunner

    from mailbot.cli import cli
    from mailbot.db.models import MessageFacts, RawMessage

    person = "Emma Clarke <emma.clarke@example.com>"
    imap_user.append_many([support_email(1, sender=person, body="Call me on 030 12345678 "
                                                               "about order A10234."),
                           support_email(2)])
    worker = make_worker(database, imap_user.account_settings())
    worker.poll_all()
    from mailbot.db.outcomes import DraftOutcome, HumanLabel

    with database.session() as session:
        first = session.scalars(select(Message).order_by(Message.uid)).first()
        assert first is not None
        # An agent's corrections and the reply as sent are the person's data as well.
        session.add_all([
            HumanLabel(message_pk=first.id, kind="field", name="order_id", value="A10234",
                       previous="A1023", agent="sam"),
            HumanLabel(message_pk=first.id, kind="intent", value="order_status",
                       previous="delivery_problem", agent="sam"),
            DraftOutcome(message_pk=first.id, outcome="sent_edited", edit_distance=0.2,
                         proposed_text="Dear Emma, ...", sent_text="Dear Emma Clarke, ...",
                         agent="sam"),
        ])
    with database.session() as session:
        events_before = session.scalar(select(func_count()).select_from(Event))
    config = tmp_path / "mailbot.toml"
    config.write_text(f'[database]\nurl = "{database.url}"\n')
    result = CliRunner().invoke(cli, ["--config", str(config), "erase", "--sender",
                                      "EMMA.CLARKE@example.com", "--yes", "--json"])
    assert result.exit_code == 0, result.output
    assert json_module.loads(result.output)["messages"] == 1
    with database.session() as session:
        erased, kept = session.scalars(select(Message).order_by(Message.uid)).all()
        assert erased.erased_at is not None and erased.sender is None and erased.subject is None
        assert session.get(RawMessage, erased.id) is None
        assert session.get(MessageFacts, erased.id) is None
        assert kept.sender == "customer2@example.org" and session.get(RawMessage, kept.id)
        labels = {label.kind: label for label in session.scalars(select(HumanLabel))}
        assert labels["field"].value is None and labels["field"].previous is None
        assert labels["intent"].value == "order_status"  # a label, not personal: kept
        outcome = session.scalars(select(DraftOutcome)).one()
        assert outcome.sent_text is None and outcome.proposed_text is None
        assert outcome.edit_distance == 0.2  # the figure stays for the reports
        every = session.scalars(select(Event)).all()
    assert len(every) == events_before + 1  # nothing removed, the erasure recorded
    logged = json_module.dumps([e.details for e in every])
    assert "emma.clarke" not in logged.lower() and "12345678" not in logged
    assert "address_sha256" in every[-1].details


def test_retention_deletes_raw_mail_then_personal_text(
    sqlite_database: Database, imap_user: ImapUser
) -> None:
    from mailbot.audit.retention import apply_retention
    from mailbot.config import RetentionSettings
    from mailbot.db.models import RawMessage

    imap_user.append_many([support_email(1), support_email(2)])
    make_worker(sqlite_database, imap_user.account_settings()).poll_all()
    with sqlite_database.session() as session:
        session.execute(update(Message).where(Message.uid == 1)
                        .values(fetched_at=utcnow() - timedelta(days=40)))
    settings = RetentionSettings(raw_days=30, text_days=60)
    with sqlite_database.session() as session:
        report = apply_retention(session, settings)
    assert (report.raw, report.messages) == (1, 0)
    with sqlite_database.session() as session:
        old, new = session.scalars(select(Message).order_by(Message.uid)).all()
        assert session.get(RawMessage, old.id) is None and old.subject  # text kept for now
        assert session.get(RawMessage, new.id) is not None
    with sqlite_database.session() as session:
        report = apply_retention(session, settings, now=utcnow() + timedelta(days=30))
    assert report.messages == 1
    with sqlite_database.session() as session:
        old, new = session.scalars(select(Message).order_by(Message.uid)).all()
        assert old.subject is None and old.erased_at is not None and new.subject


def func_count() -> Any:
    from sqlalchemy import func

    return func.count()


def test_sigterm_cuts_the_wait_between_cloud_retries_and_pays_nothing(
    tmp_path: Any, encoder_dir: Any, fake_llm: Any, sqlite_url: str
) -> None:
    """The cloud LLM is down and asks for a long wait: SIGTERM ends the worker at once, and
    the request is left to be sent later (nothing was answered, nothing was billed)."""
    import signal
    import subprocess
    import sys

    from mailbot.db.llm_records import LLMRequest
    from tests.support.fake_openai import Reply

    fake_llm.default = lambda r: Reply(status=503)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "hard.eml").write_bytes(support_email(
        1, body="Order A10234 is three weeks late. My lawyer will take you to court."))
    config = tmp_path / "mailbot.toml"
    config.write_text("\n".join([
        f'data_dir = "{tmp_path / "var"}"', "[database]", f'url = "{sqlite_url}"',
        "[models]", f'dir = "{encoder_dir.parent}"',
        "[llm]", f'base_url = "{fake_llm.base_url}"', 'model = "fake-model"', "attempts = 5",
        "retry_base_seconds = 60", "retry_max_seconds = 60", "max_retry_after_seconds = 600"])
        + "\n")
    process = subprocess.Popen([sys.executable, "-m", "mailbot", "--config", str(config),
                                "ingest", str(folder)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not fake_llm.chat_requests and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fake_llm.chat_requests, "the worker never called the cloud LLM"
    time.sleep(0.5)  # now in the minute-long wait before the second attempt
    stopped = time.monotonic()
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=30)
    assert time.monotonic() - stopped < 15
    assert len(fake_llm.chat_requests) == 1 and sum(fake_llm.paid.values()) == 0
    database = Database(sqlite_url)
    with database.session() as session:
        [row] = session.scalars(select(LLMRequest)).all()
        [message] = session.scalars(select(Message)).all()
    assert row.state == "pending" and row.reserved_cost == 0.0
    assert message.status == MessageStatus.ESCALATING  # sent later, by the next worker


class BrokenBatch:
    """A stage whose batch form fails, so the runner retries its messages one by one."""

    name = "broken_batch"

    def run(self, case: Case) -> Step:
        return Step(case, "ok")

    def run_many(self, cases: Any) -> list[Step]:
        raise RuntimeError("the batch failed")


def test_a_batch_retried_message_by_message_never_calls_the_cloud_twice(
    tmp_path: Any, encoder_dir: Any, fake_llm: Any
) -> None:
    from mailbot.ingest.maildir import ingest_local
    from mailbot.pipeline.wiring import build_pipeline, build_stages
    from tests.test_escalation import HARD
    from tests.test_route import config_for

    config = config_for(tmp_path, encoder_dir, llm={"base_url": fake_llm.base_url,
                                                     "model": "fake-model"},
                        route={"llm_classify": "never"})
    database = Database(config.database_url)
    database.upgrade()
    stages = build_stages(config, database)
    stages.insert(2, BrokenBatch())
    built = build_pipeline(config, database, stages=stages)
    folder = tmp_path / "in"
    folder.mkdir()
    for n in range(4):
        (folder / f"{n}.eml").write_bytes(support_email(n, body=HARD,
                                                        sender=f"C{n} <c{n}@example.org>"))
    ingest_local(database, sorted(folder.iterdir()), built.pipeline,
                 escalations=built.escalations)
    assert len(fake_llm.chat_requests) == 4  # one call per escalated message
    assert sorted(fake_llm.paid.values()) == [1, 1, 1, 1]
