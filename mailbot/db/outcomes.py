"""What people did with mailbot's work: their corrections and what became of each draft.

- `human_labels`: a person's correction of the intent, priority, sentiment, language or a
  field value of one message (in the review desk, or implied by a draft sent unchanged).
  Human labels outrank the cloud LLM's teacher labels when the small model is retrained.
- `draft_outcomes`: what became of a draft: sent unchanged, sent edited (with the normalised
  edit distance between the draft as proposed and the text as sent), rejected with a reason,
  discarded, or handled elsewhere; recorded by the review desk or found in the account's
  Sent and Drafts folders for teams that work in their mail client.

Label values of kind "field" and the texts of an outcome are personal data: retention and
erasure clear them (the rows stay, so the figures keep their shape).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Float, ForeignKey, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, SafeString, SafeText, UTCDateTime, utcnow


class LabelKind(StrEnum):
    INTENT = "intent"
    PRIORITY = "priority"
    SENTIMENT = "sentiment"
    LANGUAGE = "language"
    FIELD = "field"  # `name` says which field


class LabelSource(StrEnum):
    DESK = "desk"  # corrected by hand in the review desk
    CONFIRMED = "confirmed"  # the draft was sent unchanged: its labels stand as they were
    IMPORT = "import"  # loaded from a labelled file


class Outcome(StrEnum):
    SENT_UNCHANGED = "sent_unchanged"
    SENT_EDITED = "sent_edited"
    REJECTED = "rejected"
    DISCARDED = "discarded"  # the draft was deleted without a reply
    HANDLED_ELSEWHERE = "handled_elsewhere"  # answered outside mailbot, or no answer needed


class OutcomeSource(StrEnum):
    DESK = "desk"
    MAIL_CLIENT = "mail_client"  # found in the Sent / Drafts folders


class RejectReason(StrEnum):
    WRONG_INTENT = "wrong_intent"
    WRONG_FACTS = "wrong_facts"
    WRONG_TONE = "wrong_tone"
    SHOULD_NOT_ANSWER = "should_not_answer"
    OTHER = "other"


class HumanLabel(Base):
    __tablename__ = "human_labels"
    __table_args__ = (
        Index("ix_human_labels_message_pk_kind", "message_pk", "kind"),
        Index("ix_human_labels_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    # The field's name for kind "field" ("order_id", ...); None otherwise.
    name: Mapped[str | None] = mapped_column(String(100))
    # The label ("refund_request", "high", ...) or the field's value as corrected.
    value: Mapped[str | None] = mapped_column(SafeText)
    # What the model had said, for the corrections report (None when it said nothing).
    previous: Mapped[str | None] = mapped_column(SafeText)
    source: Mapped[str] = mapped_column(String(32), default=LabelSource.DESK)
    agent: Mapped[str | None] = mapped_column(SafeString(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The version of the small model first trained with this label; None = not used yet.
    used_in_training_version: Mapped[str | None] = mapped_column(String(64))


class DraftOutcome(Base):
    __tablename__ = "draft_outcomes"
    __table_args__ = (
        Index("ix_draft_outcomes_message_pk", "message_pk"),
        Index("ix_draft_outcomes_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    message_pk: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    draft_id: Mapped[int | None] = mapped_column(ForeignKey("drafts.id", ondelete="SET NULL"))
    outcome: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(String(32))  # RejectReason for "rejected"
    note: Mapped[str | None] = mapped_column(SafeText)
    # 0.0 = sent as drafted, 1.0 = nothing of the draft kept (normalised Levenshtein).
    edit_distance: Mapped[float | None] = mapped_column(Float)
    proposed_text: Mapped[str | None] = mapped_column(SafeText)
    sent_text: Mapped[str | None] = mapped_column(SafeText)
    sent_message_id: Mapped[str | None] = mapped_column(SafeString(998))
    source: Mapped[str] = mapped_column(String(32), default=OutcomeSource.DESK)
    agent: Mapped[str | None] = mapped_column(SafeString(200))
    # Copied from the draft, so the figures by template and model survive its erasure.
    template: Mapped[str | None] = mapped_column(String(400))
    model: Mapped[str | None] = mapped_column(String(200))
    model_version: Mapped[str | None] = mapped_column(String(200))
    language: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
