"""Outcomes from the mail client: what agents did with the drafts, read from Sent and Drafts.

For teams that never open the review desk. Each scan of an account is read-only on the
server (folders selected read-only, messages fetched with BODY.PEEK):

1. The Sent folder, from the last UID read (kept per folder and UIDVALIDITY in
   `folder_scans`; a new UIDVALIDITY reads the folder again). Headers come first; the whole
   message only for a reply matched to mail in the ledger, by the draft's token header,
   the draft's Message-ID, or In-Reply-To / References naming a customer message. With a
   draft, the reply is `sent_unchanged` or `sent_edited` with the normalised edit distance
   between the draft and the text sent; a draft sent unchanged confirms its classification
   and its fields as labels. Without a draft (mail a person had to answer), the reply marks
   the message handled.
2. The Drafts folder: a delivered draft that is no longer there (neither by its token nor
   as another draft answering the same mail) and was not sent is `discarded` once it has
   been missing for `outcomes.discard_after_hours`.

A message gets one outcome: one already recorded (by the desk or an earlier scan) is never
recorded again, and a reply the desk is sending is the desk's to record.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import parseaddr
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.compose.mime import TOKEN_HEADER
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.mailclient import DraftMissing, FolderScan
from mailbot.db.models import Account, Mailbox, Message, MessageStatus
from mailbot.db.outbox import OutboxEntry, OutboxState
from mailbot.db.outcomes import (
    DraftOutcome,
    Outcome,
    OutcomeSource,
)
from mailbot.db.web import ReviewClaim
from mailbot.errors import MailbotError
from mailbot.outbox.drafts import DEFAULT_SENT, drafts_folder, special_folder
from mailbot.parse.quoting import split_reply

if TYPE_CHECKING:
    from mailbot.config import AccountSettings, Config
    from mailbot.db.session import Database

log = logging.getLogger(__name__)

STAGE = "mail_client"  # the audit events' stage
_FIELDS = ("MESSAGE-ID", "IN-REPLY-TO", "REFERENCES", "FROM", TOKEN_HEADER.upper())
_FETCH_HEADERS = f"BODY.PEEK[HEADER.FIELDS ({' '.join(_FIELDS)})]"
_CHUNK = 200  # messages per header FETCH
_MSG_ID = re.compile(r"<([^<>\s]+)>")
# A reply from the mail client settles mail in these statuses; in the others the pipeline
# is still at work, or the message was answered or settled already.
_OPEN = frozenset({MessageStatus.DRAFTED, MessageStatus.NEEDS_HUMAN, MessageStatus.FAILED,
                   MessageStatus.QUARANTINED, MessageStatus.SEND_FAILED,
                   MessageStatus.ESCALATING, MessageStatus.PARSED})
# The desk is sending this reply (or a person decides whether it went): the desk records it.
_DESK_SENDING = frozenset({MessageStatus.SENDING, MessageStatus.SEND_UNCERTAIN})


@dataclass
class ScanReport:
    """What one scan of one account found."""

    account: str
    sent_folder: str | None = None
    read: int = 0  # new messages read in the Sent folder
    sent_unchanged: int = 0
    sent_edited: int = 0
    handled: int = 0  # replies to mail mailbot did not draft
    discarded: int = 0
    already: int = 0  # replies whose message had its outcome (the desk's or an earlier one)
    uidvalidity_changed: bool = False
    error: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SentHeaders:
    """What a message in the Sent folder says about what it answers."""

    uid: int
    message_id: str | None
    in_reply_to: tuple[str, ...]
    references: tuple[str, ...]
    token: str | None
    sender: str | None
    size: int


@dataclass(frozen=True, slots=True)
class ReplyMatch:
    """The customer message a sent reply answers, its draft, and how that was found."""

    message_pk: int
    draft_id: int | None
    matched_by: str  # token, message_id, in_reply_to or references


# --- texts ---------------------------------------------------------------------------------


def reply_part(text: str) -> str:
    """What a reply says itself: without quoted history and signature."""
    new, _quoted, _signature = split_reply(text.replace("\r\n", "\n"))
    return (new if new.strip() else text).strip()


def _comparable(text: str) -> str:
    # Mail clients re-wrap lines and change blank lines; only the words count as an edit.
    return " ".join(text.split())


def draft_distance(proposed: str, sent: str) -> float:
    """The normalised edit distance between a draft and the reply sent (0.0 = unchanged);
    quoted history, signatures and re-wrapped lines do not count."""
    from mailbot.outbox.send import edit_distance

    return edit_distance(_comparable(reply_part(proposed)), _comparable(reply_part(sent)))


def sent_text(raw: bytes) -> str | None:
    """The text of a sent reply (its plain part, or its HTML as text); None if unreadable."""
    from mailbot.errors import ParseError
    from mailbot.parse.mime import parse_message

    try:
        parsed = parse_message(raw)
    except ParseError:
        return None
    return parsed.text


def parse_sent_headers(uid: int, head: bytes, size: int) -> SentHeaders:
    """The threading headers, token and sender of one message in Sent."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(head)

    def ids(name: str) -> tuple[str, ...]:
        return tuple(dict.fromkeys(_MSG_ID.findall(" ".join(
            str(v) for v in headers.get_all(name, [])))))

    message_ids = ids("Message-ID")
    token = str(headers.get(TOKEN_HEADER, "") or "").strip() or None
    sender = parseaddr(str(headers.get("From", "") or ""))[1].strip() or None
    return SentHeaders(uid, message_ids[0] if message_ids else None, ids("In-Reply-To"),
                       ids("References"), token, sender[:200] if sender else None, size)


