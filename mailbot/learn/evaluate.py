"""Scoring a head on held-back mail the way the router would use it, and choosing thresholds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mailbot.classify.head import Head


@dataclass(frozen=True, slots=True)
class Thresholds:
    """What the router compares a classification with."""

    min_intent_confidence: float
    oos_threshold: float

    def to_json(self) -> dict[str, float]:
        return {"min_intent_confidence": round(self.min_intent_confidence, 4),
                "oos_threshold": round(self.oos_threshold, 4)}


@dataclass(frozen=True, slots=True)
class HeadScore:
    """One head on the held-back mail."""

    version: str
    examples: int
    accuracy: float
    escalated: float | None  # share the router would send to the cloud (intent only)
    auto_accuracy: float | None  # accuracy of the mail the small model would keep
    per_label: dict[str, tuple[int, float]]  # label -> (held-back examples, accuracy)
    thresholds: Thresholds | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "version": self.version, "examples": self.examples,
            "accuracy": round(self.accuracy, 4),
            "escalated": None if self.escalated is None else round(self.escalated, 4),
            "auto_accuracy": None if self.auto_accuracy is None else round(self.auto_accuracy, 4),
            "per_label": {k: [n, round(a, 4)] for k, (n, a) in self.per_label.items()},
            "thresholds": self.thresholds.to_json() if self.thresholds else None,
        }


@dataclass(frozen=True, slots=True)
class Predictions:
    labels: list[str]
    confidence: np.ndarray
    out_of_scope: np.ndarray


def predict(head: Head, texts: Sequence[str], vectors: np.ndarray) -> Predictions:
    """The head's top label, its confidence and the out-of-scope score of each text."""
    if not texts:
        return Predictions([], np.zeros(0), np.zeros(0))
    prediction = head.predict(list(texts), vectors, out_of_scope=head.name == "intent")
    best = prediction.probabilities.argmax(axis=1)
    return Predictions([head.labels[i] for i in best],
                       prediction.probabilities.max(axis=1), prediction.out_of_scope)


def score(
    head: Head,
    texts: Sequence[str],
    vectors: np.ndarray,
    truth: Sequence[str],
    thresholds: Thresholds | None,
    traffic: tuple[Sequence[str], np.ndarray] | None = None,
) -> HeadScore:
    """Accuracy on the held-back mail; for intent also the share of recent mail (`traffic`,
    labelled or not; else the held-back mail) escalated at `thresholds` and the accuracy of
    the held-back mail the small model would keep."""
    found = predict(head, texts, vectors)
    correct = np.array([p == t for p, t in zip(found.labels, truth, strict=True)], bool)
    per_label: dict[str, tuple[int, float]] = {}
    support = Counter(truth)
    for label in sorted(support):
        rows = np.array([t == label for t in truth], bool)
        per_label[label] = (int(support[label]), float(correct[rows].mean()))
    escalated = auto = None
    if thresholds is not None and len(correct):
        sent = escalate_mask(found, thresholds)
        escalated = float(sent.mean())
        auto = float(correct[~sent].mean()) if (~sent).any() else None
    if thresholds is not None and traffic is not None and len(traffic[0]):
        escalated = float(escalate_mask(predict(head, *traffic), thresholds).mean())
    return HeadScore(head.version, len(correct), float(correct.mean()) if len(correct) else 0.0,
                     escalated, auto, per_label, thresholds)


def escalate_mask(found: Predictions, thresholds: Thresholds) -> np.ndarray:
    """The rows the router would escalate for low confidence or out of scope."""
    return np.asarray((found.confidence < thresholds.min_intent_confidence)
                      | (found.out_of_scope > thresholds.oos_threshold), bool)


def choose_min_confidence(
    traffic: Predictions,
    oos_threshold: float,
    *,
    target: float,
    floor: float,
    ceiling: float,
    margin: float = 0.0,
) -> float:
    """The lowest confidence threshold at which the recent mail the small model would keep
    (in scope, confident enough) is expected to be right at least `target` of the time;
    `ceiling` if it never is. `margin` is added to the target: see `calibration_margin`.

    The head's confidences are calibrated (temperature fitted on held-out folds), so the
    mean confidence of the mail kept estimates its accuracy; recent mail, labelled or not,
    is what the threshold will meet. Labelled mail alone would not do: the cloud model only
    labels what the small model escalated, the hard cases.
    """
    in_scope = traffic.out_of_scope <= oos_threshold
    for threshold in np.arange(floor, ceiling + 1e-9, 0.01):
        kept = in_scope & (traffic.confidence >= threshold)
        # A handful of kept messages says nothing: ask for at least five.
        if kept.sum() >= 5 and traffic.confidence[kept].mean() >= target + margin:
            return round(float(threshold), 2)
    return ceiling


def calibration_margin(trusted_rows: int, target: float, level: float) -> float:
    """How far above `target` the mean confidence of the kept mail must be for its accuracy
    to reach `target` at one-sided confidence `level`.

    The temperature that calibrates the confidence was checked on `trusted_rows` held-out
    examples whose labels are trusted (seed, file and human labels); with a few hundred of
    them an accuracy near `target` is only known to within about
    sqrt(target * (1 - target) / rows), and on fresh mail the head is usually a little
    more sure of itself than on the examples it was calibrated on. The margin is that
    standard error times the normal quantile of `level`: it shrinks as agents' corrections
    add trusted rows. A `level` of 0.5 (or no trusted rows recorded) means no margin.
    """
    if trusted_rows <= 0 or level <= 0.5:
        return 0.0
    from statistics import NormalDist

    z = NormalDist().inv_cdf(level)
    return float(z * np.sqrt(target * (1 - target) / trusted_rows))


def worse_beyond_margin(
    candidate: Sequence[str], current: Sequence[str], truth: Sequence[str], margin: float
) -> tuple[bool, float]:
    """Whether the candidate is worse than the current head beyond `margin`, allowing for
    chance on a small slice: the paired difference must exceed the margin by one standard
    error (the square root of the messages the two disagree on, over all). (worse, band)"""
    n = len(truth)
    if not n:
        return False, 0.0
    only_new = sum(c == t != o for c, o, t in zip(candidate, current, truth, strict=True))
    only_old = sum(o == t != c for c, o, t in zip(candidate, current, truth, strict=True))
    band = margin + float(np.sqrt(only_new + only_old)) / n
    return (only_old - only_new) / n > band, band
