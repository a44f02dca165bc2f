"""The ledger and audit database (SQLAlchemy 2.0; Alembic migrations in migrations/)."""

from mailbot.db.artifacts import Artifact
from mailbot.db.base import Base
from mailbot.db.drafts import DraftRecord
from mailbot.db.kb_models import KBDocument, KBPassage  # noqa: F401  (registers the tables)
from mailbot.db.llm_records import TeacherLabel  # noqa: F401  (registers the table)
from mailbot.db.models import Account, Event, Mailbox, Message, MessageStatus, RawMessage
from mailbot.db.session import Database

__all__ = [
    "Account",
    "Artifact",
    "Base",
    "Database",
    "DraftRecord",
    "Event",
    "Mailbox",
    "Message",
    "MessageStatus",
    "RawMessage",
]
