"""`mailbot learn`: retrain the heads from labelled mail, promote what is not worse.

For each head: build the training set (`mailbot.learn.dataset`), hold back the most recent
human- and teacher-labelled mail, train a candidate with the existing training code on the
rest, score it and the head now in service on the held-back mail, recalibrate the intent
confidence threshold there, record the candidate (promoted or not) with its metrics and the
data it was trained on, and promote it only when it is not worse beyond `learn.margin`.
A running worker picks a promoted head up at its next refresh (`classifier.refresh_seconds`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np
from sqlalchemy import select, update

from mailbot.audit.events import record_event
from mailbot.classify.classifier import _one_blas_thread
from mailbot.classify.head import Head
from mailbot.classify.store import HEAD_NAMES, HeadStore, TextEncoder, train_from_examples
from mailbot.classify.train import Progress, TrainingDataError, TrainOptions, _quiet_progress
from mailbot.config import Config
from mailbot.db.llm_records import TeacherLabel
from mailbot.db.models import Message, MessageStatus, RawMessage
from mailbot.db.outcomes import HumanLabel
from mailbot.db.session import Database
from mailbot.learn.dataset import (
    HUMAN,
    TEACHER,
    Example,
    TrainingSet,
    build_training_set,
    drop_thin_labels,
    message_texts,
)
from mailbot.learn.embeddings import EmbeddingCache
from mailbot.learn.evaluate import (
    HeadScore,
    Thresholds,
    calibration_margin,
    choose_min_confidence,
    predict,
    score,
    worse_beyond_margin,
)
from mailbot.learn.lock import learning_lock
from mailbot.learn.versions import LEARN_STAGE

log = logging.getLogger(__name__)

LEARN_SOURCE = "learn"
DATA_FILE = "training_data.json"


@dataclass
class HeadOutcome:
    """What one learning run did for one head."""

    name: str
    action: str  # "promoted", "kept" (candidate not good enough) or "skipped"
    reason: str
    version: str | None = None  # the candidate's version, when one was trained
    before: HeadScore | None = None
    after: HeadScore | None = None
    sources: dict[str, int] = field(default_factory=dict)
    holdout: int = 0
    new_labels: int = 0
    conflicts: int = 0
    skipped_erased: int = 0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.name, "action": self.action, "reason": self.reason,
            "version": self.version, "sources": self.sources, "holdout": self.holdout,
            "new_labels": self.new_labels, "conflicts": self.conflicts,
            "skipped_erased": self.skipped_erased, "seconds": round(self.seconds, 1),
            "before": self.before.to_json() if self.before else None,
            "after": self.after.to_json() if self.after else None,
        }


def serving_head(store: HeadStore, name: str, encoder: TextEncoder,
                 options: TrainOptions) -> Head:
    """The head a worker serves now: the newest promoted version, else the seed head."""
    record = store.newest_promoted(name, encoder.version)
    return Head.load(record.path) if record else store.seed_head(name, encoder, options)


def head_thresholds(head: Head, config: Config) -> Thresholds:
    """The thresholds a worker uses with this head (see `Classifier`)."""
    learned = (head.metrics or {}).get("thresholds") or {}
    min_conf = config.route.min_intent_confidence
    if config.learn.thresholds == "apply" and "min_intent_confidence" in learned:
        min_conf = float(learned["min_intent_confidence"])
    if config.classifier.oos_threshold is not None:
        oos = config.classifier.oos_threshold
    else:
        oos = head.oos_threshold(config.classifier.oos_false_rejection)
    return Thresholds(min_conf, oos)


class Learner:
    """One learning run over the heads, with one encoder and one embedding cache."""

    def __init__(self, config: Config, database: Database, encoder: TextEncoder, *,
                 progress: Progress = _quiet_progress) -> None:
        self.config = config
        self.database = database
        self.encoder = encoder
        self.progress = progress
        self.store = HeadStore(config.models_path, database)
        self.cache = EmbeddingCache(config.models_path / "learn", encoder)
        folds = config.learn.cv_folds or config.classifier.cv_folds
        self.options = TrainOptions(folds=folds)

    def run(self, names: Sequence[str] = HEAD_NAMES, *, force: bool = False,
            promote: bool = True) -> list[HeadOutcome]:
        """Learn every named head; the embedding cache is saved once at the end."""
        outcomes = []
        try:
            for name in names:
                outcomes.append(self.learn_head(name, force=force, promote=promote))
        finally:
            self.cache.save()
        return outcomes

    def learn_head(self, name: str, *, force: bool = False, promote: bool = True) -> HeadOutcome:
        """Build, train, compare and (maybe) promote one head."""
        started = time.monotonic()
        settings = self.config.learn
        with self.database.session() as session:
            data = build_training_set(
                session, name, files=settings.data.get(name, []),  # type: ignore[call-overload]
                base=self.config.base_dir, packaged_seed=settings.packaged_seed,
                min_teacher_confidence=settings.min_teacher_confidence,
                holdout=(settings.holdout_share, settings.holdout_min, settings.holdout_max),
            )
        outcome = HeadOutcome(name, "skipped", "", sources=data.sources(),
                              holdout=len(data.holdout), new_labels=data.new_labels,
                              conflicts=data.conflicts, skipped_erased=data.skipped_erased)
        promoted = self.store.newest_promoted(name, self.encoder.version)
        # New: labelled since the last version of this head was trained (kept or promoted).
        versions = self.store.versions(name)
        since = versions[-1].created_at if versions else None
        outcome.new_labels = data.new_labels = sum(
            1 for e in (*data.train, *data.holdout)
            if e.labelled_at is not None and (since is None or _aware(e.labelled_at) > since))
        if not force and promoted is not None and data.new_labels < settings.min_new_labels:
            outcome.reason = (f"{data.new_labels} new label(s), fewer than learn.min_new_labels"
                              f" = {settings.min_new_labels}")
            return self._done(outcome, started)
        train, thin = drop_thin_labels(data.train)
        if thin:
            log.info("%s: leaving out labels with fewer than 2 examples: %s", name,
                     ", ".join(thin[:10]))
        if len({e.label for e in train}) < 2:
            outcome.reason = "fewer than two labels with two examples each: nothing to train"
            return self._done(outcome, started)
        self.progress(f"{name}: {len(train)} examples ({_sources(outcome.sources)}), "
                      f"{len(data.holdout)} held back")
        vectors = self.cache.embed([e.text for e in train], self.progress)
        options = replace(self.options,
                          lexical=len(train) <= settings.lexical_max_examples)
        try:
            with _one_blas_thread():
                # The cloud model's labels train the head but do not calibrate it: it is
                # wrong now and then, and a confidence fitted to its mistakes is too low.
                trusted = np.array([e.source != TEACHER for e in train], bool)
                candidate = train_from_examples(name, data.examples(train), self.encoder,
                                                options=options, progress=self.progress,
                                                vectors=vectors, calibration_rows=trusted)
        except TrainingDataError as exc:
            outcome.reason = str(exc)
            return self._done(outcome, started)
        current = serving_head(self.store, name, self.encoder, self.options)
        decision, reason = self._compare(name, candidate, current, data, outcome)
        candidate.metrics = dict(candidate.metrics or {}, learn=self._record(outcome, data))
        candidate.metrics["thresholds"] = (outcome.after.thresholds.to_json()
                                           if outcome.after and outcome.after.thresholds
                                           else None) or {}
        record = self.store.save(candidate, promote=promote and decision, source=LEARN_SOURCE)
        (record.path / DATA_FILE).write_text(
            json.dumps([e.describe() for e in train], ensure_ascii=False), "utf-8")
        outcome.version = record.version
        outcome.action = "promoted" if record.promoted else "kept"
        outcome.reason = reason if promote else f"{reason} (not promoted: --no-promote)"
        if record.promoted:
            self._mark_used(train, record.version)
        with self.database.session() as session:
            details = outcome.to_json()
            for side in ("before", "after"):  # the per-label figures stay with the version
                if details[side]:
                    details[side].pop("per_label", None)
            record_event(session, LEARN_STAGE, outcome.action, actor="learn", details=details,
                         model=self.encoder.name, model_version=record.version)
        return self._done(outcome, started)

    def _compare(self, name: str, candidate: Head, current: Head, data: TrainingSet,
                 outcome: HeadOutcome) -> tuple[bool, str]:
        margin = self.config.learn.margin
        held = data.holdout
        traffic = self._traffic() if name == "intent" else None
        new_thresholds = self._recalibrate(candidate, traffic) if traffic is not None else None
        if not held:
            old = float((current.metrics or {}).get("cv_accuracy") or 0.0)
            new = float((candidate.metrics or {}).get("cv_accuracy") or 0.0)
            if new_thresholds is not None and traffic is not None:
                outcome.after = score(candidate, [], traffic[1][:0], [], new_thresholds,
                                      traffic)
            ok = new >= old - margin
            return ok, (f"no recent labelled mail to hold back; cross-validated accuracy "
                        f"{new:.3f} against {old:.3f}")
        texts, truth = [e.text for e in held], [e.label for e in held]
        vectors = self.cache.embed(texts, self.progress)
        current_thresholds = head_thresholds(current, self.config) if name == "intent" else None
        outcome.before = score(current, texts, vectors, truth, current_thresholds, traffic)
        outcome.after = score(candidate, texts, vectors, truth, new_thresholds, traffic)
        worse, band = worse_beyond_margin(predict(candidate, texts, vectors).labels,
                                          predict(current, texts, vectors).labels, truth, margin)
        old, new = outcome.before.accuracy, outcome.after.accuracy
        verdict = "worse" if worse else "not worse"
        return not worse, (f"accuracy on {len(held)} held-back message(s) {new:.3f} against "
                           f"{old:.3f}: {verdict} (margin {margin:g}, with chance {band:.3f})")

    def _traffic(self) -> tuple[list[str], Any] | None:
        """The most recent mail (labelled or not) as the classifier reads it, embedded."""
        limit = self.config.learn.calibration_messages
        with self.database.session() as session:
            pks = list(session.scalars(
                select(Message.id).join(RawMessage, RawMessage.message_pk == Message.id)
                .where(Message.erased_at.is_(None),
                       Message.status.not_in([MessageStatus.SKIPPED, MessageStatus.FAILED,
                                              MessageStatus.FETCHED]))
                .order_by(Message.id.desc()).limit(limit)))
            texts = list(message_texts(session, pks).values())
        if len(texts) < 5:
            return None
        return texts, self.cache.embed(texts, self.progress)

    def _recalibrate(self, head: Head, traffic: tuple[list[str], Any] | None) -> Thresholds:
        settings = self.config.learn
        oos = (self.config.classifier.oos_threshold
               if self.config.classifier.oos_threshold is not None
               else head.oos_threshold(self.config.classifier.oos_false_rejection))
        if traffic is None:
            return Thresholds(self.config.route.min_intent_confidence, oos)
        metrics = head.metrics or {}
        rows = int(metrics.get("calibration_rows") or metrics.get("examples") or 0)
        margin = calibration_margin(rows, settings.target_accuracy, settings.confidence_level)
        min_conf = choose_min_confidence(
            predict(head, *traffic), oos, target=settings.target_accuracy,
            floor=settings.min_confidence_floor, ceiling=settings.min_confidence_ceiling,
            margin=margin)
        log.info("intent confidence threshold %.2f: kept mail expected right %.3f of the time "
                 "(target %.3f plus %.3f for %d trusted calibration rows at level %.2f)",
                 min_conf, settings.target_accuracy + margin, settings.target_accuracy,
                 margin, rows, settings.confidence_level)
        return Thresholds(min_conf, oos)

    def _record(self, outcome: HeadOutcome, data: TrainingSet) -> dict[str, Any]:
        return {
            "sources": outcome.sources, "holdout": len(data.holdout),
            "holdout_labels": [e.label_id for e in data.holdout],
            "new_labels": data.new_labels, "conflicts": data.conflicts,
            "duplicates": data.duplicates, "skipped_erased": data.skipped_erased,
            "before": outcome.before.to_json() if outcome.before else None,
            "after": outcome.after.to_json() if outcome.after else None,
        }

    def _mark_used(self, train: list[Example], version: str) -> None:
        teacher = [e.label_id for e in train if e.source == TEACHER and e.label_id]
        human = [e.label_id for e in train if e.source == HUMAN and e.label_id]
        with self.database.session() as session:
            for table, ids in ((TeacherLabel, teacher), (HumanLabel, human)):
                for start in range(0, len(ids), 500):
                    session.execute(
                        update(table)
                        .where(table.id.in_(ids[start : start + 500]),
                               table.used_in_training_version.is_(None))
                        .values(used_in_training_version=version))

    def _done(self, outcome: HeadOutcome, started: float) -> HeadOutcome:
        outcome.seconds = time.monotonic() - started
        log.info("learn %s: %s (%s)", outcome.name, outcome.action, outcome.reason)
        return outcome


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _sources(sources: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(sources.items())) or "none"


def run_learning(config: Config, database: Database, encoder: TextEncoder | None = None, *,
                 names: Sequence[str] = HEAD_NAMES, force: bool = False, promote: bool = True,
                 progress: Progress = _quiet_progress) -> list[HeadOutcome]:
    """One learning run (the CLI command and the daemon's job call this); `LearningBusy`
    when another one holds the lock."""
    with learning_lock(database, config.data_path):
        if encoder is None:
            from mailbot.engine import ModelRegistry

            encoder = ModelRegistry(config.models, config.models_path).encoder()
        learner = Learner(config, database, encoder, progress=progress)
        return learner.run(names, force=force, promote=promote)
