"""The drainer: performs one mailbox's outbox rows over the poll's IMAP connection.

Rows are claimed first (another drainer skips them), performed, and recorded one by one. A
failed row is retried with backoff up to `worker.max_attempts` times, then given up with
its reason (`mailbot status` shows it); it never blocks the rows after it.
"""

from __future__ import annotations

import imaplib
import logging
import socket
import ssl
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientAbortError, IMAPClientError
from sqlalchemy import select

from mailbot.audit.events import record_event
from mailbot.backoff import backoff_delay
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Mailbox, Message
from mailbot.db.outbox import OutboxEntry, OutboxKind, OutboxState
from mailbot.db.session import Database
from mailbot.failpoints import failpoint
from mailbot.outbox import actions
from mailbot.outbox.drafts import append_draft, drafts_folder, remove_drafts
from mailbot.outbox.queue import Job, claim, complete, fail, has_due, release

log = logging.getLogger(__name__)

# Lost connections are the poll's to retry: the claimed rows are resumed, server checked.
CONNECTION_ERRORS = (OSError, socket.timeout, imaplib.IMAP4.abort, IMAPClientAbortError,
                     ssl.SSLError)


@dataclass(frozen=True, slots=True)
class DrainSettings:
    """How often a row is tried, and how long a claim holds."""

    max_attempts: int = 3
    claim_seconds: float = 300.0
    retry_base_seconds: float = 2.0
    retry_max_seconds: float = 300.0


@dataclass
class DrainReport:
    """What one drain did."""

    drafts: int = 0
    withdrawn: int = 0
    flagged: int = 0
    moved: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def withdraw_draft(database: Database, owner: str, client: IMAPClient, job: Job,
                   folder: str) -> int:
    """Remove a withdrawn draft from `folder` and record it (the worker's drainer and the
    desk right after a reject both do it this way); how many copies were removed."""
    removed = remove_drafts(client, folder, job.payload["token"])
    with database.session() as session:
        if complete(session, job, owner, {"folder": folder, "removed": removed}):
            record_event(session, "deliver", "withdrawn", message_pk=job.message_pk,
                         mailbox_id=job.mailbox_id,
                         details={"folder": folder, "token": job.payload["token"],
                                  "removed": removed})
    return removed


