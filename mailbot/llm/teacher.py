"""Teacher labels: the cloud LLM's answers on escalated mail, kept to train the small model.

One row per (message, kind); processing a message again replaces its row rather than adding
a second. `export_teacher_labels` writes the `text,label` CSV that `mailbot train intent
--data` reads.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mailbot.db.base import utcnow
from mailbot.db.llm_records import TeacherLabel
from mailbot.llm.client import LLMClassification, LLMResult

# Kinds with one label per message, exportable as `text,label`.
LABEL_KINDS = ("intent", "priority", "sentiment", "language")
KINDS = (*LABEL_KINDS, "fields", "reply")


def teacher_text(subject: str | None, body: str | None) -> str:
    """The text a label belongs to, in the form the classifier trains on and classifies
    (`mailbot.classify.classifier.message_text`: the subject, a blank line, the body)."""
    return "\n\n".join(part.strip() for part in (subject, body) if part and part.strip())


def save_teacher_label(
    session: Session,
    message_pk: int,
    kind: str,
    *,
    input_text: str,
    model: str,
    label: str | None = None,
    value: dict[str, Any] | None = None,
    confidence: float | None = None,
) -> TeacherLabel:
    """Insert or replace the teacher label of one kind for one message."""
    if kind not in KINDS:
        raise ValueError(f"unknown teacher label kind {kind!r}; expected one of {KINDS}")
    row = session.scalar(
        select(TeacherLabel).where(TeacherLabel.message_pk == message_pk,
                                   TeacherLabel.kind == kind)
    )
    if row is None:
        row = TeacherLabel(message_pk=message_pk, kind=kind)
        session.add(row)
    elif row.label != label or row.value != (value or {}):
        row.used_in_training_version = None  # a changed answer has not been trained on
    row.label = label
    row.value = value or {}
    row.input_text = input_text
    row.model = model
    row.confidence = confidence
    row.created_at = utcnow()
    session.flush()
    return row


def record_teacher_labels(
    session: Session,
    message_pk: int,
    input_text: str,
    *,
    classification: LLMResult[LLMClassification] | None = None,
    fields: LLMResult[dict[str, Any]] | None = None,
    reply: LLMResult[str] | None = None,
) -> list[TeacherLabel]:
    """Keep every answer the cloud LLM gave about one message as teacher labels."""
    rows = []
    if classification is not None:
        answer, model = classification.value, classification.call.response_model
        for kind in LABEL_KINDS:
            label = getattr(answer, kind)
            rows.append(save_teacher_label(
                session, message_pk, kind, input_text=input_text, model=model, label=label,
                value={"label": label}, confidence=answer.confidence,
            ))
    if fields is not None:
        rows.append(save_teacher_label(
            session, message_pk, "fields", input_text=input_text,
            model=fields.call.response_model, value=dict(fields.value),
        ))
    if reply is not None:
        rows.append(save_teacher_label(
            session, message_pk, "reply", input_text=input_text,
            model=reply.call.response_model, value={"text": reply.value},
        ))
    return rows


def teacher_labels(
    session: Session,
    kind: str = "intent",
    *,
    since: datetime | None = None,
    min_confidence: float | None = None,
    unused_only: bool = False,
) -> list[TeacherLabel]:
    """Teacher labels of one kind, oldest first."""
    query = select(TeacherLabel).where(TeacherLabel.kind == kind)
    if since is not None:
        query = query.where(TeacherLabel.created_at >= since)
    if min_confidence is not None:
        query = query.where(TeacherLabel.confidence >= min_confidence)
    if unused_only:
        query = query.where(TeacherLabel.used_in_training_version.is_(None))
    return list(session.scalars(query.order_by(TeacherLabel.created_at, TeacherLabel.id)))


def export_teacher_labels(
    session: Session,
    out: Path | str | TextIO,
    kind: str = "intent",
    *,
    since: datetime | None = None,
    min_confidence: float | None = None,
    unused_only: bool = False,
) -> int:
    """Write labels of one kind as a `text,label` CSV (UTF-8, header row); returns the rows."""
    if kind not in LABEL_KINDS:
        raise ValueError(
            f"only {', '.join(LABEL_KINDS)} labels export as text,label; not {kind!r}"
        )
    rows = teacher_labels(session, kind, since=since, min_confidence=min_confidence,
                          unused_only=unused_only)
    if isinstance(out, (str, Path)):
        with Path(out).open("w", newline="", encoding="utf-8") as handle:
            return _write_csv(handle, rows)
    return _write_csv(out, rows)


def _write_csv(handle: TextIO, rows: Iterable[TeacherLabel]) -> int:
    writer = csv.writer(handle, lineterminator="\n")
    writer.writerow(["text", "label"])
    count = 0
    for row in rows:
        if row.input_text.strip() and row.label:
            writer.writerow([row.input_text, row.label])
            count += 1
    return count


def mark_teacher_labels_used(session: Session, ids: Iterable[int], version: str) -> int:
    """Record that a model version was trained on these labels (first version only)."""
    ids = list(ids)
    if not ids:
        return 0
    result = session.execute(
        update(TeacherLabel)
        .where(TeacherLabel.id.in_(ids), TeacherLabel.used_in_training_version.is_(None))
        .values(used_in_training_version=version)
    )
    return int(getattr(result, "rowcount", 0) or 0)
