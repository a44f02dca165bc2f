"""Replies approved in the review desk, sent over SMTP exactly once.

The outgoing Message-ID and the MIME are an outbox row committed before anything is sent.
Right before the SMTP transaction the row is marked `smtp_started` (committed); a row found
so marked again (its sender crashed) is never sent a second time: the Sent folder is
searched for its Message-ID, and a reply found there is finished, one not found becomes
`uncertain` for a person to decide. After the relay took it, the copy is filed in Sent
(unless `smtp.save_to_sent = false`) and the stale draft is removed from Drafts.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import smtplib
import socket
import ssl
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.utils import formataddr, getaddresses
from typing import TYPE_CHECKING, Any

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError
from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from mailbot.audit.events import record_event
from mailbot.compose.mime import build_reply, new_message_id, reply_subject
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Account, Event, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.outbox import OutboxEntry, OutboxKind, OutboxState
from mailbot.db.outcomes import DraftOutcome, HumanLabel, LabelKind, LabelSource, Outcome
from mailbot.db.web import ReviewClaim
from mailbot.errors import MailbotError, PermanentError
from mailbot.failpoints import failpoint
from mailbot.ingest.lease import worker_identity
from mailbot.outbox.drafts import DEFAULT_SENT, drafts_folder, remove_drafts, special_folder
from mailbot.outbox.queue import Job, claim, complete, enqueue, fail
from mailbot.parse.message import Address

if TYPE_CHECKING:
    from mailbot.config import AccountSettings, Config, SmtpSettings
    from mailbot.db.session import Database

log = logging.getLogger(__name__)

# The relay said no: nothing went out, and trying again will not change its mind.
_REFUSED = (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPDataError,
            smtplib.SMTPNotSupportedError)
# Before the SMTP transaction began: nothing went out, try again later.
_NOT_STARTED = (OSError, socket.timeout, smtplib.SMTPException, ssl.SSLError)


# What a send's outbox row holds that is personal data, dropped once it is done.
PERSONAL_PAYLOAD = frozenset({"mime_b64", "to", "sent_text", "proposed_text"})


class SendRefused(PermanentError):
    """A reply cannot be sent (no relay configured, nothing to reply to)."""


@dataclass(frozen=True, slots=True)
class ReplyHeaders:
    """Who a reply goes to and how it threads."""

    sender: Address
    to: Address
    subject: str
    in_reply_to: str | None
    references: tuple[str, ...]


@dataclass
class SendReport:
    """What one drain of the sends did."""

    sent: int = 0
    confirmed: int = 0  # found in Sent after a crash: finished without sending again
    uncertain: int = 0
    failed: int = 0
    retrying: int = 0
    errors: list[str] = field(default_factory=list)


def edit_distance(proposed: str, sent: str) -> float:
    """Normalised Levenshtein distance: 0.0 = sent as drafted, 1.0 = nothing kept."""
    from rapidfuzz.distance import Levenshtein

    return round(float(Levenshtein.normalized_distance(proposed.strip(), sent.strip())), 4)


def account_of(session: Session, message: Message) -> str:
    """The name of the account a message came from."""
    name = session.scalar(select(Account.name).join(Mailbox, Mailbox.account_id == Account.id)
                          .where(Mailbox.id == message.mailbox_id))
    return name or ""


def reply_headers(session: Session, config: Config, message: Message,
                  draft: DraftRecord | None) -> ReplyHeaders:
    """The headers of the reply: those of the draft when there is one, else from the mail."""
    account = account_of(session, message)
    sender = Address(config.drafts.from_name, config.reply_address(account))
    if draft is not None and draft.mime:
        parsed = message_from_bytes(draft.mime, policy=policy.default)
        to = getaddresses([str(parsed.get("To", ""))])
        refs = str(parsed.get("References", "")).split()
        if to and to[0][1]:
            return ReplyHeaders(sender, Address(to[0][0], to[0][1]),
                                str(parsed.get("Subject", draft.subject)),
                                str(parsed.get("In-Reply-To", "")).strip("<> ") or None,
                                tuple(r.strip("<>") for r in refs[:-1]))
    raw = session.get(RawMessage, message.id)
    if raw is None:
        raise SendRefused(f"message {message.id}: its mail was removed (retention or erasure); "
                          "there is no address to reply to")
    from mailbot.parse.mime import parse_message

    inbound = parse_message(raw.raw)
    if inbound.reply_address is None:
        raise SendRefused(f"message {message.id} has no From or Reply-To address to reply to")
    return ReplyHeaders(sender, inbound.reply_address, reply_subject(inbound.subject),
                        inbound.message_id, inbound.references)


def enqueue_send(session: Session, config: Config, message: Message, *, body: str,
                 agent: str, draft: DraftRecord | None, subject: str | None = None,
                 agent_display: str | None = None) -> OutboxEntry | None:
    """Commit the reply (its Message-ID and bytes) as an outbox row; None if one exists."""
    account_name = account_of(session, message)
    account = next((a for a in config.accounts if a.name == account_name), None)
    if account is None or account.smtp is None:
        raise SendRefused(f"account {account_name or '(local files)'} has no [accounts.smtp] "
                          "relay configured; add one to send from the desk")
    headers = reply_headers(session, config, message, draft)
    sender = headers.sender
    if account.smtp.agent_name_in_from and agent_display:
        sender = Address(f"{agent_display} via {sender.name}".strip(), sender.email)
    message_id = new_message_id(sender.email)
    token = draft.token if draft is not None else message_id.partition("@")[0]
    body = body.replace("\r\n", "\n")
    mime = build_reply(sender=sender, to=headers.to, subject=subject or headers.subject,
                       body=body, message_id=message_id, in_reply_to=headers.in_reply_to,
                       references=headers.references, token=token,
                       language=draft.language if draft is not None else None,
                       html_alternative=config.drafts.html_alternative, auto_submitted=False)
    proposed = draft.body if draft is not None else None
    payload: dict[str, Any] = {
        "account": account_name, "message_id": message_id, "token": token,
        "mime_b64": base64.b64encode(mime).decode("ascii"),
        "from": sender.email, "to": headers.to.email, "agent": agent,
        "draft_id": draft.id if draft is not None else None,
        "proposed_text": proposed, "sent_text": body,
        "edit_distance": edit_distance(proposed, body) if proposed is not None else None,
    }
    key = f"send:{message.id}"
    failed = session.scalar(select(OutboxEntry).where(OutboxEntry.key == key,
                                                      OutboxEntry.state == OutboxState.FAILED))
    if failed is not None:
        # Refused, or never started: nothing went out, so a new send takes its place.
        failed.key = f"{key}:failed:{failed.id}"
        session.flush()
    entry = enqueue(session, kind=OutboxKind.SEND, key=key,
                    mailbox_id=message.mailbox_id, message_pk=message.id, payload=payload)
    if entry is None:
        return None
    message.status = MessageStatus.SENDING
    message.status_reason = None
    message.updated_at = utcnow()
    record_event(session, "desk", "send_requested", message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor=agent,
                 details={"edited": proposed is not None and proposed.strip() != body.strip(),
                          "edit_distance": payload["edit_distance"]})
    return entry


# --- the drainer -----------------------------------------------------------------------------


def drain_sends(config: Config, database: Database, owner: str | None = None, *,
                limit: int = 50) -> SendReport:
    """Send every due reply (the desk after each approval, the worker every cycle)."""
    owner = owner or worker_identity()
    report = SendReport()
    with database.session() as session:
        jobs = claim(session, owner, kinds=[OutboxKind.SEND], limit=limit,
                     seconds=config.worker.claim_seconds)
        started = {row.id: bool((row.result or {}).get("smtp_started"))
                   for row in session.scalars(select(OutboxEntry).where(
                       OutboxEntry.id.in_([j.id for j in jobs])))} if jobs else {}
    for job in jobs:
        try:
            _send_one(config, database, owner, job, started.get(job.id, False), report)
        except MailbotError as exc:
            report.errors.append(str(exc))
            log.warning("outbox row %s: %s", job.id, exc)
    return report


def _send_one(config: Config, database: Database, owner: str, job: Job, smtp_started: bool,
              report: SendReport) -> None:
    payload = job.payload
    try:
        account = config.account(payload["account"])
    except MailbotError as exc:
        _give_up(database, owner, job, str(exc), report, OutboxState.FAILED)
        return
    smtp = account.smtp
    if smtp is None:
        _give_up(database, owner, job, f"account {account.name} has no [accounts.smtp] relay",
                 report, OutboxState.FAILED)
        return
    mime = base64.b64decode(payload["mime_b64"])
    if smtp_started:
        # An earlier attempt may have sent it: only the Sent folder can tell.
        try:
            found = _in_sent(account, smtp, payload["message_id"])
        except (MailbotError, IMAPClientError, OSError) as exc:
            _retry_later(database, owner, job, f"cannot check the Sent folder: {exc}", report)
            return
        if found:
            _file_and_finish(config, database, owner, job, account, mime, report,
                             confirmed=True)
        else:
            _give_up(database, owner, job,
                     "an earlier attempt was interrupted during the SMTP transaction and the "
                     "reply is not in the Sent folder: it may or may not have gone out; check "
                     "with the customer or the relay's log, then resolve it in the desk",
                     report, OutboxState.UNCERTAIN)
        return
    relay = f"{smtp.host}:{smtp.effective_port}"
    try:
        connection = _smtp_connect(account, smtp)
    except _NOT_STARTED as exc:
        _retry_later(database, owner, job, f"Not sent: the relay {relay} cannot be reached "
                     f"({_smtp_text(exc)}); it will be tried again", report)
        return
    with contextlib.closing(connection):
        with database.session() as session:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == job.id,
                                                      OutboxEntry.claimed_by == owner)
                            .values(result={"smtp_started": True}))
        try:
            connection.sendmail(payload["from"], [payload["to"]], mime)
        except _REFUSED as exc:
            said, temporary = refusal(exc)
            if temporary:  # a 4xx: nothing went out, and the relay asks to be tried later
                _retry_later(database, owner, job, f"Not sent: the relay {relay} refused the "
                             f"reply for now ({said}); it will be tried again", report,
                             not_started=True)
            else:
                _give_up(database, owner, job, f"Not sent: the relay {relay} refused the "
                         f"reply ({said}); change what it objects to and send again", report,
                         OutboxState.FAILED)
            return
        except _NOT_STARTED as exc:
            # Cut during the transaction: it may have been accepted. Never send it again.
            _give_up(database, owner, job, f"the connection to the relay failed during the "
                     f"SMTP transaction ({exc}); the reply may or may not have gone out",
                     report, OutboxState.UNCERTAIN)
            return
        with contextlib.suppress(smtplib.SMTPException, OSError):
            connection.quit()
    failpoint("send.after_smtp")
    _file_and_finish(config, database, owner, job, account, mime, report, confirmed=False)


def refusal(exc: Exception) -> tuple[str, bool]:
    """What the relay answered, and whether it was temporary (4xx: try again later)."""
    def text(code: int, message: bytes | str) -> str:
        said = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
        return f"{code} {said}".strip()

    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        answers: list[tuple[int, bytes | str]] = [(int(code), msg) for code, msg
                                                   in exc.recipients.values()]
    elif isinstance(exc, smtplib.SMTPResponseException):
        answers = [(int(exc.smtp_code), exc.smtp_error)]
    else:
        return _smtp_text(exc), False
    said = "; ".join(text(code, msg) for code, msg in answers)
    return said, bool(answers) and all(400 <= code < 500 for code, _ in answers)


def _smtp_text(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def send_now(session: Session, message_pk: int) -> None:
    """Make the message's waiting send due at once (an agent pressed Retry sending)."""
    session.execute(update(OutboxEntry).where(OutboxEntry.key == f"send:{message_pk}",
                                              OutboxEntry.state == OutboxState.PENDING)
                    .values(retry_at=None))


