"""Training a head from labelled examples: cross-validated calibration, then a final fit.

Needs scikit-learn (logistic regression); inference does not.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from mailbot.classify.calibration import (
    choose_mix,
    expected_calibration_error,
    fit_temperature,
)
from mailbot.classify.head import Head, knn_similarity, log_softmax, oos_scores, softmax
from mailbot.classify.lexical import LexicalVectorizer, to_csr
from mailbot.classify.oos import (
    FEATURES,
    MIN_LABELS,
    Geometry,
    OutOfScopeModel,
    fit_fusion,
    leave_groups_out,
)
from mailbot.errors import PermanentError

log = logging.getLogger(__name__)

Progress = Callable[[str], None]


class TrainingDataError(PermanentError):
    """Labelled examples are missing, malformed or too few to train on."""


@dataclass(frozen=True, slots=True)
class TrainOptions:
    """How a head is trained."""

    folds: int = 5
    seed: int = 0
    embed_c: float = 10.0  # inverse L2 strength of the embedding head
    lexical_c: float = 20.0  # inverse L2 strength of the lexical head
    lexical: bool = True
    max_iter: int = 1000
    out_of_scope: bool = True  # fit the fused out-of-scope model (intent heads only)


DEFAULT_OPTIONS = TrainOptions()
# Fewer trusted rows than this say too little about calibration: all rows are used instead.
MIN_CALIBRATION_ROWS = 100


def _quiet_progress(_message: str) -> None:
    pass


def _logistic(x, y: np.ndarray, c: float, max_iter: int):  # type: ignore[no-untyped-def]
    try:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        raise PermanentError(
            "training needs scikit-learn; install it with `pip install scikit-learn`"
        ) from None
    model = LogisticRegression(C=c, max_iter=max_iter)
    with warnings.catch_warnings():
        # A few hundred iterations short of full convergence changes nothing measurable.
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(x, y)
    return model


def _full_coef(model, n_labels: int, dim: int) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """(labels, dim) weights even when a fold lacks some labels or there are only two."""
    weights = np.zeros((n_labels, dim), np.float32)
    # A label absent from this fold must never win: give it a very low bias.
    bias = np.full(n_labels, -1e4, np.float32)
    coef, intercept = model.coef_, model.intercept_
    classes = model.classes_
    if len(classes) == 2 and coef.shape[0] == 1:
        # Binary logistic regression keeps one row; spread it symmetrically over the two.
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weights[classes] = coef
    bias[classes] = intercept
    return weights, bias


@dataclass
class _Fitted:
    embed: tuple[np.ndarray, np.ndarray]
    lexical: tuple[LexicalVectorizer, np.ndarray, np.ndarray] | None


def _fit(
    texts: Sequence[str],
    y: np.ndarray,
    vectors: np.ndarray,
    n_labels: int,
    extra: tuple[np.ndarray, np.ndarray] | None,
    options: TrainOptions,
) -> _Fitted:
    x, target = vectors, y
    if extra is not None:
        x, target = np.vstack([vectors, extra[0]]), np.concatenate([y, extra[1]])
    embed = _full_coef(
        _logistic(x, target, options.embed_c, options.max_iter), n_labels, x.shape[1]
    )
    lexical = None
    if options.lexical:
        vectorizer = LexicalVectorizer.fit(texts)
        rows = to_csr(vectorizer.transform(texts), vectorizer.size)
        model = _logistic(rows, y, options.lexical_c, options.max_iter)
        lexical = (vectorizer, *_full_coef(model, n_labels, vectorizer.size))
    return _Fitted(embed, lexical)


def _fold_logp(
    fitted: _Fitted, texts: Sequence[str], vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    from mailbot.classify.lexical import sparse_logits

    embed = log_softmax(vectors @ fitted.embed[0].T + fitted.embed[1])
    if fitted.lexical is None:
        return embed, None
    vectorizer, weights, bias = fitted.lexical
    rows = vectorizer.transform(texts)
    return embed, log_softmax(sparse_logits(rows, np.ascontiguousarray(weights.T), bias))


def train_head(
    name: str,
    texts: Sequence[str],
    labels: Sequence[str],
    vectors: np.ndarray,
    *,
    label_vectors: dict[str, np.ndarray] | None = None,
    options: TrainOptions = DEFAULT_OPTIONS,
    progress: Progress = _quiet_progress,
    calibration_rows: np.ndarray | None = None,
) -> Head:
    """Train a calibrated head on embedded examples; `label_vectors` adds label-name examples.

    `calibration_rows` (a boolean mask) names the examples whose labels are trusted enough
    to calibrate the confidence on (at least MIN_CALIBRATION_ROWS of them; else all rows).
    """
    started = time.monotonic()
    counts = Counter(labels)
    if len(counts) < 2:
        raise TrainingDataError(
            f"training a {name} head needs at least two labels, got {len(counts)}"
        )
    thin = sorted(label for label, count in counts.items() if count < 2)
    if thin:
        raise TrainingDataError(
            f"every label needs at least 2 examples; too few for: {', '.join(thin[:10])}"
        )
    label_list = tuple(sorted(counts))
    index = {label: i for i, label in enumerate(label_list)}
    y = np.array([index[label] for label in labels])
    vectors = np.asarray(vectors, np.float32)
    extra = None
    if label_vectors:
        known = [label for label in label_list if label in label_vectors]
        extra = (
            np.stack([label_vectors[label] for label in known]).astype(np.float32),
            np.array([index[label] for label in known]),
        )

    folds = min(options.folds, min(counts.values()))
    from sklearn.model_selection import StratifiedKFold

    n = len(texts)
    embed_oof = np.zeros((n, len(label_list)), np.float32)
    lexical_oof = np.zeros_like(embed_oof)
    similarity = np.zeros(n, np.float32)
    distances = np.zeros((n, 2), np.float32)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=options.seed)
    splits = list(splitter.split(np.zeros(n), y))
    for fold, (train_idx, val_idx) in enumerate(splits, start=1):
        progress(f"{name}: calibration fold {fold}/{folds} ({len(train_idx)} examples)")
        fold_texts = [texts[i] for i in train_idx]
        fitted = _fit(fold_texts, y[train_idx], vectors[train_idx], len(label_list), extra, options)
        embed_lp, lexical_lp = _fold_logp(fitted, [texts[i] for i in val_idx], vectors[val_idx])
        embed_oof[val_idx] = embed_lp
        if lexical_lp is not None:
            lexical_oof[val_idx] = lexical_lp
        similarity[val_idx] = knn_similarity(vectors[val_idx], vectors[train_idx])
        if name == "intent":
            geometry = Geometry.fit(vectors[train_idx], y[train_idx], len(label_list))
            distances[val_idx] = np.stack(geometry.distances(vectors[val_idx]), axis=1)

    mix = choose_mix(embed_oof, lexical_oof, y) if options.lexical else 1.0
    combined = mix * embed_oof + (1 - mix) * lexical_oof
    enough = calibration_rows is not None and calibration_rows.sum() >= MIN_CALIBRATION_ROWS
    trusted = (calibration_rows if enough and calibration_rows is not None
               else np.ones(n, bool))
    # Fitted on the rows whose labels are trusted: fitted on noisy labels (the cloud model
    # is wrong now and then), the confidence learns to doubt right answers too.
    temperature = fit_temperature(combined[trusted], y[trusted])
    oof_probs = softmax(combined / temperature)
    oof_oos = np.sort(oos_scores(oof_probs, similarity))
    oos_model = None
    if name == "intent" and options.out_of_scope and len(label_list) >= MIN_LABELS:
        oos_model, in_scope = _fit_out_of_scope(
            vectors, y, len(label_list), splits, embed_oof, oof_probs, distances, similarity,
            options, progress, name,
        )
        oof_oos = np.sort(in_scope)

    progress(f"{name}: final fit on {n} examples")
    fitted = _fit(texts, y, vectors, len(label_list), extra, options)
    lexical = fitted.lexical
    metrics = {
        "examples": n,
        "labels": len(label_list),
        "folds": folds,
        "cv_accuracy": round(float((oof_probs.argmax(axis=1) == y).mean()), 4),
        "cv_ece": round(expected_calibration_error(oof_probs, y), 4),
        "cv_ece_uncalibrated": round(expected_calibration_error(softmax(combined), y), 4),
        "mix": mix,
        "temperature": round(temperature, 4),
        "calibration_rows": int(trusted.sum()),
        "train_seconds": round(time.monotonic() - started, 1),
    }
    log.info("trained %s head: %s", name, metrics)
    return Head(
        name=name,
        labels=label_list,
        embed_weights=fitted.embed[0],
        embed_bias=fitted.embed[1],
        lexical=lexical[0] if lexical else None,
        lexical_weights=lexical[1] if lexical else None,
        lexical_bias=lexical[2] if lexical else None,
        mix=mix,
        temperature=temperature,
        reference=vectors,
        oos_calibration=oof_oos.astype(np.float32),
        metrics=metrics,
        oos_model=oos_model,
    )


def _fit_out_of_scope(
    vectors: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    splits: list[tuple[np.ndarray, np.ndarray]],
    embed_oof: np.ndarray,
    head_oof: np.ndarray,
    distances: np.ndarray,
    similarity: np.ndarray,
    options: TrainOptions,
    progress: Progress,
    name: str,
) -> tuple[OutOfScopeModel, np.ndarray]:
    """The fused out-of-scope model, and its scores of the held-out in-scope examples.

    The fusion's weights are learnt on embedding-only heads (fitting the lexical half for
    every left-out group would multiply the training time), but it is applied to the
    head's final probability, embedding and lexical halves mixed: on small seed sets the
    lexical half knows best that a poem request has none of the support vocabulary. The
    threshold is calibrated on the same final probabilities, held out, so the two agree.
    """

    def fit_head(x: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # These heads only show how unknown intents look to the scores; capping the
        # iterations keeps the extra fits to a fraction of the training time.
        fitted = _logistic(x, labels, options.embed_c, min(options.max_iter, 300))
        return _full_coef(fitted, k, x.shape[1])

    embed_temperature = fit_temperature(embed_oof, y)
    progress(f"{name}: out-of-scope fusion, leaving groups of intents out ({len(splits)} fits)")
    matrix, targets = leave_groups_out(
        vectors, y, n_labels, splits, fit_head, embed_temperature, options.seed
    )
    offset, scale, weights, bias = fit_fusion(matrix, targets)
    p = np.clip(head_oof.max(axis=1), 1e-6, 1 - 1e-6)
    in_scope_features = np.column_stack(
        [np.log(p) - np.log1p(-p), distances[:, 0], distances[:, 1], similarity]
    ).astype(np.float32)
    model = OutOfScopeModel(
        geometry=Geometry.fit(vectors, y, n_labels),
        embed_temperature=embed_temperature,
        offset=offset,
        scale=scale,
        weights=weights,
        bias=bias,
    )
    log.info(
        "%s out-of-scope fusion weights: %s",
        name,
        dict(zip(FEATURES, np.round(weights, 3).tolist(), strict=True)),
    )
    return model, model.fused(in_scope_features)