# --- folders -------------------------------------------------------------------------------


def sent_folder_of(client: IMAPClient, account: AccountSettings) -> str:
    """The account's Sent folder: configured, else the relay's, else \\Sent, else "Sent"."""
    if account.sent_folder:
        return account.sent_folder
    if account.smtp is not None and account.smtp.sent_folder:
        return account.smtp.sent_folder
    return special_folder(client, b"\\Sent", DEFAULT_SENT)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _header_bytes(data: dict[bytes, Any]) -> bytes:
    # The server names the item as it likes (field order, case): take the header section.
    for key, value in data.items():
        if key.upper().startswith(b"BODY[HEADER"):
            return bytes(value or b"")
    return b""


# --- the scan ------------------------------------------------------------------------------


def scan_all(config: Config, database: Database, *, now: datetime | None = None
             ) -> list[ScanReport]:
    """Scan every IMAP account once; a failing account is reported, never stops the others."""
    return [scan_account(config, database, account, now=now) for account in config.accounts]


def scan_account(config: Config, database: Database, account: AccountSettings, *,
                 now: datetime | None = None) -> ScanReport:
    """Read one account's Sent and Drafts folders and record what became of its drafts."""
    from mailbot.ingest.imap import session_for

    report = ScanReport(account.name)
    with database.session() as session:
        account_id = session.scalar(select(Account.id).where(Account.name == account.name))
    if account_id is None:
        return report  # nothing fetched from this account yet: nothing to match
    try:
        with session_for(account, account.resolve_password()) as client:
            scan = _AccountScan(config, database, account, account_id, client, report,
                                now or utcnow())
            # Without the Sent folder a sent draft would look discarded: Drafts waits.
            if scan.sent():
                scan.drafts()
    except (MailbotError, IMAPClientError, OSError) as exc:
        report.error = f"account {account.name}: {exc}"
        log.warning("outcomes from the mail client of %s: %s", account.name, exc)
    return report