def _smtp_connect(account: AccountSettings, smtp: SmtpSettings) -> smtplib.SMTP:
    context = ssl.create_default_context()
    if not smtp.tls_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    connection: smtplib.SMTP
    if smtp.tls == "implicit":
        connection = smtplib.SMTP_SSL(smtp.host, smtp.effective_port, timeout=smtp.timeout,
                                      context=context)
    else:
        connection = smtplib.SMTP(smtp.host, smtp.effective_port, timeout=smtp.timeout)
        if smtp.tls == "starttls":
            connection.starttls(context=context)
    password = smtp.resolve_password(account.name)
    if smtp.username and password is not None:
        connection.login(smtp.username, password)
    return connection


def _imap(account: AccountSettings) -> IMAPClient:
    from mailbot.ingest.imap import connect

    return connect(account, account.resolve_password())


def sent_folder(client: IMAPClient, smtp: SmtpSettings) -> str:
    """The configured Sent folder, else the server's \\Sent folder, else "Sent"."""
    return smtp.sent_folder or special_folder(client, b"\\Sent", DEFAULT_SENT)


def _in_sent(account: AccountSettings, smtp: SmtpSettings, message_id: str) -> bool:
    client = _imap(account)
    try:
        folder = sent_folder(client, smtp)
        if not client.folder_exists(folder):
            return False
        client.select_folder(folder, readonly=True)
        return bool(client.search(["HEADER", "Message-ID", message_id]))
    finally:
        with contextlib.suppress(Exception):
            client.logout()


