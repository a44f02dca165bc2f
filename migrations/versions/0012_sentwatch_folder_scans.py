"""mail-client watch: folder scans and drafts missing from the Drafts folder

Revision ID: 0012_sentwatch
Revises: 0011
Create Date: 2026-12-03 10:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012_sentwatch"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "folder_scans",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(length=1000), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("last_uid", sa.BigInteger(), nullable=False),
        sa.Column("scanned_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["account_id"], ["accounts.id"], ondelete="CASCADE",
                                name=op.f("fk_folder_scans_account_id_accounts")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_folder_scans")),
        sa.UniqueConstraint("account_id", "folder", "uidvalidity",
                            name=op.f("uq_folder_scans_account_id_folder_uidvalidity")),
    )
    op.create_table(
        "drafts_missing",
        sa.Column("draft_id", sa.Integer(), nullable=False),
        sa.Column("missing_since", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["draft_id"], ["drafts.id"], ondelete="CASCADE",
                                name=op.f("fk_drafts_missing_draft_id_drafts")),
        sa.PrimaryKeyConstraint("draft_id", name=op.f("pk_drafts_missing")),
    )


def downgrade() -> None:
    op.drop_table("drafts_missing")
    op.drop_table("folder_scans")
