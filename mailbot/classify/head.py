"""A trained classification head: numpy-only inference, saved as JSON + one .npz.

The head ensembles two linear models, one over the encoder's sentence embedding and one over
lexical TF-IDF features, by a weighted sum of their log-probabilities, then divides by a
temperature fitted on held-out predictions so that confidences are calibrated. Its
out-of-scope score mixes "no label is likely" (1 - top probability) with "nothing in the
training set is close" (1 - mean cosine similarity to the nearest training examples);
the in-scope scores seen in cross-validation are kept so a threshold can be chosen for any
target false-rejection rate without retraining.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mailbot.classify.lexical import LexicalVectorizer, sparse_logits
from mailbot.classify.oos import OutOfScopeModel, knn_similarity
from mailbot.classify.result import LabelScore
from mailbot.errors import ModelError

TextsOrGrams = Sequence[str] | Sequence[Counter[str]]

HEAD_FORMAT = 3
# Format 1: no fused out-of-scope model (the mixed score instead); format 2: the fusion's
# top probability is the embedding half's, format 3: the head's final probability.
READABLE_FORMATS = (1, 2, 3)
HEAD_FILE = "head.json"
WEIGHTS_FILE = "weights.npz"


@dataclass(frozen=True, slots=True)
class HeadPrediction:
    """Calibrated probabilities (rows in label order) and out-of-scope scores."""

    labels: tuple[str, ...]
    probabilities: np.ndarray  # (n, labels)
    out_of_scope: np.ndarray  # (n,)

    def top(self, row: int) -> LabelScore:
        """The best label of one row, with its runner-up."""
        probs = self.probabilities[row]
        order = np.argsort(-probs)
        best = int(order[0])
        second = int(order[1]) if len(order) > 1 else None
        return LabelScore(
            label=self.labels[best],
            confidence=round(float(probs[best]), 4),
            runner_up=self.labels[second] if second is not None else None,
            runner_up_confidence=round(float(probs[second]), 4) if second is not None else 0.0,
        )


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def softmax(z: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(z))


def oos_scores(probabilities: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """Mix of low top probability and low similarity to training data, in 0..1.

    The score of heads without a fused out-of-scope model (saved before it existed, or
    trained on fewer than three labels).
    """
    score = 0.5 * (1.0 - probabilities.max(axis=1)) + 0.5 * (1.0 - similarity)
    return np.clip(score, 0.0, 1.0)


@dataclass
class Head:
    """One trained head (intent, priority or sentiment)."""

    name: str
    labels: tuple[str, ...]
    embed_weights: np.ndarray  # (labels, dim)
    embed_bias: np.ndarray
    lexical: LexicalVectorizer | None
    lexical_weights: np.ndarray | None  # (labels, features)
    lexical_bias: np.ndarray | None
    mix: float  # weight of the embedding head's log-probabilities (1 - mix: lexical)
    temperature: float
    reference: np.ndarray  # unit training embeddings for the similarity part of OOS
    oos_calibration: np.ndarray  # sorted held-out in-scope OOS scores
    encoder: str = ""
    encoder_version: str = ""
    version: str = ""
    metrics: dict[str, Any] | None = None
    oos_model: OutOfScopeModel | None = None
    _lexical_t: np.ndarray | None = field(default=None, repr=False)

    def logits(
        self, texts: TextsOrGrams, vectors: np.ndarray, embed_logits: np.ndarray | None = None
    ) -> np.ndarray:
        """Uncalibrated ensemble log-scores, (n, labels)."""
        if embed_logits is None:
            embed_logits = vectors @ self.embed_weights.T + self.embed_bias
        z = self.mix * log_softmax(embed_logits)
        if (
            self.lexical is not None
            and self.lexical_weights is not None
            and self.lexical_bias is not None
            and self.mix < 1.0
        ):
            if self._lexical_t is None:
                self._lexical_t = np.ascontiguousarray(self.lexical_weights.T)
            lex = sparse_logits(self.lexical.transform(texts), self._lexical_t, self.lexical_bias)
            z = z + (1.0 - self.mix) * log_softmax(lex)
        return z

    def predict(
        self, texts: TextsOrGrams, vectors: np.ndarray, *, out_of_scope: bool = True
    ) -> HeadPrediction:
        """Calibrated probabilities and OOS scores; `texts` may be their `gram_counts`.

        Without `out_of_scope` the scores are all zero (priority and sentiment need none).
        """
        vectors = np.asarray(vectors, dtype=np.float32)
        embed_logits = vectors @ self.embed_weights.T + self.embed_bias
        probs = softmax(self.logits(texts, vectors, embed_logits) / self.temperature)
        if out_of_scope and self.oos_model is not None:
            oos = self.oos_model.scores(embed_logits, probs, vectors, self.reference)
        elif out_of_scope:
            oos = oos_scores(probs, knn_similarity(vectors, self.reference))
        else:
            oos = np.zeros(len(probs), np.float32)
        return HeadPrediction(self.labels, probs, oos)

    def oos_threshold(self, false_rejection: float) -> float:
        """The score above which mail is out of scope, for a target in-scope rejection rate."""
        if len(self.oos_calibration) == 0:
            return 1.0
        return float(np.quantile(self.oos_calibration, 1.0 - false_rejection))

    def save(self, directory: Path) -> None:
        """Write head.json and weights.npz into `directory` (created)."""
        directory.mkdir(parents=True, exist_ok=True)
        arrays: dict[str, np.ndarray] = {
            "embed_weights": self.embed_weights.astype(np.float32),
            "embed_bias": self.embed_bias.astype(np.float32),
            # Half precision halves the file; similarities need no more than 3 digits.
            "reference": self.reference.astype(np.float16),
            "oos_calibration": self.oos_calibration.astype(np.float32),
        }
        if self.oos_model is not None:
            arrays.update(self.oos_model.arrays())
        meta: dict[str, Any] = {
            "format": HEAD_FORMAT,
            "name": self.name,
            "labels": list(self.labels),
            "mix": self.mix,
            "temperature": self.temperature,
            "encoder": self.encoder,
            "encoder_version": self.encoder_version,
            "version": self.version,
            "metrics": self.metrics or {},
            "lexical": None,
        }
        if self.lexical is not None and self.lexical_weights is not None:
            grams = sorted(self.lexical.vocabulary, key=self.lexical.vocabulary.__getitem__)
            meta["lexical"] = {"char_range": list(self.lexical.char_range), "vocabulary": grams}
            arrays["lexical_idf"] = self.lexical.idf
            arrays["lexical_weights"] = self.lexical_weights.astype(np.float32)
            arrays["lexical_bias"] = np.asarray(self.lexical_bias, np.float32)
        np.savez(directory / WEIGHTS_FILE, **arrays)  # type: ignore[arg-type]
        (directory / HEAD_FILE).write_text(json.dumps(meta, ensure_ascii=False), "utf-8")

    @classmethod
    def load(cls, directory: Path) -> Head:
        """Read a head saved by `save`; raises `ModelError` when it is missing or damaged."""
        try:
            meta = json.loads((directory / HEAD_FILE).read_text("utf-8"))
            with np.load(directory / WEIGHTS_FILE) as npz:
                arrays = {key: npz[key] for key in npz.files}
        except FileNotFoundError as exc:
            raise ModelError(
                f"classification head {directory} is incomplete ({Path(exc.filename).name} "
                "missing); train it again with `mailbot train`"
            ) from None
        except (OSError, ValueError) as exc:
            raise ModelError(f"classification head {directory} is unreadable: {exc}") from None
        if meta.get("format") not in READABLE_FORMATS:
            raise ModelError(
                f"classification head {directory} has format {meta.get('format')!r}, this "
                f"mailbot reads format {HEAD_FORMAT}; train it again with `mailbot train`"
            )
        lexical = None
        if meta.get("lexical"):
            vocab = {gram: i for i, gram in enumerate(meta["lexical"]["vocabulary"])}
            lexical = LexicalVectorizer(
                vocab, arrays["lexical_idf"], tuple(meta["lexical"]["char_range"])
            )
        return cls(
            name=meta["name"],
            labels=tuple(meta["labels"]),
            embed_weights=arrays["embed_weights"],
            embed_bias=arrays["embed_bias"],
            lexical=lexical,
            lexical_weights=arrays.get("lexical_weights"),
            lexical_bias=arrays.get("lexical_bias"),
            mix=float(meta["mix"]),
            temperature=float(meta["temperature"]),
            reference=arrays["reference"].astype(np.float32),
            oos_calibration=arrays["oos_calibration"],
            encoder=meta.get("encoder", ""),
            encoder_version=meta.get("encoder_version", ""),
            version=meta.get("version", ""),
            metrics=meta.get("metrics") or {},
            oos_model=OutOfScopeModel.from_arrays(arrays),
        )
