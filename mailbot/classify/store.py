"""Where trained heads live: versioned directories under `<models>/heads/<name>/`, each
recorded in the `artifacts` table, plus the packaged seed heads used when none is trained."""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from sqlalchemy import select, update

from mailbot.classify.data import LabeledExamples, read_labeled_csv
from mailbot.classify.head import HEAD_FORMAT, Head
from mailbot.classify.train import (
    DEFAULT_OPTIONS,
    Progress,
    TrainOptions,
    _quiet_progress,
    train_head,
)
from mailbot.db import Artifact, Database
from mailbot.errors import ModelError

log = logging.getLogger(__name__)

HEAD_KIND = "head"
HEAD_NAMES = ("intent", "priority", "sentiment")
SEED_FILES = {"intent": "seed.csv", "priority": "priority.csv", "sentiment": "sentiment.csv"}
PREPARE_HINT = "build it with `mailbot model prepare` (add --encoder NAME for another encoder)"


class SeedHeadsMissing(ModelError):
    """A packaged seed head has not been built for this encoder (`mailbot model prepare`)."""


class TextEncoder(Protocol):
    """What heads need from the engine's `Encoder`."""

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> str: ...

    def embed(self, texts: Sequence[str]) -> Any: ...


@dataclass(frozen=True, slots=True)
class HeadRecord:
    """One recorded version of a head."""

    id: int
    name: str
    version: str
    path: Path
    promoted: bool
    created_at: datetime
    metrics: dict[str, Any]

    @property
    def encoder(self) -> str:
        """The encoder whose embeddings the head was trained on ("" if not recorded)."""
        return str(self.metrics.get("encoder") or "")

    @property
    def encoder_version(self) -> str:
        """That encoder's version, a hash of its weights ("" if not recorded)."""
        return str(self.metrics.get("encoder_version") or "")


def encoder_mismatch(name: str, record: HeadRecord, encoder: TextEncoder) -> ModelError:
    """The error for a promoted head that only exists for another encoder, saying what to run."""
    source = str(record.metrics.get("source") or "") or "FILE.csv"
    return ModelError(
        f"the promoted {name} head (version {record.version}) was trained on the embeddings "
        f"of {record.encoder or 'another encoder'} (version {record.encoder_version}), but "
        f"models.encoder is {encoder.name} (version {encoder.version}), and a head only "
        f"works with the encoder it was trained on. Train one for this encoder: "
        f"`mailbot train {name} --data {source}`, or set models.encoder back to "
        f"{record.encoder or 'the encoder it was trained on'}"
    )


def seed_examples(name: str, languages: Sequence[str] = ()) -> LabeledExamples:
    """The packaged seed training set of a head (mailbot/data/intents/), optionally only
    the rows in some languages (ISO 639-1 codes of the `language` column)."""
    ref = resources.files("mailbot") / "data" / "intents" / SEED_FILES[name]
    with resources.as_file(ref) as path:
        examples = read_labeled_csv(path, "text", "label")
        if not languages:
            return examples
        with path.open(newline="", encoding="utf-8") as handle:
            keep = [row.get("language") in languages for row in csv.DictReader(handle)
                    if (row.get("text") or "").strip() and (row.get("label") or "").strip()]
    rows = [(t, label) for t, label, k in zip(examples.texts, examples.labels, keep, strict=True)
            if k]
    return LabeledExamples(tuple(t for t, _ in rows), tuple(lb for _, lb in rows),
                           f"{examples.source} ({', '.join(languages)})")


def label_phrase(label: str) -> str:
    """A label as words ("order_status" -> "order status"), for label-name examples."""
    return label.replace("_", " ").replace("-", " ").strip()


def embed_texts(
    encoder: TextEncoder, texts: Sequence[str], progress: Progress, what: str
) -> np.ndarray:
    """Embed in chunks, reporting progress; returns float32 (n, dim)."""
    chunk = 512
    parts = []
    for start in range(0, len(texts), chunk):
        parts.append(np.asarray(encoder.embed(texts[start : start + chunk]).vectors, np.float32))
        progress(f"embedding {what}: {min(start + chunk, len(texts))}/{len(texts)}")
    return np.vstack(parts) if parts else np.zeros((0, 0), np.float32)


