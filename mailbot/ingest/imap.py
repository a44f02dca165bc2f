"""IMAP ingestion: incremental sync of one folder by UID, safe against every kind of failure.

The order of work is what makes it safe: fetch with BODY.PEEK (never sets \\Seen), commit
the raw message to the ledger, run the pipeline, and only then flag or move the message on
the server. A crash anywhere in between repeats work but never loses or duplicates a message.
"""

from __future__ import annotations

import contextlib
import imaplib
import logging
import re
import socket
import ssl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError, LoginError
from sqlalchemy import select

from mailbot.backoff import backoff_delay
from mailbot.config import AccountSettings, WorkerSettings
from mailbot.db.models import Mailbox, Message, MessageStatus
from mailbot.db.session import Database
from mailbot.errors import AlreadyRunning, MailboxError, PermanentError, TransientError
from mailbot.failpoints import failpoint
from mailbot.ingest.ledger import (
    NewMessage,
    acquire_lease,
    add_messages,
    awaiting_server_action,
    get_or_create_mailbox,
    lease_holder,
    mark_server_action_done,
    record_event,
    record_poll_failure,
    record_poll_success,
    release_lease,
    rematch,
    sha256_hex,
)
from mailbot.outbox.drafts import deliver_drafts
from mailbot.pipeline.runner import Pipeline

log = logging.getLogger(__name__)

