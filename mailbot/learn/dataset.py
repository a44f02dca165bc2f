"""The training set of one head: seed data, labelled CSVs, people's labels and the teacher's.

Every example keeps where it came from. Texts are deduplicated on a normalised form; when
two sources disagree about one text, a person's label wins over a labelled file, a file
over the cloud model (the teacher), and the teacher over the packaged seed; within one
source the newest label wins.

Labels about a message are trained on the text the classifier reads at inference (the
subject and the customer's new text, parsed again from the raw mail in the ledger), not on
the pseudonymised text the teacher saw. A message whose raw mail is gone (retention) or
whose personal data was erased gives no example.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from mailbot.classify.data import LabeledExamples, read_labeled_csv
from mailbot.classify.store import seed_examples
from mailbot.db.llm_records import TeacherLabel
from mailbot.db.models import Message, RawMessage
from mailbot.db.outcomes import HumanLabel

log = logging.getLogger(__name__)

SEED, FILE, TEACHER, HUMAN = "seed", "file", "teacher", "human"
# Higher wins a conflict over the same text.
RANK = {SEED: 0, TEACHER: 1, FILE: 2, HUMAN: 3}
_SPACE = re.compile(r"\s+")


def text_key(text: str) -> str:
    """The identity of a text for deduplication: case-folded, whitespace collapsed, hashed."""
    return hashlib.sha256(_SPACE.sub(" ", text).strip().casefold().encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Example:
    """One labelled text and where it came from."""

    text: str
    label: str
    source: str  # seed, file, teacher or human
    origin: str = ""  # the file, or the label's source ("desk", "confirmed", model name)
    message_pk: int | None = None
    label_id: int | None = None  # the human_labels / teacher_labels row
    labelled_at: datetime | None = None

    @property
    def key(self) -> str:
        return text_key(self.text)

    def describe(self) -> dict[str, object]:
        """What is recorded about the example with the trained version (no text)."""
        return {"source": self.source, "origin": self.origin, "label": self.label,
                "message_pk": self.message_pk, "label_id": self.label_id,
                "text_sha256": self.key}


@dataclass
class TrainingSet:
    """The deduplicated examples of one head, plus the recent labelled mail held back."""

    name: str
    train: list[Example]
    holdout: list[Example] = field(default_factory=list)
    conflicts: int = 0  # texts whose labels disagreed between sources
    duplicates: int = 0  # repeated texts merged
    skipped_erased: int = 0  # labels of messages whose text is no longer kept
    new_labels: int = 0  # human and teacher labels that arrived since the last version

    def examples(self, rows: Sequence[Example] | None = None) -> LabeledExamples:
        rows = self.train if rows is None else rows
        return LabeledExamples(tuple(e.text for e in rows), tuple(e.label for e in rows))

    def sources(self) -> dict[str, int]:
        """Examples by source, for the report and the record."""
        return dict(Counter(e.source for e in self.train))


def message_texts(session: Session, message_pks: Iterable[int]) -> dict[int, str]:
    """The text the classifier reads for each message still holding its raw mail."""
    from mailbot.parse.mime import parse_message

    wanted = sorted(set(message_pks))
    texts: dict[int, str] = {}
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(Message.id, RawMessage.raw)
            .join(RawMessage, RawMessage.message_pk == Message.id)
            .where(Message.id.in_(chunk), Message.erased_at.is_(None))
        )
        for pk, raw in rows:
            try:
                text = parse_message(raw).customer_text
            except Exception as exc:  # noqa: BLE001 - one unparsable message gives no example
                log.warning("message %s cannot be parsed again for training: %s", pk, exc)
                continue
            if text.strip():
                texts[pk] = text
    return texts


def human_examples(session: Session, kind: str) -> tuple[list[Example], int, int]:
    """People's labels of one kind as examples; (examples, skipped for erasure, unused)."""
    rows = list(session.scalars(
        select(HumanLabel).where(HumanLabel.kind == kind, HumanLabel.value.is_not(None))
        .order_by(HumanLabel.created_at, HumanLabel.id)
    ))
    return _message_examples(session, [
        (row.id, row.message_pk, row.value or "", row.source, row.created_at,
         row.used_in_training_version is None) for row in rows if (row.value or "").strip()
    ], HUMAN)


def teacher_examples(
    session: Session, kind: str, min_confidence: float = 0.0
) -> tuple[list[Example], int, int]:
    """The cloud model's labels of one kind as examples; (examples, skipped, unused)."""
    query = select(TeacherLabel).where(TeacherLabel.kind == kind, TeacherLabel.label.is_not(None))
    if min_confidence > 0:
        query = query.where(TeacherLabel.confidence >= min_confidence)
    rows = list(session.scalars(query.order_by(TeacherLabel.created_at, TeacherLabel.id)))
    return _message_examples(session, [
        (row.id, row.message_pk, row.label or "", row.model, row.created_at,
         row.used_in_training_version is None) for row in rows
    ], TEACHER)


