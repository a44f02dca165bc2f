"""The ledger and audit database (SQLAlchemy 2.0; Alembic migrations in migrations/)."""

from mailbot.db.artifacts import Artifact
from mailbot.db.base import Base
from mailbot.db.drafts import DraftRecord
from mailbot.db.kb_models import KBDocument, KBPassage  # noqa: F401  (registers the tables)
from mailbot.db.llm_records import BudgetLock, LLMRequest, TeacherLabel
from mailbot.db.mailclient import DraftMissing, FolderScan
from mailbot.db.models import (
    Account,
    Event,
    Mailbox,
    Message,
    MessageFacts,
    MessageStatus,
    RawMessage,
)
from mailbot.db.outbox import OutboxEntry, OutboxKind, OutboxState
from mailbot.db.outcomes import DraftOutcome, HumanLabel
from mailbot.db.reporting import CostPrices, MessageStats
from mailbot.db.session import Database
from mailbot.db.web import ReviewClaim, ReviewIndex, WebUser

__all__ = [
    "Account",
    "Artifact",
    "Base",
    "BudgetLock",
    "CostPrices",
    "Database",
    "DraftOutcome",
    "DraftMissing",
    "DraftRecord",
    "Event",
    "FolderScan",
    "HumanLabel",
    "LLMRequest",
    "Mailbox",
    "Message",
    "MessageFacts",
    "MessageStats",
    "MessageStatus",
    "OutboxEntry",
    "OutboxKind",
    "OutboxState",
    "RawMessage",
    "ReviewClaim",
    "ReviewIndex",
    "TeacherLabel",
    "WebUser",
]