def _file_copies(account: AccountSettings, smtp: SmtpSettings, mime: bytes, message_id: str,
                 token: str) -> dict[str, Any]:
    """The copy into Sent (once) and the stale draft out of Drafts; what was done."""
    done: dict[str, Any] = {}
    client = _imap(account)
    try:
        if smtp.save_to_sent:
            folder = sent_folder(client, smtp)
            if not client.folder_exists(folder):
                client.create_folder(folder)
            client.select_folder(folder, readonly=True)
            if not client.search(["HEADER", "Message-ID", message_id]):
                client.append(folder, mime, flags=[b"\\Seen"])
            done["sent_folder"] = folder
        folder = drafts_folder(client, account.drafts_folder)
        if client.folder_exists(folder):
            done["drafts_removed"] = remove_drafts(client, folder, token)
    finally:
        with contextlib.suppress(Exception):
            client.logout()
    return done


def _file_and_finish(config: Config, database: Database, owner: str, job: Job,
                     account: AccountSettings, mime: bytes, report: SendReport, *,
                     confirmed: bool) -> None:
    assert account.smtp is not None
    payload = job.payload
    try:
        filed = _file_copies(account, account.smtp, mime, payload["message_id"],
                             payload["token"])
    except (MailbotError, IMAPClientError, OSError) as exc:
        # The reply went out; a missing copy in Sent is noted, never a reason to send again.
        filed = {"filing_error": f"{type(exc).__name__}: {exc}"}
        log.warning("reply %s sent but not filed: %s", payload["message_id"], exc)
    failpoint("send.before_commit")
    with database.session() as session:
        result = {"sent": True, "confirmed_in_sent": confirmed, **filed}
        if not complete(session, job, owner, result):
            return
        _record_sent(session, job, result)
    if confirmed:
        report.confirmed += 1
    else:
        report.sent += 1