def _message_examples(
    session: Session,
    rows: list[tuple[int, int, str, str, datetime, bool]],
    source: str,
) -> tuple[list[Example], int, int]:
    texts = message_texts(session, (row[1] for row in rows))
    examples: list[Example] = []
    skipped = unused = 0
    for label_id, pk, label, origin, at, is_new in rows:
        text = texts.get(pk)
        if text is None:
            skipped += 1
            continue
        unused += is_new
        examples.append(Example(text, label.strip(), source, origin, pk, label_id, at))
    return examples, skipped, unused


def file_examples(paths: Sequence[str | Path], base: Path) -> list[Example]:
    """Examples from the deployment's labelled CSVs (relative paths from the config's folder)."""
    examples: list[Example] = []
    for path in paths:
        resolved = (base / Path(path).expanduser()).resolve()
        found = read_labeled_csv(resolved, "text", "label")
        examples.extend(Example(t, lab, FILE, str(resolved))
                        for t, lab in zip(found.texts, found.labels, strict=True))
    return examples


def merge(groups: Iterable[Sequence[Example]]) -> tuple[list[Example], int, int]:
    """Deduplicate on the text: the higher source wins, then the newer label; (kept,
    conflicts, duplicates merged). The order kept is first appearance."""
    kept: dict[str, Example] = {}
    labels_seen: dict[str, set[str]] = {}
    duplicates = 0
    for group in groups:
        for example in group:
            key = example.key
            labels_seen.setdefault(key, set()).add(example.label)
            current = kept.get(key)
            if current is None:
                kept[key] = example
                continue
            duplicates += 1
            if _outranks(example, current):
                kept[key] = example
    conflicts = sum(1 for labels in labels_seen.values() if len(labels) > 1)
    return list(kept.values()), conflicts, duplicates


def _outranks(new: Example, old: Example) -> bool:
    if RANK[new.source] != RANK[old.source]:
        return RANK[new.source] > RANK[old.source]
    if new.labelled_at and old.labelled_at:
        return new.labelled_at >= old.labelled_at
    return True  # later in the file or the list: the newer word


def hold_back(
    examples: list[Example], share: float, low: int, high: int
) -> tuple[list[Example], list[Example]]:
    """Split off the most recent labelled mail (human or teacher) as the comparison slice;
    (train, holdout). Too little labelled mail (fewer than `low`): nothing is held back."""
    labelled = sorted(
        (i for i, e in enumerate(examples) if e.message_pk is not None and e.labelled_at),
        key=lambda i: (examples[i].labelled_at, examples[i].label_id or 0),
    )
    size = min(high, max(low, round(share * len(labelled))))
    if len(labelled) < low or size >= len(labelled):
        return examples, []
    held = set(labelled[-size:])
    return ([e for i, e in enumerate(examples) if i not in held],
            [e for i, e in enumerate(examples) if i in held])


def drop_thin_labels(examples: list[Example], minimum: int = 2) -> tuple[list[Example], list[str]]:
    """Leave out labels with fewer than `minimum` examples (training needs two per label)."""
    counts = Counter(e.label for e in examples)
    thin = sorted(label for label, n in counts.items() if n < minimum)
    return [e for e in examples if counts[e.label] >= minimum], thin


def build_training_set(
    session: Session,
    name: str,
    *,
    files: Sequence[str | Path] = (),
    base: Path = Path(),
    packaged_seed: bool = True,
    min_teacher_confidence: float = 0.0,
    holdout: tuple[float, int, int] = (0.2, 20, 1000),
) -> TrainingSet:
    """Everything one head can learn from, deduplicated, with the recent slice held back."""
    seed = list(_seed(name)) if packaged_seed else []
    from_files = file_examples(files, base)
    teacher, skipped_teacher, new_teacher = teacher_examples(session, name,
                                                             min_teacher_confidence)
    human, skipped_human, new_human = human_examples(session, name)
    merged, conflicts, duplicates = merge([seed, from_files, teacher, human])
    train, held = hold_back(merged, *holdout)
    return TrainingSet(name, train, held, conflicts=conflicts, duplicates=duplicates,
                       skipped_erased=skipped_teacher + skipped_human,
                       new_labels=new_teacher + new_human)


def _seed(name: str) -> Iterable[Example]:
    found = seed_examples(name)
    for text, label in zip(found.texts, found.labels, strict=True):
        yield Example(text, label, SEED, "packaged")
