"""human labels and draft outcomes

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 12:40:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "human_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=True),
        sa.Column("value", sa.Text(), nullable=True),
        sa.Column("previous", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_in_training_version", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_human_labels_message_pk_messages")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_human_labels")),
    )
    op.create_index("ix_human_labels_message_pk_kind", "human_labels", ["message_pk", "kind"])
    op.create_index("ix_human_labels_created_at", "human_labels", ["created_at"])
    op.create_table(
        "draft_outcomes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("draft_id", sa.Integer(), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("reason", sa.String(length=32), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("edit_distance", sa.Float(), nullable=True),
        sa.Column("proposed_text", sa.Text(), nullable=True),
        sa.Column("sent_text", sa.Text(), nullable=True),
        sa.Column("sent_message_id", sa.String(length=998), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=True),
        sa.Column("template", sa.String(length=400), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=True),
        sa.Column("model_version", sa.String(length=200), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_draft_outcomes_message_pk_messages")),
        sa.ForeignKeyConstraint(["draft_id"], ["drafts.id"], ondelete="SET NULL",
                                name=op.f("fk_draft_outcomes_draft_id_drafts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_draft_outcomes")),
    )
    op.create_index("ix_draft_outcomes_message_pk", "draft_outcomes", ["message_pk"])
    op.create_index("ix_draft_outcomes_created_at", "draft_outcomes", ["created_at"])


def downgrade() -> None:
    op.drop_table("draft_outcomes")
    op.drop_table("human_labels")
