"""IMAP ingestion: incremental sync of one folder by UID, safe against every kind of failure.

The order of work is what makes it safe: fetch with BODY.PEEK (never sets \\Seen), commit
the raw message to the ledger (fenced by the mailbox lease), run the pipeline, and only
then perform the outbox's rows (drafts, flags, moves) on the server. A crash anywhere in
between repeats work but never loses or duplicates a message.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.backoff import backoff_delay
from mailbot.config import AccountSettings, WorkerSettings
from mailbot.db.models import Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.session import Database
from mailbot.errors import LeaseLost, MailboxError, PermanentError, TransientError
from mailbot.failpoints import failpoint
from mailbot.ingest import lease as leases
from mailbot.ingest.identity import body_hash, header_date, sender_address
from mailbot.ingest.ledger import (
    NewMessage,
    add_messages,
    get_or_create_mailbox,
    record_poll_failure,
    record_poll_success,
    rematch,
    sha256_hex,
)
from mailbot.outbox.drainer import DrainSettings, OutboxDrainer
from mailbot.outbox.queue import enqueue_server_action, hand_over
from mailbot.pipeline.runner import Pipeline

if TYPE_CHECKING:
    from mailbot.llm.escalate import EscalationRunner

log = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*<?([^\r\n>]*)>?", re.IGNORECASE | re.MULTILINE)
_SUBJECT = re.compile(rb"^subject:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FROM = re.compile(rb"^from:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_DATE = re.compile(rb"^date:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


class LoginFailed(PermanentError):
    """The IMAP server refused the username or password."""


class FolderMissing(PermanentError):
    """A configured folder does not exist on the server."""


@dataclass
class PollReport:
    """What one poll of one mailbox did."""

    account: str
    mailbox: str
    fetched: int = 0
    oversize: int = 0
    rematched: int = 0
    processed: int = 0
    escalated: int = 0
    server_actions: int = 0
    drafts_delivered: int = 0
    uidvalidity_changed: bool = False
    error: str | None = None
    lease_held_by: str | None = None
    retries: int = 0
    notes: list[str] = field(default_factory=list)


def header_value(pattern: re.Pattern[bytes], head: bytes) -> str | None:
    """One header's value from a raw header block (None when absent or empty)."""
    match = pattern.search(head)
    if not match:
        return None
    return match.group(1).decode("utf-8", "replace").strip()[:998] or None


def header_block(raw: bytes) -> bytes:
    """The header block of a raw message (at most 64 KiB)."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw[: end if end >= 0 else 8192][:65536]


def new_message(uidvalidity: int, uid: int, raw: bytes | None, head: bytes, size: int,
                received: datetime | None, **status: object) -> NewMessage:
    """A fetched message with the identity read from its headers."""
    return NewMessage(
        uidvalidity, uid, raw, size, sha256_hex(raw if raw is not None else head),
        header_value(_MESSAGE_ID, head), header_value(_SUBJECT, head),
        header_value(_FROM, head), received, sent_at=header_date(header_value(_DATE, head)),
        **status,  # type: ignore[arg-type]
    )


def connect(account: AccountSettings, password: str) -> IMAPClient:
    """Open and log in to an account's server, mapping failures to mailbot errors."""
    context = ssl.create_default_context()
    if not account.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    where = f"{account.host}:{account.effective_port}"
    try:
        client = IMAPClient(
            account.host,
            port=account.effective_port,
            ssl=account.tls == "implicit",
            ssl_context=context,
            timeout=account.timeout,
        )
    except (OSError, IMAPClientError) as exc:
        raise MailboxError(f"account {account.name}: cannot connect to {where}: {exc}") from exc
    client.normalise_times = False  # keep INTERNALDATE's zone instead of local naive time
    try:
        if account.tls == "starttls":
            client.starttls(context)
        client.login(account.username, password)
    except LoginError as exc:
        _quietly_logout(client)
        raise LoginFailed(
            f"account {account.name}: login as {account.username!r} at {where} was refused "
            f"({_text(exc)}); check the username and password"
        ) from None
    except (OSError, IMAPClientError) as exc:
        _quietly_logout(client)
        raise MailboxError(f"account {account.name}: {where}: {exc}") from exc
    return client


