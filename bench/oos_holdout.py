"""Out-of-scope detection on BANKING77 with intents held out: the fused score against the
mixed score it replaced, on the same heads, encoder and held-out choices.

For each seed, the N intents `mailbot eval intent --holdout-intents N` would hold out are
removed from training; their test rows must be flagged. By default the head is trained
without its lexical half (a fraction of the time) and `in_scope_accuracy` is that of the
embedding half alone; `--lexical` trains the head as a worker serves it, whose final
probability (both halves mixed) is one of the fused scores.

`bound=` is what no fusion of these scores can beat by much: a logistic regression over the
four fused scores and five more (nearest-neighbour similarity at k=1, to the top label's
examples only, entropy, energy, top-two margin), fitted on the test rows' own out-of-scope
labels (5-fold cross-validated) and read at exactly 5% test false rejection. When it is
below the target, a better fusion cannot reach it; the embedding space must change.
Usage: bench/oos_holdout.py [--data DIR] [--holdout 10] [--seeds 3] [--models DIR] [--lexical]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from mailbot.engine.runtime import cpu_summary as cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def fusion_bound(head, prediction, vectors: np.ndarray, train_y: np.ndarray,  # type: ignore[no-untyped-def]
                 is_oos: np.ndarray, false_rejection: float) -> float:
    """Out-of-scope recall at exactly `false_rejection` of a fusion fitted on the test rows'
    own labels (cross-validated): an upper bound for any fusion of these scores."""
    from scipy.special import logsumexp
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from mailbot.classify.oos import features

    probs = prediction.probabilities
    base = features(probs.max(axis=1), head.oos_model.geometry, vectors, head.reference)
    sims = vectors @ head.reference.T
    nearest = sims.max(axis=1)
    top = probs.argmax(axis=1)
    in_top = np.array([np.sort(sims[i, train_y == top[i]])[-5:].mean()
                       for i in range(len(vectors))])
    energy = logsumexp(vectors @ head.embed_weights.T + head.embed_bias, axis=1)
    ranked = np.sort(probs, axis=1)
    entropy = -(probs * np.log(probs + 1e-12)).sum(axis=1)
    matrix = np.column_stack([base, nearest, in_top, entropy, energy,
                              ranked[:, -1] - ranked[:, -2]])
    matrix = (matrix - matrix.mean(axis=0)) / (matrix.std(axis=0) + 1e-9)
    score = cross_val_predict(
        LogisticRegression(max_iter=2000, class_weight="balanced"), matrix, is_oos,
        cv=StratifiedKFold(5, shuffle=True, random_state=0), method="predict_proba")[:, 1]
    cut = np.quantile(score[~is_oos], 1.0 - false_rejection)
    return float((score[is_oos] > cut).mean())


def banking77_encoder(data: Path, models: Path | None):  # type: ignore[no-untyped-def]
    """The default encoder, prepared offline in `models` (default: the benches' cache), once
    BANKING77 is found at `data`."""
    from mailbot.config import ModelSettings
    from mailbot.engine import ModelRegistry
    from mailbot.engine.convert import prepare_default_encoder

    if not (data / "train.csv").is_file():
        raise SystemExit(f"BANKING77 not found at {data} (pass --data DIR)")
    models = models or Path(tempfile.gettempdir()) / "mailbot-bench-models"
    prepare_default_encoder(models, "all-MiniLM-L6-v2")
    return ModelRegistry(ModelSettings(), models).encoder()


def main() -> None:
    from mailbot.classify.data import read_labeled_csv
    from mailbot.classify.evaluate import auroc, fpr_at_recall, held_out_intents
    from mailbot.classify.head import oos_scores
    from mailbot.classify.oos import knn_similarity
    from mailbot.classify.store import embed_texts
    from mailbot.classify.train import TrainOptions, train_head

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/banking77")
    parser.add_argument("--holdout", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--false-rejection", type=float, default=0.05)
    parser.add_argument("--models", type=Path, default=None)
    parser.add_argument("--lexical", action="store_true",
                        help="train the head with its lexical half, as served")
    args = parser.parse_args()
    encoder = banking77_encoder(args.data, args.models)
    train = read_labeled_csv(args.data / "train.csv", "text", "category")
    test = read_labeled_csv(args.data / "test.csv", "text", "category")
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); encoder {encoder.name}")
    quiet = lambda _m: None  # noqa: E731
    train_vectors = embed_texts(encoder, train.texts, quiet, "train")
    test_vectors = embed_texts(encoder, test.texts, quiet, "test")
    rows = []
    for seed in range(args.seeds):
        hidden = set(held_out_intents(train.labels, args.holdout, seed))
        keep = [i for i, label in enumerate(train.labels) if label not in hidden]
        started = time.monotonic()
        head = train_head(
            "intent",
            [train.texts[i] for i in keep],
            [train.labels[i] for i in keep],
            train_vectors[keep],
            options=TrainOptions(lexical=args.lexical, seed=seed),
        )
        seconds = time.monotonic() - started
        is_oos = np.array([label in hidden for label in test.labels])
        prediction = head.predict(test.texts, test_vectors)
        flagged = prediction.out_of_scope > head.oos_threshold(args.false_rejection)
        labels = np.array([head.labels[i] for i in prediction.probabilities.argmax(axis=1)])
        in_scope = ((labels == np.array(test.labels)) & ~flagged)[~is_oos].mean()
        mixed = oos_scores(prediction.probabilities, knn_similarity(test_vectors, head.reference))
        index = {label: i for i, label in enumerate(head.labels)}
        train_y = np.array([index[train.labels[i]] for i in keep])
        bound = fusion_bound(head, prediction, test_vectors, train_y, is_oos,
                             args.false_rejection)
        rows.append(
            (
                flagged[is_oos].mean(),
                flagged[~is_oos].mean(),
                auroc(prediction.out_of_scope, is_oos),
                fpr_at_recall(prediction.out_of_scope, is_oos),
                auroc(mixed, is_oos),
                fpr_at_recall(mixed, is_oos),
                in_scope,
                bound,
                seconds,
            )
        )
        print(
            f"seed {seed}: held out {', '.join(sorted(hidden))}\n"
            f"  fused: oos_recall={rows[-1][0]:.4f} (test false rejection {rows[-1][1]:.4f}) "
            f"auroc={rows[-1][2]:.4f} fpr95={rows[-1][3]:.4f}; mixed score: "
            f"auroc={rows[-1][4]:.4f} fpr95={rows[-1][5]:.4f}; in_scope_accuracy="
            f"{rows[-1][6]:.4f}; bound={bound:.4f}; training {seconds:.0f} s",
            flush=True,
        )
    table = np.array(rows, dtype=float)
    mean, spread = table.mean(axis=0), table.std(axis=0)
    names = ("oos_recall", "false_rejection", "oos_auroc", "fpr95", "mixed_auroc",
             "mixed_fpr95", "in_scope_accuracy", "bound", "train_seconds")
    for name, m, s in zip(names, mean, spread, strict=True):
        print(f"{name}={m:.4f} (spread {s:.4f} over {args.seeds} seeds)")
    print(f"fpr95 ratio fused/mixed: {mean[3] / mean[5]:.2f}x")


if __name__ == "__main__":
    main()