class _AccountScan:
    """One scan of one account over one IMAP connection."""

    def __init__(self, config: Config, database: Database, account: AccountSettings,
                 account_id: int, client: IMAPClient, report: ScanReport,
                 now: datetime) -> None:
        self.config = config
        self.database = database
        self.account = account
        self.account_id = account_id
        self.client = client
        self.report = report
        self.now = now

    # --- Sent ----------------------------------------------------------------------------

    def sent(self) -> bool:
        """Read what is new in Sent; False when there is no Sent folder to read."""
        folder = sent_folder_of(self.client, self.account)
        self.report.sent_folder = folder
        if not self.client.folder_exists(folder):
            self.report.notes.append(f"there is no folder {folder!r}: set accounts.sent_folder")
            return False
        uidvalidity = int(self.client.select_folder(folder, readonly=True)[b"UIDVALIDITY"])
        with self.database.session() as session:
            oldest = session.scalar(
                select(func.min(Message.fetched_at)).join(Mailbox, Mailbox.id == Message.mailbox_id)
                .where(Mailbox.account_id == self.account_id))
            last_uid = self._scan_row(session, folder, uidvalidity).last_uid
        if oldest is None:
            return True
        # Replies are filed after the mail they answer arrived: older mail in Sent (years of
        # it, at the first scan) answers nothing in the ledger and is not read at all.
        since = (oldest - timedelta(days=1)).date()
        uids = sorted(int(u) for u in self.client.search(
            ["UID", f"{last_uid + 1}:*", "SINCE", since]) if int(u) > last_uid)
        for chunk in _chunks(uids, _CHUNK):
            fetched = self.client.fetch(chunk, [_FETCH_HEADERS, "RFC822.SIZE"])
            for uid in chunk:
                if uid in fetched:  # else expunged between SEARCH and FETCH
                    data = fetched[uid]
                    self._consider(folder, parse_sent_headers(
                        uid, _header_bytes(data), int(data.get(b"RFC822.SIZE", 0))))
            self.report.read += len(chunk)
            with self.database.session() as session:
                row = self._scan_row(session, folder, uidvalidity)
                row.last_uid = max(row.last_uid, chunk[-1])
                row.scanned_at = utcnow()
        return True

    def _scan_row(self, session: Session, folder: str, uidvalidity: int) -> FolderScan:
        row = session.scalar(select(FolderScan).where(
            FolderScan.account_id == self.account_id, FolderScan.folder == folder,
            FolderScan.uidvalidity == uidvalidity))
        if row is not None:
            return row
        known = session.scalar(select(FolderScan.uidvalidity).where(
            FolderScan.account_id == self.account_id, FolderScan.folder == folder)
            .order_by(FolderScan.id.desc()).limit(1))
        if known is not None:
            # Read the folder again: what was matched before has its outcome and is skipped.
            self.report.uidvalidity_changed = True
            log.warning("%s/%s: UIDVALIDITY changed from %s to %s; reading it again",
                        self.account.name, folder, known, uidvalidity)
        row = FolderScan(account_id=self.account_id, folder=folder, uidvalidity=uidvalidity,
                         last_uid=0, scanned_at=utcnow())
        try:
            with session.begin_nested():
                session.add(row)
        except IntegrityError:  # another worker's scan made it first: use theirs
            return session.scalars(select(FolderScan).where(
                FolderScan.account_id == self.account_id, FolderScan.folder == folder,
                FolderScan.uidvalidity == uidvalidity)).one()
        return row

    def _consider(self, folder: str, head: SentHeaders) -> None:
        with self.database.session() as session:
            match = find_reply_match(session, self.account_id, head)
            settled = match is not None and _settled(session, match.message_pk, head)
        if match is None:
            return
        if settled:
            self.report.already += 1
            return
        raw = None
        if head.size <= self.account.max_message_bytes:
            body = self.client.fetch([head.uid], ["BODY.PEEK[]"]).get(head.uid, {})
            raw = bytes(body.get(b"BODY[]") or b"") or None
        with self.database.session() as session:
            outcome = record_reply(session, match, head, raw, folder)
        if outcome is None:
            self.report.already += 1
        elif outcome == Outcome.SENT_UNCHANGED:
            self.report.sent_unchanged += 1
        elif outcome == Outcome.SENT_EDITED:
            self.report.sent_edited += 1
        else:
            self.report.handled += 1

    # --- Drafts --------------------------------------------------------------------------

    def drafts(self) -> None:
        with self.database.session() as session:
            rows = session.execute(
                select(DraftRecord.id, DraftRecord.token, DraftRecord.drafts_folder,
                       Message.message_id, DraftMissing.missing_since)
                .join(Message, Message.id == DraftRecord.message_pk)
                .join(Mailbox, Mailbox.id == Message.mailbox_id)
                .outerjoin(DraftMissing, DraftMissing.draft_id == DraftRecord.id)
                .where(Mailbox.account_id == self.account_id,
                       DraftRecord.delivered_at.is_not(None),
                       Message.status == MessageStatus.DRAFTED,
                       ~exists().where(DraftOutcome.message_pk == Message.id))
                .order_by(DraftRecord.id)).all()
        if not rows:
            return
        default = drafts_folder(self.client, self.account.drafts_folder)
        present: dict[str, tuple[set[str], set[str]]] = {}
        for folder in sorted({r.drafts_folder or default for r in rows}):
            if not self.client.folder_exists(folder):
                # A folder gone (renamed, or a misconfiguration) says nothing about a draft.
                self.report.notes.append(f"there is no drafts folder {folder!r}")
                continue
            present[folder] = self._drafts_in(folder)
        grace = timedelta(hours=self.config.outcomes.discard_after_hours)
        for draft_id, token, folder, message_id, missing_since in rows:
            found = present.get(folder or default)
            if found is None:
                continue
            tokens, answering = found
            here = token in tokens or (message_id is not None and message_id in answering)
            if here and missing_since is None:
                continue  # the usual case: nothing to write
            with self.database.session() as session:
                if here:  # back again (saved anew, or moved back)
                    session.execute(delete(DraftMissing)
                                    .where(DraftMissing.draft_id == draft_id))
                elif missing_since is None:
                    session.add(DraftMissing(draft_id=draft_id, missing_since=self.now))
                    missing_since = self.now
                if not here and self.now - missing_since >= grace and record_discard(
                        session, draft_id, missing_since=missing_since):
                    self.report.discarded += 1

    def _drafts_in(self, folder: str) -> tuple[set[str], set[str]]:
        """The draft tokens in the folder, and the Message-IDs its drafts answer (an agent's
        client may save an edited draft as a new message without our header)."""
        self.client.select_folder(folder, readonly=True)
        uids = sorted(int(u) for u in self.client.search("ALL"))
        tokens: set[str] = set()
        answering: set[str] = set()
        for chunk in _chunks(uids, _CHUNK):
            for uid, data in self.client.fetch(chunk, [_FETCH_HEADERS]).items():
                head = parse_sent_headers(int(uid), _header_bytes(data), 0)
                if head.token:
                    tokens.add(head.token)
                answering.update(head.in_reply_to)
        return tokens, answering


