"""teacher labels: the cloud LLM's answers, kept to train the small model

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30 12:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "teacher_labels",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=200), nullable=True),
        sa.Column(
            "value",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("input_text", sa.Text(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=True),
        sa.Column("model", sa.String(length=200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("used_in_training_version", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["message_pk"],
            ["messages.id"],
            name=op.f("fk_teacher_labels_message_pk_messages"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_teacher_labels")),
        sa.UniqueConstraint(
            "message_pk", "kind", name=op.f("uq_teacher_labels_message_pk_kind")
        ),
    )
    with op.batch_alter_table("teacher_labels", schema=None) as batch_op:
        batch_op.create_index(
            "ix_teacher_labels_kind_created_at", ["kind", "created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("teacher_labels", schema=None) as batch_op:
        batch_op.drop_index("ix_teacher_labels_kind_created_at")
    op.drop_table("teacher_labels")
