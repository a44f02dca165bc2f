"""One poller per mailbox: a lease in the database, renewed while it works, fencing commits.

A worker takes a mailbox's lease with one conditional UPDATE; every take-over raises the
mailbox's `lease_epoch`, the fencing token. While the poll works a `LeaseKeeper` renews the
lease; each commit of fetched mail checks that the lease is still this worker's with this
epoch (`fence`), so a worker that lost it (a long pause, a network split) cannot commit
after another one took over.

Worker identities are unique per process (a random part), and name the host and the
process, so that a lease whose holder died on this same machine is taken over at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any

from sqlalchemy import CursorResult, case, or_, select, update
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.models import Mailbox
from mailbot.db.session import Database
from mailbot.errors import LeaseLost, MailbotError

log = logging.getLogger(__name__)


@cache
def _machine() -> str:
    """This machine and process namespace: containers sharing a host name differ here."""
    parts = []
    with contextlib.suppress(OSError), open("/proc/sys/kernel/random/boot_id",
                                           encoding="ascii") as handle:
        parts.append(handle.read().strip()[:8])
    with contextlib.suppress(OSError):
        parts.append(os.readlink("/proc/self/ns/pid").strip("pid:[]"))
    return "-".join(parts) or "unknown"


def worker_identity() -> str:
    """A new, unique name for this worker process: host, pid, namespace and a random part."""
    return f"{socket.gethostname()}:{os.getpid()}:{_machine()}:{uuid.uuid4().hex[:12]}"


def holder_is_dead(owner: str) -> bool:
    """Whether `owner` was a process on this machine (same namespace) that no longer runs."""
    parts = owner.split(":")
    if len(parts) != 4:
        return False
    host, pid, machine, _ = parts
    if host != socket.gethostname() or machine != _machine() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return False  # this process: alive, whatever its other workers hold
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True, slots=True)
class Lease:
    """A mailbox lease this worker holds, with its fencing token."""

    mailbox_id: int
    owner: str
    epoch: int


def acquire(session: Session, mailbox_id: int, owner: str, seconds: float) -> Lease | None:
    """Take the mailbox's lease (or renew our own); None while another live worker has it."""
    now = utcnow()
    values = {
        "lease_owner": owner,
        "lease_expires_at": now + timedelta(seconds=seconds),
        "lease_epoch": case((Mailbox.lease_owner == owner, Mailbox.lease_epoch),
                            else_=Mailbox.lease_epoch + 1),
    }
    free = or_(Mailbox.lease_owner.is_(None), Mailbox.lease_owner == owner,
               Mailbox.lease_expires_at < now)
    taken: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Mailbox).where(Mailbox.id == mailbox_id, free).values(**values)
    )
    if taken.rowcount != 1:
        holder = session.scalar(select(Mailbox.lease_owner).where(Mailbox.id == mailbox_id))
        if not holder or not holder_is_dead(holder):
            return None
        log.info("the holder of mailbox %s's lease (%s) died; taking it over", mailbox_id, holder)
        taken = session.execute(  # type: ignore[assignment]
            update(Mailbox).where(Mailbox.id == mailbox_id, Mailbox.lease_owner == holder)
            .values(**values)
        )
        if taken.rowcount != 1:
            return None
    epoch = session.scalar(select(Mailbox.lease_epoch).where(Mailbox.id == mailbox_id))
    return Lease(mailbox_id, owner, int(epoch or 0))


def renew(session: Session, lease: Lease, seconds: float) -> bool:
    """Extend the lease; False when it is no longer ours (another worker took over)."""
    renewed: CursorResult[Any] = session.execute(  # type: ignore[assignment]
        update(Mailbox)
        .where(Mailbox.id == lease.mailbox_id, Mailbox.lease_owner == lease.owner,
               Mailbox.lease_epoch == lease.epoch)
        .values(lease_expires_at=utcnow() + timedelta(seconds=seconds))
    )
    return renewed.rowcount == 1


def fence(session: Session, lease: Lease, seconds: float) -> None:
    """Inside a commit of this mailbox's work: refuse it unless the lease is still ours."""
    if not renew(session, lease, seconds):
        raise LeaseLost(f"mailbox {lease.mailbox_id}: another worker took over the lease; "
                        "this worker's uncommitted work is dropped (it will be redone)")


def release(session: Session, lease: Lease) -> None:
    """Give the lease up (only if it is still ours)."""
    session.execute(
        update(Mailbox)
        .where(Mailbox.id == lease.mailbox_id, Mailbox.lease_owner == lease.owner,
               Mailbox.lease_epoch == lease.epoch)
        .values(lease_owner=None, lease_expires_at=None)
    )


def holder(session: Session, mailbox_id: int) -> tuple[str | None, Any]:
    """Who holds the mailbox's lease, and until when."""
    row = session.execute(
        select(Mailbox.lease_owner, Mailbox.lease_expires_at).where(Mailbox.id == mailbox_id)
    ).one()
    return row[0], row[1]


class LeaseKeeper(threading.Thread):
    """Renews a lease every third of its length while a poll works; `lost` is set (and the
    poll stops at its next step) when the lease was taken over."""

    def __init__(self, database: Database, lease: Lease, seconds: float) -> None:
        super().__init__(name=f"lease-{lease.mailbox_id}", daemon=True)
        self.database = database
        self.lease = lease
        self.seconds = seconds
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.seconds / 3):
            try:
                with self.database.session() as session:
                    still_ours = renew(session, self.lease, self.seconds)
            except MailbotError as exc:  # the database is briefly away: try again soon
                log.warning("could not renew the lease of mailbox %s: %s",
                            self.lease.mailbox_id, exc)
                continue
            if not still_ours:
                log.warning("mailbox %s: the lease was taken over by another worker",
                            self.lease.mailbox_id)
                self.lost.set()
                return

    def check(self) -> None:
        """Raise `LeaseLost` when the lease was taken over."""
        if self.lost.is_set():
            raise LeaseLost(f"mailbox {self.lease.mailbox_id}: another worker took over the "
                            "lease; stopping this poll")

    def stop(self) -> None:
        self._done.set()