# --- matching and recording ----------------------------------------------------------------


def find_reply_match(session: Session, account_id: int, head: SentHeaders
                     ) -> ReplyMatch | None:
    """The ledger message (of this account) a sent reply answers, if any."""
    drafts = (select(DraftRecord.id, DraftRecord.message_pk)
              .join(Message, Message.id == DraftRecord.message_pk)
              .join(Mailbox, Mailbox.id == Message.mailbox_id)
              .where(Mailbox.account_id == account_id))
    if head.token:
        row = session.execute(drafts.where(DraftRecord.token == head.token)).first()
        if row is not None:
            return ReplyMatch(row.message_pk, row.id, "token")
    if head.message_id:
        row = session.execute(drafts.where(DraftRecord.reply_message_id == head.message_id)
                              ).first()
        if row is not None:
            return ReplyMatch(row.message_pk, row.id, "message_id")
    chains: tuple[tuple[str, Iterable[str]], ...] = (
        ("in_reply_to", head.in_reply_to), ("references", reversed(head.references)))
    for matched_by, message_ids in chains:
        for message_id in message_ids:
            pk = session.scalar(
                select(Message.id).join(Mailbox, Mailbox.id == Message.mailbox_id)
                .where(Mailbox.account_id == account_id, Message.message_id == message_id)
                .order_by(Message.id.desc()).limit(1))
            if pk is not None:
                draft_id = session.scalar(select(DraftRecord.id)
                                          .where(DraftRecord.message_pk == pk))
                return ReplyMatch(pk, draft_id, matched_by)
    return None


