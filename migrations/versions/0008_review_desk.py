"""review desk: users and claims

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 13:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "web_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("password_hash", sa.String(length=400), nullable=False),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("mailboxes", sa.String(length=4000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_login_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_web_users")),
        sa.UniqueConstraint("name", name=op.f("uq_web_users_name")),
    )
    op.create_table(
        "review_claims",
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("agent", sa.String(length=200), nullable=False),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_review_claims_message_pk_messages")),
        sa.PrimaryKeyConstraint("message_pk", name=op.f("pk_review_claims")),
    )
    op.create_table(
        "review_index",
        sa.Column("message_pk", sa.Integer(), nullable=False),
        sa.Column("intent", sa.String(length=100), nullable=True),
        sa.Column("priority", sa.String(length=32), nullable=True),
        sa.Column("language", sa.String(length=16), nullable=True),
        sa.Column("route_reason", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(["message_pk"], ["messages.id"], ondelete="CASCADE",
                                name=op.f("fk_review_index_message_pk_messages")),
        sa.PrimaryKeyConstraint("message_pk", name=op.f("pk_review_index")),
    )
    # The queue lists messages by status, oldest first.
    op.create_index("ix_messages_status_fetched_at", "messages", ["status", "fetched_at"])


def downgrade() -> None:
    op.drop_index("ix_messages_status_fetched_at", table_name="messages")
    op.drop_table("review_index")
    op.drop_table("review_claims")
    op.drop_table("web_users")
