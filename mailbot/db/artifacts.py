"""Trained artefacts (classification heads and the like), versioned and recorded.

Each row points at a directory under the models path that holds one version. `promoted`
marks a version the worker may serve; the newest promoted version of a (kind, name) wins,
so demoting it rolls back to the one before.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from mailbot.db.base import Base, JSONType, UTCDateTime, utcnow


class Artifact(Base):
    """One version of a trained artefact, e.g. kind "head", name "intent"."""

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("kind", "name", "version"),
        Index("ix_artifacts_kind_name_promoted", "kind", "name", "promoted"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(64))
    # Relative to the models path when it lies inside it, so the data directory can move.
    path: Mapped[str] = mapped_column(Text)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted: Mapped[bool] = mapped_column(Boolean, default=False)