_MESSAGE_ID = re.compile(rb"^message-id:[ \t]*<?([^\r\n>]*)>?", re.IGNORECASE | re.MULTILINE)
_SUBJECT = re.compile(rb"^subject:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)
_FROM = re.compile(rb"^from:[ \t]*([^\r\n]*)", re.IGNORECASE | re.MULTILINE)


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
    server_actions: int = 0
    drafts_delivered: int = 0
    uidvalidity_changed: bool = False
    error: str | None = None
    lease_held_by: str | None = None
    retries: int = 0
    notes: list[str] = field(default_factory=list)


def _header_value(pattern: re.Pattern[bytes], head: bytes) -> str | None:
    match = pattern.search(head)
    if not match:
        return None
    return match.group(1).decode("utf-8", "replace").strip()[:998] or None


def _header_block(raw: bytes) -> bytes:
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        end = raw.find(b"\n\n")
    return raw[: end if end >= 0 else 8192][:65536]


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
    ) -> None:
        self.db = db
        self.account = account
        self.folder = folder
        self.pipeline = pipeline
        self.worker = worker
        self.owner = owner
        self.stop = stop or threading.Event()
        with db.session() as session:
            self.mailbox_id = get_or_create_mailbox(session, account.name, folder).id

    def poll(self) -> PollReport:
        """One poll: take the lease, sync with retries, record the outcome, release."""
        report = PollReport(self.account.name, self.folder)
        with self.db.session() as session:
            if not acquire_lease(session, self.mailbox_id, self.owner, self.worker.lease_seconds):
                holder, until = lease_holder(session, self.mailbox_id)
                report.lease_held_by = holder
                log.info("%s/%s is being polled by %s (until %s); skipping",
                         self.account.name, self.folder, holder, until)
                return report
        try:
            self._poll_with_retries(report)
        except (PermanentError, TransientError) as exc:
            report.error = str(exc)
            log.warning("%s/%s: %s", self.account.name, self.folder, exc)
            with self.db.session() as session:
                record_poll_failure(session, self.mailbox_id, str(exc))
        else:
            with self.db.session() as session:
                record_poll_success(session, self.mailbox_id)
        finally:
            with self.db.session() as session:
                release_lease(session, self.mailbox_id, self.owner)
        return report

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
            readonly = self.account.processed_action == "none"
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
        with self.db.session() as session:
            acquire_lease(session, self.mailbox_id, self.owner, self.worker.lease_seconds)
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
            last_uid = mailbox.last_uid
            has_history = session.scalar(
                select(Message.id).where(Message.mailbox_id == mailbox.id,
                                         Message.uidvalidity != uidvalidity).limit(1)
            ) is not None
        # A message already here under an old UIDVALIDITY must be re-matched, not re-ingested.
        uids = sorted(u for u in client.search(["UID", f"{last_uid + 1}:*"]) if u > last_uid)
        batch_size = self.account.fetch_batch
        for start in range(0, len(uids), batch_size):
            if self.stop.is_set():
                return
            self._fetch_batch(client, uids[start:start + batch_size], uidvalidity,
                              has_history, report)
            report.processed += self.pipeline.process_pending(self.mailbox_id, stop=self.stop)
            self._after_commit(client, report)
        # Messages fetched in an earlier, interrupted run still need the pipeline and actions.
        report.processed += self.pipeline.process_pending(self.mailbox_id, stop=self.stop)
        self._after_commit(client, report)

    def _after_commit(self, client: IMAPClient, report: PollReport) -> None:
        """The side effects on the server, once the local work is committed."""
        report.server_actions += self._server_actions(client)
        delivered = deliver_drafts(client, self.db, self.mailbox_id, self.account.drafts_folder)
        if delivered:
            report.drafts_delivered += delivered
            self._select(client)  # back to the folder being synced

    def _fetch_batch(
        self,
        client: IMAPClient,
        uids: Sequence[int],
        uidvalidity: int,
        has_history: bool,
        report: PollReport,
    ) -> None:
        meta = client.fetch(uids, ["RFC822.SIZE", "INTERNALDATE"])
        limit = self.account.max_message_bytes
        small = [u for u in uids if u in meta and int(meta[u][b"RFC822.SIZE"]) <= limit]
        large = [u for u in uids if u in meta and int(meta[u][b"RFC822.SIZE"]) > limit]
        bodies = client.fetch(small, ["BODY.PEEK[]"]) if small else {}
        heads = client.fetch(large, ["BODY.PEEK[HEADER]"]) if large else {}
        items: list[NewMessage] = []
        for uid in uids:
            if uid not in meta:
                continue  # expunged between SEARCH and FETCH
            size = int(meta[uid][b"RFC822.SIZE"])
            received = _aware(meta[uid].get(b"INTERNALDATE"))
            if uid in bodies and b"BODY[]" in bodies[uid]:
                raw = bytes(bodies[uid][b"BODY[]"])
                head = _header_block(raw)
                items.append(NewMessage(
                    uidvalidity, uid, raw, size, sha256_hex(raw),
                    _header_value(_MESSAGE_ID, head), _header_value(_SUBJECT, head),
                    _header_value(_FROM, head), received,
                ))
            elif uid in heads:
                head = bytes(heads[uid].get(b"BODY[HEADER]", b""))
                report.oversize += 1
                items.append(NewMessage(
                    uidvalidity, uid, None, size, sha256_hex(head),
                    _header_value(_MESSAGE_ID, head), _header_value(_SUBJECT, head),
                    _header_value(_FROM, head), received, status=MessageStatus.SKIPPED,
                    status_reason=f"over-size: {size} bytes is more than max_message_bytes = "
                                  f"{limit}; handle it by hand",
                ))
        with self.db.session() as session:
            mailbox = session.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            fresh: list[NewMessage] = []
            for item in items:
                known = self._known(session, item) if has_history else None
                if known is not None:
                    rematch(session, known, item.uidvalidity, item.uid)
                    known.server_action_done = False
                    report.rematched += 1
                else:
                    fresh.append(item)
            add_messages(session, mailbox, fresh)
            mailbox.last_uid = max([mailbox.last_uid, *(i.uid for i in items)])
            acquire_lease(session, self.mailbox_id, self.owner, self.worker.lease_seconds)
        failpoint("fetch.after_commit")
        report.fetched += len(fresh)

    def _known(self, session: object, item: NewMessage) -> Message | None:
        from sqlalchemy.orm import Session

        assert isinstance(session, Session)
        query = select(Message).where(
            Message.mailbox_id == self.mailbox_id,
            Message.uidvalidity != item.uidvalidity,
            Message.sha256 == item.sha256,
        )
        if item.message_id:
            query = query.where(
                (Message.message_id == item.message_id) | Message.message_id.is_(None)
            )
        return session.scalars(query.order_by(Message.id).limit(1)).first()

    def _server_actions(self, client: IMAPClient) -> int:
        """Flag or move messages whose local work is committed; then note it in the ledger."""
        with self.db.session() as session:
            mailbox = session.get(Mailbox, self.mailbox_id)
            assert mailbox is not None
            waiting = awaiting_server_action(session, mailbox)
            if not waiting:
                return 0
            pks = [m.id for m in waiting]
            uids = [m.uid for m in waiting]
            if self.account.processed_action == "none":
                mark_server_action_done(session, pks)
                return 0
        action = self.account.processed_action
        if action == "flag":
            client.add_flags(uids, [self.account.processed_flag], silent=True)
        else:
            target = self.account.processed_folder
            if not client.folder_exists(target):
                client.create_folder(target)
            if client.has_capability("MOVE"):
                client.move(uids, target)
            else:
                client.copy(uids, target)
                client.delete_messages(uids, silent=True)
                if client.has_capability("UIDPLUS"):
                    client.uid_expunge(uids)
                else:
                    client.expunge()
        with self.db.session() as session:
            mark_server_action_done(session, pks)
            record_event(session, "server_action", "ok", mailbox_id=self.mailbox_id,
                         details={"action": action, "uids": uids[:1000], "count": len(uids)})
        return len(uids)


def _aware(value: object) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


__all__ = [
    "AlreadyRunning",
    "FolderMissing",
    "LoginFailed",
    "MailboxSync",
    "PollReport",
    "connect",
]