def _text(exc: BaseException) -> str:
    text = str(exc)
    if text.startswith("b'") or text.startswith('b"'):
        text = text[2:-1]
    return text


def _quietly_logout(client: IMAPClient) -> None:
    try:
        client.logout()
    except Exception:  # noqa: BLE001 - the connection may already be gone
        with contextlib.suppress(Exception):
            client.shutdown()


@contextmanager
def session_for(account: AccountSettings, password: str) -> Iterator[IMAPClient]:
    """A logged-in connection, logged out at the end."""
    client = connect(account, password)
    try:
        yield client
    finally:
        _quietly_logout(client)


_TRANSIENT_IMAP = (
    OSError,
    socket.timeout,
    imaplib.IMAP4.abort,
    IMAPClientAbortError,
    ssl.SSLError,
)


def fetch_chunks(uids: Sequence[int], sizes: dict[int, int], *, count: int, max_bytes: int
                 ) -> list[list[int]]:
    """UIDs in FETCH-sized chunks: at most `count` messages and `max_bytes` each (a larger
    message goes alone)."""
    chunks: list[list[int]] = []
    current: list[int] = []
    total = 0
    for uid in uids:
        size = sizes.get(uid, 0)
        if current and (len(current) >= count or total + size > max_bytes):
            chunks.append(current)
            current, total = [], 0
        current.append(uid)
        total += size
    if current:
        chunks.append(current)
    return chunks