def train_from_examples(
    name: str,
    examples: LabeledExamples,
    encoder: TextEncoder,
    *,
    options: TrainOptions = DEFAULT_OPTIONS,
    progress: Progress = _quiet_progress,
    vectors: np.ndarray | None = None,
    calibration_rows: np.ndarray | None = None,
) -> Head:
    """Embed the examples (unless given) and train a head; intent heads also learn label names."""
    if vectors is None:
        vectors = embed_texts(encoder, examples.texts, progress, f"{len(examples)} examples")
    label_vectors = None
    if name == "intent":
        labels = sorted(set(examples.labels))
        embedded = encoder.embed([label_phrase(label) for label in labels]).vectors
        label_vectors = {label: np.asarray(v) for label, v in zip(labels, embedded, strict=True)}
    head = train_head(
        name,
        examples.texts,
        examples.labels,
        vectors,
        label_vectors=label_vectors,
        options=options,
        progress=progress,
        calibration_rows=calibration_rows,
    )
    head.encoder, head.encoder_version = encoder.name, encoder.version
    return head


class HeadStore:
    """Saves, records, lists and finds heads; the database may be None (no versioning)."""

    def __init__(
        self, models_path: Path, database: Database | None, seed_languages: Sequence[str] = ()
    ) -> None:
        """`seed_languages`: train the seed heads on the seed rows in these languages only
        (empty: all of them), as `bench/languages.py` does to measure cross-lingual transfer."""
        self.models_path = Path(models_path)
        self.database = database
        self.seed_languages = tuple(seed_languages)

    def heads_dir(self, name: str) -> Path:
        return self.models_path / "heads" / name

    def save(self, head: Head, *, promote: bool, source: str = "") -> HeadRecord:
        """Write a new version of `head` and record it; `promote` lets the worker serve it."""
        if self.database is None:
            raise ModelError("saving a trained head needs the database (database.url)")
        now = datetime.now(UTC)
        head.version = f"{now:%Y%m%dT%H%M%S}-{secrets.token_hex(3)}"
        directory = self.heads_dir(head.name) / head.version
        _write_atomically(head, directory)
        metrics = dict(
            head.metrics or {},
            source=source,
            encoder=head.encoder,
            encoder_version=head.encoder_version,
            labels_list=list(head.labels),
        )
        with self.database.session() as session:
            row = Artifact(
                kind=HEAD_KIND,
                name=head.name,
                version=head.version,
                path=self._relative(directory),
                metrics=metrics,
                created_at=now,
                promoted=promote,
            )
            session.add(row)
            session.flush()
            return self._record(row)

    def newest_promoted(
        self, name: str, encoder_version: str | None = None
    ) -> HeadRecord | None:
        """The version the worker should serve, or None (then the seed head is used).

        With `encoder_version`, only heads trained on that encoder's embeddings count (and
        heads recorded before the encoder was noted): a head is meaningless on another
        encoder's vectors, so each encoder keeps its own promoted heads.
        """
        for record in self._promoted(name):
            if encoder_version is None or record.encoder_version in ("", encoder_version):
                return record
        return None

    def promoted_for_other_encoders(self, name: str, encoder_version: str) -> list[HeadRecord]:
        """Promoted heads of this name trained on another encoder's embeddings, newest first."""
        return [r for r in self._promoted(name) if r.encoder_version not in ("", encoder_version)]

    def _promoted(self, name: str) -> list[HeadRecord]:
        if self.database is None:
            return []
        with self.database.session() as session:
            rows = session.scalars(
                select(Artifact)
                .where(Artifact.kind == HEAD_KIND, Artifact.name == name, Artifact.promoted)
                .order_by(Artifact.id.desc())
            ).all()
            return [self._record(row) for row in rows]

    def versions(self, name: str | None = None) -> list[HeadRecord]:
        """Every recorded version, oldest first."""
        if self.database is None:
            return []
        query = select(Artifact).where(Artifact.kind == HEAD_KIND).order_by(Artifact.id)
        if name:
            query = query.where(Artifact.name == name)
        with self.database.session() as session:
            return [self._record(row) for row in session.scalars(query)]

    def set_promoted(self, name: str, version: str, promoted: bool) -> None:
        """Promote or demote one version."""
        if self.database is None:
            raise ModelError("promoting a head needs the database (database.url)")
        with self.database.session() as session:
            done = session.execute(
                update(Artifact)
                .where(
                    Artifact.kind == HEAD_KIND, Artifact.name == name, Artifact.version == version
                )
                .values(promoted=promoted)
            )
            if done.rowcount == 0:  # type: ignore[attr-defined]
                raise ModelError(f"no {name} head with version {version!r}")

    def seed_dir(
        self, name: str, encoder: TextEncoder, options: TrainOptions = DEFAULT_OPTIONS
    ) -> Path:
        """Where the seed head of `name` for this encoder is cached (it may not exist yet)."""
        examples = seed_examples(name, self.seed_languages)
        digest = hashlib.sha256()
        for part in (
            HEAD_FORMAT,
            encoder.name,
            encoder.version,
            options,
            examples.texts,
            examples.labels,
        ):
            digest.update(repr(part).encode())
        return self.heads_dir(name) / f"seed-{digest.hexdigest()[:12]}"

    def seed_ready(self, name: str, encoder: TextEncoder) -> bool:
        """Whether the seed head of `name` for this encoder is built (by `model prepare`)."""
        return (self.seed_dir(name, encoder) / "head.json").is_file()

    def seed_head(
        self,
        name: str,
        encoder: TextEncoder,
        options: TrainOptions = DEFAULT_OPTIONS,
        *,
        train: bool = True,
    ) -> Head:
        """The head trained on the packaged seed set, trained once per encoder and cached.

        With `train` false a missing seed head raises `SeedHeadsMissing` instead of training
        here (training imports scikit-learn and costs the worker ~100 MB at its peak).
        """
        directory = self.seed_dir(name, encoder, options)
        if (directory / "head.json").is_file():
            try:
                return Head.load(directory)
            except ModelError as exc:
                if not train:
                    raise SeedHeadsMissing(
                        f"the {name} seed head in {directory} is unreadable ({exc}); "
                        f"{PREPARE_HINT}"
                    ) from None
                log.warning("retraining the %s seed head: %s", name, exc)
        if not train:
            raise SeedHeadsMissing(
                f"the {name} seed head for encoder {encoder.name} is not built in "
                f"{directory.parent}; {PREPARE_HINT}"
            )
        examples = seed_examples(name, self.seed_languages)
        log.info("training the %s seed head from %d packaged examples", name, len(examples))
        head = train_from_examples(name, examples, encoder, options=options)
        head.version = directory.name
        try:
            _write_atomically(head, directory)
        except OSError as exc:
            # A read-only models directory only costs a retrain at the next start.
            log.warning("cannot cache the %s seed head in %s: %s", name, directory, exc.strerror)
        return head

    def prepare_seed_heads(
        self, encoder: TextEncoder, *, force: bool = False
    ) -> list[tuple[str, Path, bool]]:
        """Build the seed heads this encoder lacks: (name, directory, built now) per head."""
        done = []
        for name in HEAD_NAMES:
            directory = self.seed_dir(name, encoder)
            built = force or not (directory / "head.json").is_file()
            if built:
                if force:
                    shutil.rmtree(directory, ignore_errors=True)
                self.seed_head(name, encoder)
            done.append((name, directory, built))
        return done

    def _relative(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.models_path))
        except ValueError:
            return str(path)

    def _record(self, row: Artifact) -> HeadRecord:
        return HeadRecord(
            id=row.id,
            name=row.name,
            version=row.version,
            path=self.models_path / row.path,
            promoted=row.promoted,
            created_at=row.created_at,
            metrics=dict(row.metrics or {}),
        )


def _write_atomically(head: Head, directory: Path) -> None:
    # Written beside the target and renamed, so a reader never sees half a head.
    directory.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        head.save(partial)
        os.replace(partial, directory)
    except OSError:
        shutil.rmtree(partial, ignore_errors=True)
        if not (directory / "head.json").is_file():
            raise
