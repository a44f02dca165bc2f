"""Out-of-scope detection in the embedding space: several scores, fused by a small model.

Each score says in its own way "this is none of the intents we know":

- the calibrated top probability of the embedding head (low: no label is likely);
- the Mahalanobis distance to the nearest intent's mean, under one covariance shared by all
  intents and shrunk towards a multiple of the identity (few examples per intent are enough);
- the relative Mahalanobis distance: the same minus the distance to all the training data
  as one cloud, so that text that is merely unusual everywhere is not counted twice;
- the mean cosine similarity to the nearest training examples.

A logistic regression weighs them. It is fitted without any out-of-scope mail: in
cross-validation, groups of the known intents are left out in turn, the embedding head and
the distances are fitted on the rest, and the left-out intents' examples play the unknown
mail against held-out examples of the intents that stayed. Inference is numpy only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

SHRINKAGE = 0.1  # share of the covariance replaced by its mean variance on the diagonal
KNN = 5
FEATURES = ("top_probability", "mahalanobis", "relative_mahalanobis", "knn_similarity")
MIN_LABELS = 3  # with fewer, leaving a group out leaves too little to fit on

# Fits an embedding head: (vectors, labels 0..k-1, k) -> (weights (k, dim), bias (k,)).
FitHead = Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True, slots=True)
class Geometry:
    """Intent means and the shrunk shared precision matrix, plus the whole cloud's."""

    means: np.ndarray  # (labels, dim)
    precision: np.ndarray  # (dim, dim)
    global_mean: np.ndarray  # (dim,)
    global_precision: np.ndarray  # (dim, dim)

    @classmethod
    def fit(cls, vectors: np.ndarray, y: np.ndarray, n_labels: int) -> Geometry:
        """Means per label present in `y` (absent labels get a far-away mean)."""
        dim = vectors.shape[1]
        means = np.full((n_labels, dim), 1e3, np.float64)
        present = np.unique(y)
        for label in present:
            means[label] = vectors[y == label].mean(axis=0)
        residual = vectors - means[y]
        global_mean = vectors.mean(axis=0)
        centred = vectors - global_mean
        return cls(
            means=means.astype(np.float32),
            precision=_shrunk_inverse(residual.T @ residual / len(vectors)),
            global_mean=global_mean.astype(np.float32),
            global_precision=_shrunk_inverse(centred.T @ centred / len(vectors)),
        )

    def distances(self, vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(min Mahalanobis distance to an intent, that minus the distance to the cloud)."""
        projected = vectors @ self.precision
        squared = (
            (projected * vectors).sum(axis=1)[:, None]
            - 2.0 * projected @ self.means.T
            + ((self.means @ self.precision) * self.means).sum(axis=1)[None, :]
        )
        nearest = squared.min(axis=1)
        centred = vectors - self.global_mean
        background = ((centred @ self.global_precision) * centred).sum(axis=1)
        return nearest, nearest - background


def _shrunk_inverse(covariance: np.ndarray) -> np.ndarray:
    dim = covariance.shape[0]
    target = np.trace(covariance) / dim
    shrunk = (1.0 - SHRINKAGE) * covariance + SHRINKAGE * target * np.eye(dim)
    return np.linalg.inv(shrunk).astype(np.float32)


def knn_similarity(vectors: np.ndarray, reference: np.ndarray, k: int = KNN) -> np.ndarray:
    """Mean cosine similarity of each (unit) vector to its k nearest reference vectors."""
    if len(reference) == 0:
        return np.zeros(len(vectors), np.float32)
    sims = vectors @ reference.T
    k = min(k, reference.shape[0])
    return np.partition(sims, -k, axis=1)[:, -k:].mean(axis=1)


def features(
    top_probability: np.ndarray, geometry: Geometry, vectors: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """The (n, 4) score matrix in FEATURES order."""
    p = np.clip(top_probability, 1e-6, 1 - 1e-6)
    mahalanobis, relative = geometry.distances(vectors)
    return np.stack(
        [np.log(p) - np.log1p(-p), mahalanobis, relative, knn_similarity(vectors, reference)],
        axis=1,
    ).astype(np.float32)


@dataclass(frozen=True, slots=True)
class OutOfScopeModel:
    """The fitted fusion: standardisation, weights and the geometry of the training data."""

    geometry: Geometry
    embed_temperature: float
    offset: np.ndarray  # (features,)
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    # Whether the top-probability score is the head's final calibrated probability (the
    # embedding and lexical halves mixed) or, in heads saved before, the embedding half's.
    top_from_head: bool = True

    def scores(
        self,
        embed_logits: np.ndarray,
        probabilities: np.ndarray,
        vectors: np.ndarray,
        reference: np.ndarray,
    ) -> np.ndarray:
        """Out-of-scope scores in 0..1 (higher: more likely none of the intents)."""
        if self.top_from_head:
            top = probabilities.max(axis=1)
        else:
            top = _top_probability(embed_logits, self.embed_temperature)
        return self.fused(features(top, self.geometry, vectors, reference))

    def fused(self, matrix: np.ndarray) -> np.ndarray:
        """The fusion's probability of being out of scope, from a feature matrix."""
        z = ((matrix - self.offset) / self.scale) @ self.weights + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))).astype(np.float32)

    def arrays(self) -> dict[str, np.ndarray]:
        """What `Head.save` writes, prefixed "oos_"."""
        g = self.geometry
        return {
            "oos_means": g.means,
            "oos_precision": g.precision,
            "oos_global_mean": g.global_mean,
            "oos_global_precision": g.global_precision,
            "oos_fusion": np.concatenate(
                [[self.embed_temperature, self.bias], self.offset, self.scale, self.weights]
            ).astype(np.float64),
            "oos_top_from_head": np.array([self.top_from_head]),
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> OutOfScopeModel | None:
        """The model `arrays` saved, or None for a head saved without one."""
        if "oos_fusion" not in arrays:
            return None
        packed = arrays["oos_fusion"]
        n = len(FEATURES)
        return cls(
            geometry=Geometry(
                arrays["oos_means"],
                arrays["oos_precision"],
                arrays["oos_global_mean"],
                arrays["oos_global_precision"],
            ),
            embed_temperature=float(packed[0]),
            bias=float(packed[1]),
            offset=packed[2 : 2 + n],
            scale=packed[2 + n : 2 + 2 * n],
            weights=packed[2 + 2 * n : 2 + 3 * n],
            top_from_head=bool(arrays.get("oos_top_from_head", np.array([False]))[0]),
        )


def _top_probability(logits: np.ndarray, temperature: float) -> np.ndarray:
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    return 1.0 / np.exp(z).sum(axis=1)  # the top one's exp(0) over the sum


def leave_groups_out(
    vectors: np.ndarray,
    y: np.ndarray,
    n_labels: int,
    folds: list[tuple[np.ndarray, np.ndarray]],
    fit_head: FitHead,
    embed_temperature: float,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Feature rows and targets (1: an intent the fitted parts never saw) for the fusion.

    Group g of the intents is left out of fold g's training rows; that fold's held-out rows
    of the other intents are the in-scope side, every example of group g the unknown side.
    """
    rng = np.random.default_rng(seed)
    groups = np.array_split(rng.permutation(n_labels), len(folds))
    rows, targets = [], []
    for group, (train_idx, val_idx) in zip(groups, folds, strict=True):
        left_out = np.isin(y, group)
        fit_idx = train_idx[~left_out[train_idx]]
        kept = np.unique(y[fit_idx])
        if len(kept) < 2 or len(group) == 0:
            continue
        sub_y = np.searchsorted(kept, y[fit_idx])
        weights, bias = fit_head(vectors[fit_idx], sub_y, len(kept))
        geometry = Geometry.fit(vectors[fit_idx], sub_y, len(kept))
        for idx, target in ((val_idx[~left_out[val_idx]], 0), (np.flatnonzero(left_out), 1)):
            logits = vectors[idx] @ weights.T + bias
            top = _top_probability(logits, embed_temperature)
            rows.append(features(top, geometry, vectors[idx], vectors[fit_idx]))
            targets.append(np.full(len(idx), target))
    if not rows:
        return np.zeros((0, len(FEATURES)), np.float32), np.zeros(0, int)
    return np.vstack(rows), np.concatenate(targets)


def fit_fusion(
    matrix: np.ndarray, targets: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(offset, scale, weights, bias) of a balanced logistic regression on the features."""
    from sklearn.linear_model import LogisticRegression

    offset = matrix.mean(axis=0)
    scale = matrix.std(axis=0) + 1e-6
    model = LogisticRegression(C=1.0, class_weight="balanced", max_iter=1000)
    model.fit((matrix - offset) / scale, targets)
    return offset, scale, model.coef_[0].astype(np.float64), float(model.intercept_[0])
