"""Offline evaluation of a head: train on one file, test on another, over several seeds."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mailbot.classify.data import LabeledExamples
from mailbot.classify.store import TextEncoder, embed_texts, train_from_examples
from mailbot.classify.train import (
    DEFAULT_OPTIONS,
    Progress,
    TrainingDataError,
    TrainOptions,
    _quiet_progress,
)


@dataclass(frozen=True, slots=True)
class LabelReport:
    """Precision, recall and F1 of one label, pooled over seeds."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True, slots=True)
class EvalReport:
    """Accuracy per seed, per-label figures, and out-of-scope figures when asked for."""

    accuracies: tuple[float, ...]
    labels: tuple[LabelReport, ...]
    train_size: int
    test_size: int
    in_scope_accuracy: float | None = None
    oos_recall: float | None = None
    oos_threshold: float | None = None
    ece: float | None = None
    extra: dict[str, float] = field(default_factory=dict)
    oos_recalls: tuple[float, ...] = ()
    in_scope_accuracies: tuple[float, ...] = ()
    aurocs: tuple[float, ...] = ()
    fpr95s: tuple[float, ...] = ()
    held_out: tuple[tuple[str, ...], ...] = ()

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.accuracies))

    @property
    def oos_auroc(self) -> float | None:
        """Mean area under the ROC curve of the out-of-scope score (None without OOS rows)."""
        return float(np.mean(self.aurocs)) if self.aurocs else None

    @property
    def fpr95(self) -> float | None:
        """Mean share of in-scope rows flagged when the threshold catches 95% of OOS rows."""
        return float(np.mean(self.fpr95s)) if self.fpr95s else None


