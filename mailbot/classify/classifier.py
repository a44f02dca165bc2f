"""The classify stage: one encoder pass, then the intent, priority and sentiment heads."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from mailbot.classify.generative import ChoiceScorer, generator_intent
from mailbot.classify.head import Head
from mailbot.classify.language import detect_language
from mailbot.classify.lexical import gram_counts
from mailbot.classify.result import Classification
from mailbot.classify.store import HEAD_NAMES, HeadStore, TextEncoder, encoder_mismatch
from mailbot.config import ClassifierSettings, Config
from mailbot.db import Database
from mailbot.errors import ModelError
from mailbot.parse.message import join_text

log = logging.getLogger(__name__)


_blas_controller: Any = None


def _one_blas_thread() -> AbstractContextManager[Any]:
    """Run the heads' small matrix products on one BLAS thread.

    They take well under a millisecond; a BLAS thread pool waking up for each of them costs
    more than the product itself, several times more when the cores are busy with the
    encoder (measured 5x on two shared cores).
    """
    global _blas_controller
    try:
        from threadpoolctl import ThreadpoolController  # comes with scikit-learn
    except ImportError:
        return nullcontext()
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    return _blas_controller.limit(limits=1, user_api="blas")  # type: ignore[no-any-return]


def message_text(subject: str | None, body: str | None) -> str:
    """What is classified for an email: its subject, then its new (unquoted) text."""
    return join_text(subject, body)


class Classifier:
    """Classifies texts; `refresh()` swaps in newly promoted heads without a restart."""

    def __init__(
        self,
        encoder: TextEncoder,
        store: HeadStore,
        settings: ClassifierSettings | None = None,
        *,
        generator: ChoiceScorer | None = None,
        learned_thresholds: bool = True,
        train_seed_heads: bool = True,
    ) -> None:
        self.encoder = encoder
        # Use the thresholds `mailbot learn` recalibrated with a head (learn.thresholds).
        self.learned_thresholds = learned_thresholds
        # False in the worker: a missing seed head is an error naming `mailbot model prepare`.
        self.train_seed_heads = train_seed_heads
        self.store = store
        settings = settings or ClassifierSettings()
        self.settings = settings
        self.generator = generator if settings.use_generator else None
        if settings.use_generator and generator is None:
            log.warning("classifier.use_generator is set but no generator is configured")
        self._lock = threading.Lock()
        self._heads: dict[str, Head] = {}
        self._record_ids: dict[str, int | None] = {}
        self._checked_at = 0.0
        self.refresh(force=True)

    @classmethod
    def from_config(cls, config: Config, database: Database | None = None) -> Classifier:
        """Build from the configuration: the registry's encoder, generator and the database.

        Never trains in this process: seed heads that `mailbot model prepare` did not build
        are built in a child process first.
        """
        from mailbot.classify.seeds import build_seed_heads_in_child
        from mailbot.engine import ModelRegistry

        registry = ModelRegistry(config.models, config.models_path)
        generator = registry.generator() if config.classifier.use_generator else None
        store = HeadStore(config.models_path, database)
        encoder = registry.encoder()
        if not all(store.seed_ready(name, encoder) for name in HEAD_NAMES):
            build_seed_heads_in_child(config.models, config.models_path)
        return cls(encoder, store, config.classifier, generator=generator,
                   learned_thresholds=config.learn.thresholds == "apply",
                   train_seed_heads=False)

    @property
    def heads(self) -> dict[str, Head]:
        """The heads in use, by name."""
        return dict(self._heads)

    def refresh(self, *, force: bool = False) -> bool:
        """Load any newer promoted head; a cheap query, at most every `refresh_seconds`."""
        now = time.monotonic()
        if not force and now - self._checked_at < self.settings.refresh_seconds:
            return False
        with self._lock:
            self._checked_at = now
            changed = False
            for name in HEAD_NAMES:
                # Heads are tied to the encoder whose embeddings they were trained on.
                record = self.store.newest_promoted(name, self.encoder.version)
                if record is None and name not in self._heads:
                    others = self.store.promoted_for_other_encoders(name, self.encoder.version)
                    if others:
                        raise encoder_mismatch(name, others[0], self.encoder)
                record_id = record.id if record else None
                if name in self._heads and self._record_ids.get(name) == record_id:
                    continue
                head = (
                    Head.load(record.path)
                    if record
                    else self.store.seed_head(name, self.encoder, train=self.train_seed_heads)
                )
                if head.encoder_version and head.encoder_version != self.encoder.version:
                    raise ModelError(
                        f"{record.path if record else 'the seed head'}: trained on encoder "
                        f"version {head.encoder_version}, not {self.encoder.version}; retrain "
                        f"it with `mailbot train {name} --data FILE.csv`"
                    )
                self._heads[name] = head
                self._record_ids[name] = record_id
                changed = True
                log.info("%s head: using version %s", name, head.version)
            return changed

    def oos_threshold(self, head: Head | None = None) -> float:
        """The out-of-scope threshold in force: fixed, or calibrated from the intent head."""
        if self.settings.oos_threshold is not None:
            return self.settings.oos_threshold
        return (head or self._heads["intent"]).oos_threshold(self.settings.oos_false_rejection)

    def min_confidence(self, head: Head | None = None) -> float | None:
        """The intent confidence threshold learned with the head, when one is and is used."""
        if not self.learned_thresholds:
            return None
        learned = ((head or self._heads["intent"]).metrics or {}).get("thresholds") or {}
        value = learned.get("min_intent_confidence")
        return float(value) if value is not None else None

    def classify(self, text: str) -> Classification:
        """Classify one text (see `message_text` for emails)."""
        return self.classify_many([text])[0]

    def classify_many(self, texts: Sequence[str]) -> list[Classification]:
        """Classify texts in one encoder batch; results in input order."""
        if not texts:
            return []
        heads = self._heads  # one consistent set even if refresh() swaps them meanwhile
        embedded = self.encoder.embed(list(texts))
        # The n-grams are counted once per text and shared by the three lexical heads.
        grams = [gram_counts(text) for text in texts]
        with _one_blas_thread():
            predictions = {
                name: heads[name].predict(grams, embedded.vectors, out_of_scope=name == "intent")
                for name in HEAD_NAMES
            }
        threshold = self.oos_threshold(heads["intent"])
        min_confidence = None if self.generator is not None else self.min_confidence(
            heads["intent"])
        versions = tuple((name, heads[name].version) for name in HEAD_NAMES)
        results = []
        for row, text in enumerate(texts):
            intent = predictions["intent"].top(row)
            model, model_version, head_version = (
                self.encoder.name,
                self.encoder.version,
                heads["intent"].version,
            )
            if self.generator is not None:
                allowed = list(self.settings.intents) or list(heads["intent"].labels)
                intent = generator_intent(self.generator, text, allowed)
                model = str(getattr(self.generator, "name", "generator"))
                model_version = str(getattr(self.generator, "version", ""))
                head_version = "generator"
            oos_score = float(predictions["intent"].out_of_scope[row])
            results.append(
                Classification(
                    intent=intent,
                    priority=predictions["priority"].top(row),
                    sentiment=predictions["sentiment"].top(row),
                    language=detect_language(text, self.settings.languages),
                    out_of_scope_score=round(oos_score, 4),
                    out_of_scope=oos_score > threshold,
                    model=model,
                    model_version=model_version,
                    head_version=head_version,
                    truncated=bool(embedded.truncated[row]),
                    head_versions=versions,
                    min_confidence=min_confidence,
                )
            )
        return results


def describe(classifier: Classifier) -> dict[str, Any]:
    """What is loaded, for `mailbot classify --verbose` and status pages."""
    return {
        "encoder": {"name": classifier.encoder.name, "version": classifier.encoder.version},
        "heads": {
            name: {"version": head.version, "labels": list(head.labels)}
            for name, head in classifier.heads.items()
        },
        "oos_threshold": round(classifier.oos_threshold(), 4),
        "models_path": str(Path(classifier.store.models_path)),
    }
