"""Delivery of drafted replies into the mailbox's Drafts folder, exactly once.

Each draft carries a token header. Before appending, the folder is searched for the token,
so a crash between the APPEND and the local record of it never leaves two drafts.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from imapclient import IMAPClient
from sqlalchemy import select

from mailbot.compose.mime import TOKEN_HEADER
from mailbot.db.base import utcnow
from mailbot.db.drafts import DraftRecord
from mailbot.db.models import Message
from mailbot.db.session import Database
from mailbot.failpoints import failpoint
from mailbot.ingest.ledger import record_event

log = logging.getLogger(__name__)

_APPENDUID = re.compile(rb"\[APPENDUID \d+ (\d+)\]", re.IGNORECASE)


def undelivered(database: Database, mailbox_id: int) -> list[tuple[int, str]]:
    """(draft id, token) of this mailbox's drafts not yet in the Drafts folder."""
    with database.session() as session:
        rows = session.execute(
            select(DraftRecord.id, DraftRecord.token)
            .join(Message, Message.id == DraftRecord.message_pk)
            .where(Message.mailbox_id == mailbox_id, DraftRecord.delivered_at.is_(None))
            .order_by(DraftRecord.id)
        ).all()
    return [(row[0], row[1]) for row in rows]


def find_by_token(client: IMAPClient, token: str) -> int | None:
    """The UID of a draft already in the selected folder with this token, if any."""
    found = client.search(["HEADER", TOKEN_HEADER, token])
    return int(found[0]) if found else None


def deliver_drafts(
    client: IMAPClient, database: Database, mailbox_id: int, folder: str
) -> int:
    """APPEND this mailbox's undelivered drafts to `folder` with \\Draft; returns how many.

    Leaves `folder` selected; the caller re-selects what it was working on.
    """
    pending = undelivered(database, mailbox_id)
    if not pending:
        return 0
    if not client.folder_exists(folder):
        client.create_folder(folder)
    client.select_folder(folder)
    delivered = 0
    for draft_id, token in pending:
        uid = find_by_token(client, token)
        appended = uid is None
        if appended:
            with database.session() as session:
                mime = session.scalar(select(DraftRecord.mime).where(DraftRecord.id == draft_id))
            response: Any = client.append(folder, mime, flags=[b"\\Draft"])
            failpoint("draft.after_append")
            match = _APPENDUID.search(response if isinstance(response, bytes) else b"")
            uid = int(match.group(1)) if match else find_by_token(client, token)
        with database.session() as session:
            draft = session.get(DraftRecord, draft_id)
            assert draft is not None
            draft.delivered_at = utcnow()
            draft.drafts_folder = folder
            draft.drafts_uid = uid
            record_event(
                session, "deliver", "ok" if appended else "found", message_pk=draft.message_pk,
                mailbox_id=mailbox_id,
                details={"folder": folder, "uid": uid, "token": token,
                         "note": None if appended else "already in the folder; not appended again"},
            )
        failpoint("draft.after_record")
        delivered += 1
    return delivered
