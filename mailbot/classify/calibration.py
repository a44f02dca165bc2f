"""Calibration: temperature scaling, ensemble weighting and expected calibration error."""

from __future__ import annotations

import numpy as np

from mailbot.classify.head import log_softmax

MIX_GRID = tuple(round(0.1 * i, 1) for i in range(11))


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of the true labels."""
    return float(-log_softmax(logits / temperature)[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature that minimises held-out NLL (a golden-section search over log T)."""
    low, high = np.log(0.05), np.log(20.0)
    ratio = (np.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(logits, y, np.exp(a)), nll(logits, y, np.exp(b))
    for _ in range(40):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(logits, y, np.exp(a))
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(logits, y, np.exp(b))
    return float(np.exp((low + high) / 2))


def choose_mix(embed_logp: np.ndarray, lexical_logp: np.ndarray, y: np.ndarray) -> float:
    """The embedding-head weight with the best held-out accuracy (NLL breaks ties)."""
    best: tuple[float, float, float] | None = None
    for mix in MIX_GRID:
        z = mix * embed_logp + (1 - mix) * lexical_logp
        accuracy = float((z.argmax(axis=1) == y).mean())
        key = (accuracy, -nll(z, y, fit_temperature(z, y)), mix)
        if best is None or key > best:
            best = key
    assert best is not None
    return best[2]


def expected_calibration_error(probabilities: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """ECE: the gap between confidence and accuracy, averaged over confidence bins."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == y
    edges = np.linspace(0.0, 1.0, bins + 1)
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        inside = (confidence > lo) & (confidence <= hi)
        if inside.any():
            total += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(total)