class MailboxSync:
    """Incremental sync of one folder of one account into the ledger."""

    def __init__(
        self,
        db: Database,
        account: AccountSettings,
        folder: str,
        pipeline: Pipeline,
        worker: WorkerSettings,
        *,
        owner: str,
        stop: threading.Event | None = None,
        escalations: EscalationRunner | None = None,
    ) -> None:
        self.db = db
        self.account = account
        self.folder = folder
        self.pipeline = pipeline
        self.worker = worker
        self.owner = owner
        self.stop = stop or threading.Event()
        self.escalations = escalations
        with db.session() as session:
            self.mailbox_id = get_or_create_mailbox(session, account.name, folder).id
        self.drainer = OutboxDrainer(
            db, self.mailbox_id, folder, owner,
            DrainSettings(worker.max_attempts, worker.claim_seconds, worker.retry_base_seconds,
                          worker.retry_max_seconds),
            drafts_folder=account.drafts_folder,
        )
        self._lease: leases.Lease | None = None
        self._keeper: leases.LeaseKeeper | None = None

    def poll(self) -> PollReport:
        """One poll: take the lease, sync with retries, record the outcome, release.

        When another worker holds the lease, this one shares its pipeline work instead
        (messages are claimed one by one), without touching the server.
        """
        report = PollReport(self.account.name, self.folder)
        with self.db.session() as session:
            lease = leases.acquire(session, self.mailbox_id, self.owner,
                                   self.worker.lease_seconds)
            if lease is None:
                holder, until = leases.holder(session, self.mailbox_id)
        if lease is None:
            report.lease_held_by = holder
            log.info("%s/%s is being polled by %s (until %s); helping with its messages",
                     self.account.name, self.folder, holder, until)
            self._help(report)
            return report
        keeper = leases.LeaseKeeper(self.db, lease, self.worker.lease_seconds)
        self._lease, self._keeper = lease, keeper
        keeper.start()
        try:
            self._poll_with_retries(report)
        except LeaseLost as exc:
            report.error = str(exc)
            log.warning("%s/%s: %s", self.account.name, self.folder, exc)
        except (PermanentError, TransientError) as exc:
            report.error = str(exc)
            log.warning("%s/%s: %s", self.account.name, self.folder, exc)
            with self.db.session() as session:
                record_poll_failure(session, self.mailbox_id, str(exc))
        else:
            with self.db.session() as session:
                record_poll_success(session, self.mailbox_id)
        finally:
            keeper.stop()
            with self.db.session() as session:
                leases.release(session, lease)
            self._lease = self._keeper = None
        return report

    # A worker helping on a busy mailbox keeps at it while the lease holder fetches more:
    # it goes back to waiting for its next poll only after this long with nothing to do.
    HELP_LINGER_SECONDS = 2.0
    HELP_CHECK_SECONDS = 0.5  # between looks at the queue meanwhile (each one a query)

    def _help(self, report: PollReport) -> None:
        idle_since = time.monotonic()
        with self._escalating(report):
            while not self.stop.is_set():
                done = self.pipeline.process_pending(self.mailbox_id, stop=self.stop)
                report.processed += done
                delivered = self._help_deliver(report)
                if done or delivered:
                    idle_since = time.monotonic()
                elif (time.monotonic() - idle_since >= self.HELP_LINGER_SECONDS
                      or not self._lease_held_elsewhere()):
                    return
                else:
                    self.stop.wait(self.HELP_CHECK_SECONDS)

    def _lease_held_elsewhere(self) -> bool:
        with self.db.session() as session:
            holder, _until = leases.holder(session, self.mailbox_id)
        return holder is not None and holder != self.owner

    def _help_deliver(self, report: PollReport) -> int:
        """Append the waiting drafts over a connection of this worker's own, so several
        workers on one busy mailbox do not queue behind the lease holder's one connection.
        Flags and moves stay with the lease holder. A failure here is only logged: the
        rows go back to the queue at once and the holder (or the next help) performs them."""
        if self.stop.is_set() or not self.drainer.has_due():
            return 0
        try:
            with session_for(self.account, self.account.resolve_password()) as client:
                done = self.drainer.drain(client, kinds=OutboxDrainer.DRAFT_KINDS)
        except (*_TRANSIENT_IMAP, MailboxError, PermanentError) as exc:
            log.warning("%s/%s: could not deliver drafts while helping (%s); the lease "
                        "holder will", self.account.name, self.folder,
                        _text(exc) or type(exc).__name__)
            with self.db.session() as session:
                hand_over(session, self.owner, self.mailbox_id)
            return 0
        report.drafts_delivered += done.drafts
        report.notes.extend(done.errors)
        return done.drafts + done.withdrawn

    def _check(self) -> None:
        if self._keeper is not None:
            self._keeper.check()

    def _fence(self, session: Session) -> None:
        if self._lease is not None:
            leases.fence(session, self._lease, self.worker.lease_seconds)

    def _poll_with_retries(self, report: PollReport) -> None:
        password = self.account.resolve_password()
        attempt = 0
        while True:
            try:
                with session_for(self.account, password) as client:
                    self._sync(client, report)
                return
            except _TRANSIENT_IMAP as exc:
                error: TransientError = MailboxError(
                    f"account {self.account.name}, folder {self.folder!r}: connection lost: "
                    f"{_text(exc) or type(exc).__name__}"
                )
            except MailboxError as exc:
                error = exc
            if attempt >= self.worker.retry_attempts or self.stop.is_set():
                raise error
            delay = backoff_delay(
                attempt, base=self.worker.retry_base_seconds, cap=self.worker.retry_max_seconds
            )
            log.info("%s; retry %d in %.1fs", error, attempt + 1, delay)
            attempt += 1
            report.retries = attempt
            if self.stop.wait(delay):
                raise error

    def _select(self, client: IMAPClient) -> int:
        try:
            readonly = (self.account.processed_action == "none"
                        and self.account.attention_action == "none")
            info = client.select_folder(self.folder, readonly=readonly)
        except IMAPClientError as exc:
            if isinstance(exc, IMAPClientAbortError):
                raise
            raise FolderMissing(
                f"account {self.account.name}: cannot open folder {self.folder!r} "
                f"({_text(exc)}); check the mailboxes list in the config"
            ) from None
        return int(info[b"UIDVALIDITY"])

    def _sync(self, client: IMAPClient, report: PollReport) -> None:
        uidvalidity = self._select(client)
        last_uid, has_history = self._check_uidvalidity(uidvalidity, report)
        # A message already here under an old UIDVALIDITY must be re-matched, not re-ingested.
        uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        sizes: dict[int, int] = {}
        if uids:
            meta = client.fetch(uids, ["RFC822.SIZE"])
            sizes = {u: int(m[b"RFC822.SIZE"]) for u, m in meta.items()}
        with self._escalating(report):
            self._fetch_and_process(client, uids, sizes, uidvalidity, has_history, report)
        self._drain(client, report)

    @contextlib.contextmanager
    def _escalating(self, report: PollReport) -> Iterator[None]:
        """The cloud calls run beside the local stages, in threads of their own, until the
        block is done and every request it recorded is answered."""
        runner = self.escalations
        if runner is None:
            yield
            return
        until = threading.Event()
        answered: list[int] = []

        def run() -> None:
            try:
                answered.append(runner.run(mailbox_id=self.mailbox_id, until=until).answered)
            except Exception:  # noqa: BLE001 - recorded; the poll itself goes on
                log.exception("the cloud LLM step of %s/%s failed", self.account.name,
                              self.folder)

        thread = threading.Thread(target=run, name=f"llm-{self.account.name}-{self.folder}",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            until.set()
            thread.join()
            report.escalated += sum(answered)

    def _fetch_and_process(self, client: IMAPClient, uids: Sequence[int],
                           sizes: dict[int, int], uidvalidity: int, has_history: bool,
                           report: PollReport) -> None:
        limit = self.account.max_message_bytes
        fetchable = [u for u in uids if u in sizes and sizes[u] <= limit]
        chunks = fetch_chunks(fetchable, sizes, count=self.account.fetch_batch,
                              max_bytes=self.account.fetch_max_bytes)
        large = [u for u in uids if u in sizes and sizes[u] > limit]
        if large:
            self._fetch_large(client, large, sizes, uidvalidity, has_history, report)
        for chunk in chunks:
            if self.stop.is_set():
                return
            self._check()
            self._fetch_batch(client, chunk, sizes, uidvalidity, has_history, report)
            # About as many as were fetched, not every one waiting: with other workers
            # helping, the queue never runs dry while this one drains and fetches more.
            self._process(report, at_most=len(chunk))
            self._drain(client, report)
        # Messages fetched in an earlier, interrupted run still need the pipeline.
        self._process(report)

    def _process(self, report: PollReport, at_most: int | None = None) -> None:
        report.processed += self.pipeline.process_pending(self.mailbox_id, stop=self.stop,
                                                          check=self._check, at_most=at_most)

    def _drain(self, client: IMAPClient, report: PollReport) -> None:
        done = self.drainer.drain(client)
        report.drafts_delivered += done.drafts
        report.server_actions += done.flagged + done.moved
        report.notes.extend(done.errors)

    def _check_uidvalidity(self, uidvalidity: int, report: PollReport) -> tuple[int, bool]:
        with self.db.session() as session:
            self._fence(session)
            mailbox = session.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            if mailbox.uidvalidity is None:
                mailbox.uidvalidity = uidvalidity
            elif mailbox.uidvalidity != uidvalidity:
                report.uidvalidity_changed = True
                log.warning("%s/%s: UIDVALIDITY changed from %s to %s; re-matching messages",
                            self.account.name, self.folder, mailbox.uidvalidity, uidvalidity)
                record_event(
                    session, "uidvalidity", "changed", mailbox_id=mailbox.id,
                    details={"old": mailbox.uidvalidity, "new": uidvalidity,
                             "last_uid": mailbox.last_uid},
                )
                mailbox.uidvalidity = uidvalidity
                mailbox.last_uid = 0
            has_history = session.scalar(
                select(Message.id).where(Message.mailbox_id == mailbox.id,
                                         Message.uidvalidity != uidvalidity).limit(1)
            ) is not None
            return mailbox.last_uid, has_history

    def _fetch_large(self, client: IMAPClient, uids: Sequence[int], sizes: dict[int, int],
                     uidvalidity: int, has_history: bool, report: PollReport) -> None:
        limit = self.account.max_message_bytes
        heads = client.fetch(list(uids), ["BODY.PEEK[HEADER]", "INTERNALDATE"])
        items = []
        for uid in uids:
            if uid not in heads:
                continue
            head = bytes(heads[uid].get(b"BODY[HEADER]", b""))
            report.oversize += 1
            items.append(new_message(
                uidvalidity, uid, None, head, sizes[uid], _aware(heads[uid].get(b"INTERNALDATE")),
                status=MessageStatus.NEEDS_HUMAN,
                status_reason=f"needs a person: over-size: {sizes[uid]} bytes is more than "
                              f"max_message_bytes = {limit}; handle it by hand"))
        self._commit(items, has_history, report)

    def _fetch_batch(self, client: IMAPClient, uids: Sequence[int], sizes: dict[int, int],
                     uidvalidity: int, has_history: bool, report: PollReport) -> None:
        bodies = client.fetch(list(uids), ["BODY.PEEK[]", "INTERNALDATE"])
        items: list[NewMessage] = []
        for uid in uids:
            if uid not in bodies or b"BODY[]" not in bodies[uid]:
                continue  # expunged between SEARCH and FETCH
            raw = bytes(bodies[uid][b"BODY[]"])
            items.append(new_message(uidvalidity, uid, raw, header_block(raw), sizes[uid],
                                     _aware(bodies[uid].get(b"INTERNALDATE"))))
        self._commit(items, has_history, report)

    def _commit(self, items: Sequence[NewMessage], has_history: bool, report: PollReport
                ) -> None:
        if not items:
            return
        with self.db.session() as session:
            self._fence(session)
            mailbox = session.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            matcher = Rematcher(session, self.mailbox_id) if has_history else None
            fresh: list[NewMessage] = []
            for item in items:
                known = matcher.find(item) if matcher is not None else None
                if known is not None:
                    rematch(session, known, item.uidvalidity, item.uid)
                    known.server_action_done = False
                    report.rematched += 1
                    if known.status != MessageStatus.FETCHED:
                        self._redo_server_action(session, known)
                else:
                    fresh.append(item)
            rows = add_messages(session, mailbox, fresh)
            for row in rows:
                if row.status != MessageStatus.FETCHED:
                    enqueue_server_action(session, row, self.account)
            mailbox.last_uid = max([mailbox.last_uid, *(i.uid for i in items)])
        failpoint("fetch.after_commit")
        report.fetched += len(fresh)

    def _redo_server_action(self, session: Session, message: Message) -> None:
        # Keywords rarely survive a migration; the new UID gets the action again (the
        # outbox key names the UIDVALIDITY, so this is a new row, not a repeat).
        enqueue_server_action(session, message, self.account)


class Rematcher:
    """Finds the ledger row of a message seen under an earlier UIDVALIDITY.

    Byte-identical copies match by SHA-256. Rewritten ones (a server migration) match by
    Message-ID with the same sender and the same Date or decoded body; without a Message-ID,
    by decoded body, sender and Date together. Each row matches at most one new message.
    """

    def __init__(self, session: Session, mailbox_id: int) -> None:
        self.session = session
        self.mailbox_id = mailbox_id
        self.taken: set[int] = set()

    def find(self, item: NewMessage) -> Message | None:
        query = select(Message).where(Message.mailbox_id == self.mailbox_id,
                                      Message.uidvalidity != item.uidvalidity)
        exact = self._first(query.where(Message.sha256 == item.sha256))
        if exact is not None:
            return exact
        sender = sender_address(item.sender)
        item_hash: list[str] = []

        def item_body() -> str | None:
            if item.raw is None:
                return None
            if not item_hash:
                item_hash.append(body_hash(item.raw))
            return item_hash[0]

        if item.message_id:
            for row in self._all(query.where(Message.message_id == item.message_id)):
                if sender_address(row.sender) != sender:
                    continue
                if item.sent_at is not None and row.sent_at == item.sent_at:
                    return self._take(row)
                body = item_body()
                if body is not None and self._body_of(row) == body:
                    return self._take(row)
            return None
        body = item_body()
        if body is None or item.sent_at is None:
            return None
        for row in self._all(query.where(Message.sent_at == item.sent_at)):
            if sender_address(row.sender) == sender and self._body_of(row) == body:
                return self._take(row)
        return None

    def _first(self, query: object) -> Message | None:
        return next(iter(self._all(query)), None)

    def _all(self, query: object) -> list[Message]:
        rows = self.session.scalars(query.order_by(Message.id))  # type: ignore[attr-defined]
        return [r for r in rows if r.id not in self.taken]

    def _take(self, row: Message) -> Message:
        self.taken.add(row.id)
        return row

    def _body_of(self, row: Message) -> str | None:
        if row.body_hash is None:
            raw = self.session.scalar(select(RawMessage.raw)
                                      .where(RawMessage.message_pk == row.id))
            if raw is None:
                return None
            row.body_hash = body_hash(raw)
        return row.body_hash


def _aware(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


__all__ = [
    "FolderMissing",
    "LoginFailed",
    "MailboxSync",
    "PollReport",
    "Rematcher",
    "connect",
    "fetch_chunks",
    "header_block",
    "header_value",
]