def _record_sent(session: Session, job: Job, result: dict[str, Any]) -> None:
    payload = job.payload
    agent = payload.get("agent") or "desk"
    message = session.get(Message, job.message_pk) if job.message_pk is not None else None
    if message is None:
        return
    message.status = MessageStatus.SENT
    message.status_reason = None
    message.updated_at = utcnow()
    draft = session.get(DraftRecord, payload["draft_id"]) if payload.get("draft_id") else None
    distance = payload.get("edit_distance")
    unchanged = draft is not None and distance == 0.0
    session.add(DraftOutcome(
        message_pk=message.id, draft_id=draft.id if draft is not None else None,
        outcome=Outcome.SENT_UNCHANGED if unchanged else Outcome.SENT_EDITED,
        edit_distance=distance, proposed_text=payload.get("proposed_text"),
        sent_text=payload.get("sent_text"), sent_message_id=payload["message_id"],
        agent=agent, template=draft.template if draft else None,
        model=draft.model if draft else None, model_version=draft.model_version if draft else None,
        language=draft.language if draft else None, created_at=utcnow()))
    if unchanged and draft is not None:
        confirm_draft(session, message.id, draft, agent)
    session.execute(delete(ReviewClaim).where(ReviewClaim.message_pk == message.id))
    # Done: the reply's text and address live on in draft_outcomes (which retention and
    # erasure clear), not in the outbox.
    session.execute(update(OutboxEntry).where(OutboxEntry.id == job.id).values(
        payload={k: v for k, v in payload.items() if k not in PERSONAL_PAYLOAD}))
    record_event(session, "send", "confirmed" if result.get("confirmed_in_sent") else "ok",
                 message_pk=message.id, mailbox_id=message.mailbox_id, actor=agent,
                 details={"outcome": "sent_unchanged" if unchanged else "sent_edited",
                          "edit_distance": distance,
                          "sent_folder": result.get("sent_folder"),
                          "drafts_removed": result.get("drafts_removed"),
                          "filing_error": result.get("filing_error")})


def confirm_labels(session: Session, message_pk: int, agent: str) -> None:
    """A draft sent unchanged: its classification stands (labels not corrected by hand)."""
    classified = session.scalar(select(Event.details).where(
        Event.message_pk == message_pk, Event.stage == "classify").order_by(Event.id.desc()))
    if not classified:
        return
    corrected = set(session.scalars(select(HumanLabel.kind).where(
        HumanLabel.message_pk == message_pk, HumanLabel.source == LabelSource.DESK)))
    for kind in (LabelKind.INTENT, LabelKind.PRIORITY, LabelKind.SENTIMENT, LabelKind.LANGUAGE):
        if kind in corrected:
            continue
        value = classified.get(kind)
        label = value.get("label") if isinstance(value, dict) else value
        if label:
            session.add(HumanLabel(message_pk=message_pk, kind=kind, value=str(label),
                                   previous=str(label), source=LabelSource.CONFIRMED,
                                   agent=agent, created_at=utcnow()))


