"""Drafts that will not be sent, out of the Drafts folder at once.

When an agent rejects a draft (or handles the mail elsewhere) the removal is an outbox row
committed with the decision. The desk performs it right away so that the agent's mail client
no longer offers the stale draft; a row it cannot perform (IMAP away) stays due, and the
worker's drainer does it at the mailbox's next poll. Removing by the draft's token header
is safe to repeat.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from typing import TYPE_CHECKING

from imapclient.exceptions import IMAPClientError

from mailbot.backoff import backoff_delay
from mailbot.db.outbox import OutboxKind
from mailbot.errors import MailbotError
from mailbot.outbox.drafts import drafts_folder
from mailbot.outbox.drainer import withdraw_draft
from mailbot.outbox.queue import Job, claim, fail

if TYPE_CHECKING:
    from mailbot.config import Config
    from mailbot.db.session import Database

log = logging.getLogger(__name__)


def withdraw_now(config: Config, database: Database, owner: str, *, limit: int = 50
                 ) -> list[str]:
    """Remove the withdrawn drafts now; the errors (those rows are retried later)."""
    with database.session() as session:
        jobs = claim(session, owner, kinds=[OutboxKind.REMOVE_DRAFT], limit=limit,
                     seconds=config.worker.claim_seconds)
    by_account: dict[str, list[Job]] = defaultdict(list)
    for job in jobs:
        by_account[str(job.payload.get("account") or "")].append(job)
    errors = []
    for name, group in by_account.items():
        try:
            _withdraw_account(config, database, owner, name, group)
        except (MailbotError, IMAPClientError, OSError) as exc:
            error = (f"the draft could not be removed from the Drafts folder yet ({exc}); "
                     "it will be removed at the next poll")
            log.warning("account %s: %s", name, error)
            with database.session() as session:
                for job in group:
                    fail(session, job, owner, str(exc),
                         retry_in=backoff_delay(job.attempts, base=5.0, cap=300.0))
            errors.append(error)
    return errors


def _withdraw_account(config: Config, database: Database, owner: str, name: str,
                      jobs: list[Job]) -> None:
    from mailbot.ingest.imap import connect

    account = config.account(name)
    client = connect(account, account.resolve_password())
    try:
        folder = drafts_folder(client, account.drafts_folder)
        for job in jobs:
            withdraw_draft(database, owner, client, job, job.payload.get("folder") or folder)
    finally:
        with contextlib.suppress(Exception):
            client.logout()