class OutboxDrainer:
    """Performs the drafts, flags and moves of one mailbox."""

    KINDS = (OutboxKind.APPEND_DRAFT, OutboxKind.REMOVE_DRAFT, OutboxKind.FLAG, OutboxKind.MOVE)
    # What a worker that does not hold the mailbox's lease may perform: drafts go to their
    # own folder by token, whatever UIDs the synced folder has. Flags and moves name UIDs
    # and stay with the lease holder, which knows the folder's current UIDVALIDITY.
    DRAFT_KINDS = (OutboxKind.APPEND_DRAFT, OutboxKind.REMOVE_DRAFT)

    def __init__(self, database: Database, mailbox_id: int, folder: str, owner: str,
                 settings: DrainSettings | None = None, *, drafts_folder: str = "") -> None:
        self.database = database
        self.mailbox_id = mailbox_id
        self.folder = folder
        self.owner = owner
        self.settings = settings or DrainSettings()
        self.configured_drafts = drafts_folder
        self._drafts_folder: str | None = None

    def has_due(self, kinds: Sequence[str] = DRAFT_KINDS) -> bool:
        """Whether rows of these kinds wait (a helper connects only then)."""
        with self.database.session() as session:
            return has_due(session, mailbox_id=self.mailbox_id, kinds=kinds)

    def drain(self, client: IMAPClient, kinds: Sequence[str] | None = None) -> DrainReport:
        """Perform every due row (of `kinds`, by default all); leaves the synced folder
        selected when it performed flags or moves, or drafts."""
        report = DrainReport()
        known: set[str] = set()  # folders seen to exist, asked again each drain
        with self.database.session() as session:
            jobs = claim(session, self.owner, mailbox_id=self.mailbox_id,
                         kinds=kinds or self.KINDS, limit=1000,
                         seconds=self.settings.claim_seconds)
        if not jobs:
            return report
        drafts = [j for j in jobs if j.kind == OutboxKind.APPEND_DRAFT]
        # After the appends: a draft withdrawn in the same drain is appended first, then gone.
        removals = [j for j in jobs if j.kind == OutboxKind.REMOVE_DRAFT]
        others = [j for j in jobs if j.kind not in (OutboxKind.APPEND_DRAFT,
                                                     OutboxKind.REMOVE_DRAFT)]
        try:
            for job in drafts:
                self._attempt(job, report,
                              lambda j=job: self._draft(client, j, report, known))
            for job in removals:
                self._attempt(job, report, lambda j=job: self._withdraw(client, j, report))
            if drafts or removals:
                client.select_folder(self.folder)
            self._server_actions(client, others, report)
        except CONNECTION_ERRORS:
            raise  # the poll reconnects and retries; claimed rows are resumed
        return report

    def _attempt(self, job: Job, report: DrainReport, perform: object) -> None:
        try:
            perform()  # type: ignore[operator]
        except CONNECTION_ERRORS:
            raise
        except (IMAPClientError, ValueError) as exc:
            self._failed([job], f"{type(exc).__name__}: {exc}", report)

    def _failed(self, jobs: Sequence[Job], error: str, report: DrainReport) -> None:
        with self.database.session() as session:
            for job in jobs:
                attempts = job.attempts + 1
                if attempts >= self.settings.max_attempts:
                    fail(session, job, self.owner, error, retry_in=None,
                         state=OutboxState.FAILED)
                    record_event(session, "outbox", "failed", message_pk=job.message_pk,
                                 mailbox_id=self.mailbox_id,
                                 details={"kind": job.kind, "error": error,
                                          "attempts": attempts})
                    report.failed += 1
                else:
                    delay = backoff_delay(attempts - 1, base=self.settings.retry_base_seconds,
                                          cap=self.settings.retry_max_seconds)
                    fail(session, job, self.owner, error, retry_in=delay)
        report.errors.append(error)
        log.warning("mailbox %s: %d outbox row(s) failed: %s", self.mailbox_id, len(jobs), error)

    # --- drafts ------------------------------------------------------------------------------

    def _draft(self, client: IMAPClient, job: Job, report: DrainReport,
               known_folders: set[str]) -> None:
        folder = job.payload.get("folder") or self._drafts(client)
        with self.database.session() as session:
            mime = session.scalar(select(DraftRecord.mime)
                                  .where(DraftRecord.id == job.payload["draft_id"]))
            withdrawn = session.scalar(select(OutboxEntry.id).where(
                OutboxEntry.key == f"undraft:{job.payload['token']}")) is not None
        if not mime or withdrawn:  # erased, or rejected or replaced, before it was delivered
            with self.database.session() as session:
                complete(session, job, self.owner, {
                    "skipped": "the draft was erased" if not mime else "the draft was withdrawn"})
            return
        uid, appended = append_draft(client, folder, job.payload["token"], mime,
                                     tried_before=job.attempts > 0,
                                     known_folders=known_folders)
        with self.database.session() as session:
            if not complete(session, job, self.owner, {"folder": folder, "uid": uid,
                                                       "appended": appended}):
                return  # another drainer took the row over; it records the delivery
            draft = session.get(DraftRecord, job.payload["draft_id"])
            if draft is not None:
                draft.delivered_at = utcnow()
                draft.drafts_folder = folder
                draft.drafts_uid = uid
            record_event(
                session, "deliver", "ok" if appended else "found", message_pk=job.message_pk,
                mailbox_id=self.mailbox_id,
                details={"folder": folder, "uid": uid, "token": job.payload["token"],
                         "note": None if appended else
                         "already in the folder; not appended again"},
            )
        failpoint("draft.after_record")
        report.drafts += 1

    def _withdraw(self, client: IMAPClient, job: Job, report: DrainReport) -> None:
        folder = job.payload.get("folder") or self._drafts(client)
        withdraw_draft(self.database, self.owner, client, job, folder)
        report.withdrawn += 1

    def _drafts(self, client: IMAPClient) -> str:
        if self._drafts_folder is None:
            self._drafts_folder = drafts_folder(client, self.configured_drafts)
        return self._drafts_folder

    # --- flags and moves ---------------------------------------------------------------------

    def _server_actions(self, client: IMAPClient, jobs: Sequence[Job], report: DrainReport
                        ) -> None:
        if not jobs:
            return
        current, stale = self._locate(jobs)
        if stale:
            with self.database.session() as session:
                release(session, stale, self.owner)  # re-matched after the next sync
        groups: dict[tuple[str, str], list[tuple[Job, int, str | None]]] = defaultdict(list)
        for job, uid, message_id in current:
            target = job.payload.get("flag") or job.payload.get("folder") or ""
            groups[(job.kind, target)].append((job, uid, message_id))
        for (kind, target), entries in groups.items():
            group_jobs = [job for job, _, _ in entries]
            uids = [uid for _, uid, _ in entries]
            try:
                if kind == OutboxKind.FLAG:
                    actions.add_flag(client, uids, target)
                    done = uids
                else:
                    ids = {uid: mid for _, uid, mid in entries}
                    done = actions.move(client, self.folder, uids, target, ids)
                    client.select_folder(self.folder)
            except CONNECTION_ERRORS:
                raise
            except (IMAPClientError, ValueError) as exc:
                self._failed(group_jobs, f"{type(exc).__name__}: {exc}", report)
                continue
            with self.database.session() as session:
                for job in group_jobs:
                    complete(session, job, self.owner, {kind: target})
                record_event(session, "server_action", "ok", mailbox_id=self.mailbox_id,
                             details={"action": str(kind), "target": target,
                                      "uids": uids[:1000], "count": len(uids),
                                      "already_done": len(uids) - len(done)})
            if kind == OutboxKind.FLAG:
                report.flagged += len(uids)
            else:
                report.moved += len(uids)

    def _locate(self, jobs: Sequence[Job]
                ) -> tuple[list[tuple[Job, int, str | None]], list[Job]]:
        """Each job's message UID under the folder's current UIDVALIDITY; jobs whose message
        is known only under an old one wait for the re-match."""
        with self.database.session() as session:
            uidvalidity = session.scalar(select(Mailbox.uidvalidity)
                                         .where(Mailbox.id == self.mailbox_id))
            rows = {pk: (uid, validity, mid) for pk, uid, validity, mid in session.execute(
                select(Message.id, Message.uid, Message.uidvalidity, Message.message_id)
                .where(Message.id.in_([j.message_pk for j in jobs if j.message_pk]))
            )}
        current, stale = [], []
        for job in jobs:
            found = rows.get(job.message_pk or 0)
            if found is None or found[1] != uidvalidity:
                stale.append(job)
            else:
                current.append((job, int(found[0]), found[2]))
        return current, stale