def confirm_draft(session: Session, message_pk: int, draft: DraftRecord, agent: str) -> None:
    """A draft sent unchanged (from the desk or the agent's mail client): its classification
    and the fields it used stand as labels."""
    confirm_labels(session, message_pk, agent)
    confirm_fields(session, message_pk, draft, agent)


def confirm_fields(session: Session, message_pk: int, draft: DraftRecord, agent: str) -> None:
    """A draft sent unchanged: the field values it used stand (those a person corrected by
    hand keep their correction)."""
    corrected = set(session.scalars(select(HumanLabel.name).where(
        HumanLabel.message_pk == message_pk, HumanLabel.kind == LabelKind.FIELD,
        HumanLabel.source == LabelSource.DESK)))
    for name, value in sorted((draft.fields or {}).items()):
        if name in corrected or value is None or isinstance(value, dict | list):
            continue
        session.add(HumanLabel(message_pk=message_pk, kind=LabelKind.FIELD, name=name[:100],
                               value=str(value)[:2000], previous=str(value)[:2000],
                               source=LabelSource.CONFIRMED, agent=agent,
                               created_at=utcnow()))


def _retry_later(database: Database, owner: str, job: Job, error: str,
                 report: SendReport, *, not_started: bool = False) -> None:
    """Try the send again later. `not_started`: the SMTP transaction began but the relay
    refused it for now, so the next attempt sends again instead of checking Sent."""
    from mailbot.backoff import backoff_delay

    with database.session() as session:
        if not_started:
            session.execute(update(OutboxEntry).where(OutboxEntry.id == job.id,
                                                      OutboxEntry.claimed_by == owner)
                            .values(result={}))
        # Attempts are counted when claimed; a send that never started is retried a while.
        attempts = job.attempts + 1
        if attempts >= 10:
            _finish_failed(session, job, owner, error, OutboxState.FAILED)
            report.failed += 1
        else:
            fail(session, job, owner, error, retry_in=backoff_delay(attempts - 1, base=5.0,
                                                                    cap=300.0))
            message = session.get(Message, job.message_pk) if job.message_pk else None
            if message is not None:
                message.status_reason = error
                message.updated_at = utcnow()
            report.retrying += 1
    report.errors.append(error)


def _give_up(database: Database, owner: str, job: Job, error: str, report: SendReport,
             state: OutboxState) -> None:
    with database.session() as session:
        _finish_failed(session, job, owner, error, state)
    if state == OutboxState.UNCERTAIN:
        report.uncertain += 1
    else:
        report.failed += 1
    report.errors.append(error)


def _finish_failed(session: Session, job: Job, owner: str, error: str,
                   state: OutboxState) -> None:
    fail(session, job, owner, error, retry_in=None, state=state)
    message = session.get(Message, job.message_pk) if job.message_pk is not None else None
    if message is None:
        return
    uncertain = state == OutboxState.UNCERTAIN
    message.status = MessageStatus.SEND_UNCERTAIN if uncertain else MessageStatus.SEND_FAILED
    message.status_reason = error
    message.updated_at = utcnow()
    record_event(session, "send", "uncertain" if uncertain else "failed", message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor=job.payload.get("agent") or "worker",
                 details={"error": error})


def resolve_uncertain(session: Session, message: Message, agent: str, *, was_sent: bool
                      ) -> None:
    """A person decided an uncertain send: it went out (finish it) or it did not (allow a
    new send)."""
    entry = session.scalar(select(OutboxEntry).where(OutboxEntry.key == f"send:{message.id}"))
    if entry is None or entry.state not in (OutboxState.UNCERTAIN, OutboxState.FAILED):
        raise SendRefused("there is no failed or uncertain send for this message")
    job = Job(entry.id, entry.kind, entry.key, entry.message_pk, entry.mailbox_id,
              dict(entry.payload or {}), entry.attempts)
    if was_sent:
        entry.state = OutboxState.DONE
        entry.done_at = utcnow()
        entry.result = {"sent": True, "resolved_by": agent}
        _record_sent(session, job, entry.result)
        return
    # Not sent: the row gives way (its key is freed) so the agent can send again.
    entry.key = f"{entry.key}:abandoned:{entry.id}"
    entry.state = OutboxState.FAILED
    entry.last_error = f"{entry.last_error or ''} (resolved by {agent}: not sent)".strip()
    message.status = MessageStatus.NEEDS_HUMAN
    message.status_reason = "the last send did not go out; send again"
    record_event(session, "desk", "send_not_sent", message_pk=message.id,
                 mailbox_id=message.mailbox_id, actor=agent, details={})


def formatted_sender(address: Address) -> str:
    """A From header value for display."""
    return formataddr((address.name, address.email))