def auroc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Area under the ROC curve: the chance a positive row outscores a negative (ties: half)."""
    from scipy.stats import rankdata

    ranks = rankdata(scores)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def fpr_at_recall(scores: np.ndarray, positive: np.ndarray, recall: float = 0.95) -> float:
    """Share of negative rows at or above the score that keeps `recall` of the positives."""
    ranked = np.sort(scores[positive])
    if len(ranked) == 0 or positive.all():
        return float("nan")
    cut = ranked[int(np.floor((1.0 - recall) * len(ranked)))]
    return float((scores[~positive] >= cut).mean())


def held_out_intents(labels: Sequence[str], count: int, seed: int) -> tuple[str, ...]:
    """`count` of the labels, chosen by `seed`, to treat as out of scope."""
    known = sorted(set(labels))
    if not 0 < count <= len(known) - 2:
        raise TrainingDataError(
            f"--holdout-intents {count}: the training file has {len(known)} labels; hold out "
            f"between 1 and {len(known) - 2} so that at least two stay to train on"
        )
    rng = np.random.default_rng(seed)
    return tuple(sorted(known[int(i)] for i in rng.choice(len(known), count, replace=False)))


def sample_shots(examples: LabeledExamples, shots: int, seed: int) -> LabeledExamples:
    """`shots` examples per label (all of a label that has fewer), chosen by `seed`."""
    rng = np.random.default_rng(seed)
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(examples.labels):
        by_label.setdefault(label, []).append(i)
    chosen: list[int] = []
    for label in sorted(by_label):
        rows = by_label[label]
        take = rng.choice(len(rows), size=min(shots, len(rows)), replace=False)
        chosen.extend(rows[int(j)] for j in take)
    chosen.sort()
    return LabeledExamples(
        tuple(examples.texts[i] for i in chosen), tuple(examples.labels[i] for i in chosen)
    )


def evaluate_head(
    name: str,
    encoder: TextEncoder,
    train: LabeledExamples,
    test: LabeledExamples,
    *,
    shots: int | None = None,
    seeds: int = 1,
    oos_label: str | None = None,
    holdout_intents: int | None = None,
    false_rejection: float = 0.05,
    options: TrainOptions = DEFAULT_OPTIONS,
    progress: Progress = _quiet_progress,
) -> EvalReport:
    """Train `seeds` times and score on `test`; with `oos_label`, those rows are out of scope.

    With `holdout_intents` N, each seed also holds N intents of the training file out (a
    different random choice per seed): their test rows must be flagged out of scope.
    """
    from mailbot.classify.calibration import expected_calibration_error

    if oos_label is not None:
        keep = [i for i, label in enumerate(train.labels) if label != oos_label]
        train = LabeledExamples(
            tuple(train.texts[i] for i in keep), tuple(train.labels[i] for i in keep)
        )
    known = set(train.labels)
    unknown = sorted({label for label in test.labels if label not in known} - {oos_label})
    if unknown:
        raise TrainingDataError(
            f"the test set has labels the training set lacks: {', '.join(unknown[:10])}"
            " (use --oos-label to count one of them as out of scope)"
        )
    train_vectors = embed_texts(encoder, train.texts, progress, "training set")
    test_vectors = embed_texts(encoder, test.texts, progress, "test set")
    index = {text: i for i, text in enumerate(train.texts)}
    scored_oos = oos_label is not None or holdout_intents is not None
    accuracies, in_scope, recalls, thresholds, eces, aurocs, fpr95s = [], [], [], [], [], [], []
    held: list[tuple[str, ...]] = []
    truth: list[str] = []
    predicted: list[str] = []
    for seed in range(seeds):
        hidden = held_out_intents(train.labels, holdout_intents, seed) if holdout_intents else ()
        pool = train
        if hidden:
            rows = [i for i, label in enumerate(train.labels) if label not in hidden]
            pool = LabeledExamples(
                tuple(train.texts[i] for i in rows), tuple(train.labels[i] for i in rows)
            )
            held.append(hidden)
        is_oos = np.array([label == oos_label or label in hidden for label in test.labels])
        subset = sample_shots(pool, shots, seed) if shots else pool
        vectors = train_vectors[[index[text] for text in subset.texts]]
        progress(f"seed {seed + 1}/{seeds}: training on {len(subset)} examples")
        head = train_from_examples(
            name,
            subset,
            encoder,
            options=_with_seed(options, seed),
            progress=progress,
            vectors=vectors,
        )
        prediction = head.predict(test.texts, test_vectors)
        labels = [head.labels[i] for i in prediction.probabilities.argmax(axis=1)]
        threshold = head.oos_threshold(false_rejection)
        flagged = prediction.out_of_scope > threshold
        correct_label = np.array([p == t for p, t in zip(labels, test.labels, strict=True)])
        if not scored_oos:
            correct = correct_label
        else:
            correct = np.where(is_oos, flagged, correct_label & ~flagged)
            in_scope.append(float(correct[~is_oos].mean()))
            recalls.append(float(flagged[is_oos].mean()) if is_oos.any() else 0.0)
            thresholds.append(threshold)
            if is_oos.any() and not is_oos.all():
                aurocs.append(auroc(prediction.out_of_scope, is_oos))
                fpr95s.append(fpr_at_recall(prediction.out_of_scope, is_oos))
        accuracies.append(float(correct.mean()))
        y = np.array([head.labels.index(t) if t in head.labels else -1 for t in test.labels])
        rows_known = y >= 0
        eces.append(
            expected_calibration_error(prediction.probabilities[rows_known], y[rows_known])
        )
        truth.extend("(out of scope)" if o else t for t, o in zip(test.labels, is_oos, strict=True))
        predicted.extend(
            "(out of scope)" if scored_oos and f else p
            for p, f in zip(labels, flagged, strict=True)
        )
        progress(f"seed {seed + 1}/{seeds}: accuracy {accuracies[-1]:.4f}")
    return EvalReport(
        accuracies=tuple(accuracies),
        labels=_per_label(truth, predicted),
        train_size=len(train),
        test_size=len(test),
        in_scope_accuracy=float(np.mean(in_scope)) if in_scope else None,
        oos_recall=float(np.mean(recalls)) if recalls else None,
        oos_threshold=float(np.mean(thresholds)) if thresholds else None,
        ece=float(np.mean(eces)),
        oos_recalls=tuple(recalls),
        in_scope_accuracies=tuple(in_scope),
        aurocs=tuple(aurocs),
        fpr95s=tuple(fpr95s),
        held_out=tuple(held),
    )


def _with_seed(options: TrainOptions, seed: int) -> TrainOptions:
    from dataclasses import replace

    return replace(options, seed=seed)


def _per_label(truth: Sequence[str], predicted: Sequence[str]) -> tuple[LabelReport, ...]:
    support = Counter(truth)
    hits = Counter(t for t, p in zip(truth, predicted, strict=True) if t == p)
    guesses = Counter(predicted)
    reports = []
    for label in sorted(support):
        precision = hits[label] / guesses[label] if guesses[label] else 0.0
        recall = hits[label] / support[label]
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        reports.append(LabelReport(label, precision, recall, f1, support[label]))
    return tuple(reports)