def _settled(session: Session, message_pk: int, head: SentHeaders) -> bool:
    """Whether the message has its outcome, or the desk is the one sending this reply."""
    if session.scalar(select(DraftOutcome.id).where(DraftOutcome.message_pk == message_pk)
                      .limit(1)) is not None:
        return True
    status = session.scalar(select(Message.status).where(Message.id == message_pk))
    if status in _DESK_SENDING:
        return True
    entry = session.scalar(select(OutboxEntry).where(OutboxEntry.key == f"send:{message_pk}"))
    if entry is None:
        return False
    # A desk send that failed leaves the reply to the agent; any other is the desk's.
    return entry.state != OutboxState.FAILED or (
        head.message_id is not None and (entry.payload or {}).get("message_id") == head.message_id)


def record_reply(session: Session, match: ReplyMatch, head: SentHeaders, raw: bytes | None,
                 folder: str) -> Outcome | None:
    """Record what a reply sent from the mail client means; None if the message is settled."""
    message = session.get(Message, match.message_pk, with_for_update=True)
    if message is None or _settled(session, message.id, head):
        return None
    text = sent_text(raw) if raw is not None else None
    draft = session.get(DraftRecord, match.draft_id) if match.draft_id is not None else None
    agent = head.sender or "mail client"
    distance: float | None = None
    if draft is not None:
        distance = draft_distance(draft.body, text) if text is not None else None
        outcome = Outcome.SENT_UNCHANGED if distance == 0.0 else Outcome.SENT_EDITED
        status = MessageStatus.SENT
    else:
        outcome = Outcome.HANDLED_ELSEWHERE
        status = MessageStatus.HANDLED_ELSEWHERE
    session.add(DraftOutcome(
        message_pk=message.id, draft_id=draft.id if draft is not None else None,
        outcome=outcome, edit_distance=distance,
        note=None if draft is not None else "answered from the mail client",
        proposed_text=draft.body if draft is not None else None,
        sent_text=reply_part(text) if text is not None else None,
        sent_message_id=head.message_id, source=OutcomeSource.MAIL_CLIENT, agent=agent,
        template=draft.template if draft else None, model=draft.model if draft else None,
        model_version=draft.model_version if draft else None,
        language=draft.language if draft else None, created_at=utcnow()))
    if message.status in _OPEN:
        message.status = status
        message.status_reason = (None if status == MessageStatus.SENT
                                 else "answered from the mail client")
        message.updated_at = utcnow()
    if outcome == Outcome.SENT_UNCHANGED and draft is not None:
        from mailbot.outbox.send import confirm_draft

        confirm_draft(session, message.id, draft, agent)
    session.execute(delete(ReviewClaim).where(ReviewClaim.message_pk == message.id))
    record_event(session, STAGE, outcome.value, message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor="mail_client",
                 details={"matched_by": match.matched_by, "folder": folder, "uid": head.uid,
                          "edit_distance": distance, "read": text is not None})
    return outcome


def record_discard(session: Session, draft_id: int, *, missing_since: datetime) -> bool:
    """A draft deleted from Drafts and never sent: discarded (False if settled meanwhile)."""
    draft = session.get(DraftRecord, draft_id)
    if draft is None:
        return False
    message = session.get(Message, draft.message_pk, with_for_update=True)
    if message is None or message.status != MessageStatus.DRAFTED or session.scalar(
            select(DraftOutcome.id).where(DraftOutcome.message_pk == message.id).limit(1)
    ) is not None:
        return False
    session.add(DraftOutcome(
        message_pk=message.id, draft_id=draft.id, outcome=Outcome.DISCARDED,
        note="the draft was deleted from the Drafts folder and no reply was sent",
        proposed_text=draft.body, source=OutcomeSource.MAIL_CLIENT,
        template=draft.template, model=draft.model, model_version=draft.model_version,
        language=draft.language, created_at=utcnow()))
    message.status = MessageStatus.HANDLED_ELSEWHERE
    message.status_reason = "draft discarded in the mail client"
    message.updated_at = utcnow()
    record_event(session, STAGE, Outcome.DISCARDED.value, message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor="mail_client",
                 details={"missing_since": missing_since.isoformat()})
    return True


__all__ = [
    "ReplyMatch",
    "STAGE",
    "ScanReport",
    "SentHeaders",
    "draft_distance",
    "find_reply_match",
    "parse_sent_headers",
    "record_discard",
    "record_reply",
    "reply_part",
    "scan_account",
    "scan_all",
    "sent_folder_of",
]
