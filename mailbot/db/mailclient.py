"""What the mail-client watch remembers between scans (no personal data in either table).

- `folder_scans`: per account, folder and UIDVALIDITY, the highest UID already read, so that
  each scan of the Sent folder reads only what is new. A new UIDVALIDITY starts a new row.
- `drafts_missing`: the delivered drafts not found in the Drafts folder at the last scan, and
  since when; one missing longer than `outcomes.discard_after_hours`, never sent, is
  discarded. A draft seen again (the agent's client moved it back) loses its row.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, UTCDateTime, utcnow


class FolderScan(Base):
    __tablename__ = "folder_scans"
    __table_args__ = (UniqueConstraint("account_id", "folder", "uidvalidity"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(String(1000))
    uidvalidity: Mapped[int] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    scanned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DraftMissing(Base):
    __tablename__ = "drafts_missing"

    draft_id: Mapped[int] = mapped_column(ForeignKey("drafts.id", ondelete="CASCADE"),
                                          primary_key=True)
    missing_since: Mapped[datetime] = mapped_column(UTCDateTime)
