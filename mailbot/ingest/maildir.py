"""A local source for backfill and demos: a Maildir folder or a set of .eml files.

Local mail goes through the same ledger and pipeline as IMAP mail. It is filed under the
account "local", one mailbox per source folder; files already in the ledger (same SHA-256)
are recognised and not ingested twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import select

from mailbot.db.models import Message
from mailbot.db.session import Database
from mailbot.errors import PermanentError
from mailbot.ingest.imap import header_block, new_message
from mailbot.ingest.ledger import NewMessage, add_messages, get_or_create_mailbox, sha256_hex
from mailbot.pipeline.runner import Pipeline, ProcessedMessage

if TYPE_CHECKING:
    from mailbot.llm.escalate import EscalationRunner

log = logging.getLogger(__name__)

LOCAL_ACCOUNT = "local"


class SourceNotFound(PermanentError):
    """A local path given for ingestion does not exist or holds no mail."""


@dataclass
class LocalReport:
    files: int = 0
    ingested: int = 0
    already_known: int = 0
    processed: int = 0


def is_maildir(path: Path) -> bool:
    return path.is_dir() and (path / "cur").is_dir() and (path / "new").is_dir()


def iter_mail_files(paths: Iterable[Path]) -> Iterator[Path]:
    """The mail files named by `paths`: Maildirs (new/ and cur/), folders of .eml, or files."""
    for path in paths:
        if not path.exists():
            raise SourceNotFound(f"{path}: no such file or folder")
        if is_maildir(path):
            for sub in ("new", "cur"):
                yield from sorted(p for p in (path / sub).iterdir() if p.is_file())
        elif path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() == ".eml")
            if not files:
                raise SourceNotFound(f"{path}: neither a Maildir nor a folder of .eml files")
            yield from files
        else:
            yield path


def ingest_local(
    db: Database,
    paths: Iterable[Path],
    pipeline: Pipeline,
    *,
    escalations: EscalationRunner | None = None,
    mailbox_name: str = "files",
    stop: threading.Event | None = None,
    on_message: Callable[[Path, ProcessedMessage], None] | None = None,
) -> LocalReport:
    """Commit local mail files to the ledger, then run the pipeline over them."""
    report = LocalReport()
    files = list(iter_mail_files(paths))
    report.files = len(files)
    by_pk: dict[int, Path] = {}
    with db.session() as session:
        mailbox = get_or_create_mailbox(session, LOCAL_ACCOUNT, mailbox_name)
        mailbox.uidvalidity = mailbox.uidvalidity or 1
        mailbox_id = mailbox.id
        known = set(session.scalars(select(Message.sha256).where(Message.mailbox_id == mailbox_id)))
        items: list[tuple[Path, NewMessage]] = []
        next_uid = mailbox.last_uid + 1
        for path in files:
            raw = path.read_bytes()
            digest = sha256_hex(raw)
            if digest in known:
                report.already_known += 1
                continue
            known.add(digest)
            mtime = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            items.append((path, new_message(mailbox.uidvalidity, next_uid, raw,
                                            header_block(raw), len(raw), mtime)))
            next_uid += 1
        rows = add_messages(session, mailbox, [item for _, item in items])
        for (path, _), row in zip(items, rows, strict=True):
            by_pk[row.id] = path
    report.ingested = len(items)

    def _note(processed: ProcessedMessage) -> None:
        if on_message and processed.message_pk in by_pk:
            on_message(by_pk[processed.message_pk], processed)

    report.processed = pipeline.process_pending(mailbox_id, stop=stop, on_message=_note)
    if escalations is not None:
        escalations.run(mailbox_id=mailbox_id)
    return report
