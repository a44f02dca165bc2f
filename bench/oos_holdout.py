"""Out-of-scope detection on BANKING77 with intents held out: the fused score against the
mixed score it replaced, on the same heads, encoder and held-out choices.

For each seed, the N intents `mailbot eval intent --holdout-intents N` would hold out are
removed from training; their test rows must be flagged. The out-of-scope figures depend only
on the embedding side of the head, so the head is trained without its lexical half here
(a fraction of the time); `in_scope_accuracy` is that of the embedding half alone.
Usage: bench/oos_holdout.py [--data DIR] [--holdout 10] [--seeds 3] [--models DIR]
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


def main() -> None:
    from mailbot.classify.data import read_labeled_csv
    from mailbot.classify.evaluate import auroc, fpr_at_recall, held_out_intents
    from mailbot.classify.head import oos_scores
    from mailbot.classify.oos import knn_similarity
    from mailbot.classify.store import embed_texts
    from mailbot.classify.train import TrainOptions, train_head
    from mailbot.config import ModelSettings
    from mailbot.engine import ModelRegistry
    from mailbot.engine.convert import prepare_default_encoder

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/banking77")
    parser.add_argument("--holdout", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--false-rejection", type=float, default=0.05)
    parser.add_argument("--models", type=Path, default=None)
    args = parser.parse_args()
    if not (args.data / "train.csv").is_file():
        raise SystemExit(f"BANKING77 not found at {args.data} (pass --data DIR)")
    models = args.models or Path(tempfile.gettempdir()) / "mailbot-bench-models"
    prepare_default_encoder(models, "all-MiniLM-L6-v2")
    encoder = ModelRegistry(ModelSettings(), models).encoder()
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
            options=TrainOptions(lexical=False, seed=seed),
        )
        seconds = time.monotonic() - started
        is_oos = np.array([label in hidden for label in test.labels])
        prediction = head.predict(test.texts, test_vectors)
        flagged = prediction.out_of_scope > head.oos_threshold(args.false_rejection)
        labels = np.array([head.labels[i] for i in prediction.probabilities.argmax(axis=1)])
        in_scope = ((labels == np.array(test.labels)) & ~flagged)[~is_oos].mean()
        mixed = oos_scores(prediction.probabilities, knn_similarity(test_vectors, head.reference))
        rows.append(
            (
                flagged[is_oos].mean(),
                flagged[~is_oos].mean(),
                auroc(prediction.out_of_scope, is_oos),
                fpr_at_recall(prediction.out_of_scope, is_oos),
                auroc(mixed, is_oos),
                fpr_at_recall(mixed, is_oos),
                in_scope,
                seconds,
            )
        )
        print(
            f"seed {seed}: held out {', '.join(sorted(hidden))}\n"
            f"  fused: oos_recall={rows[-1][0]:.4f} (test false rejection {rows[-1][1]:.4f}) "
            f"auroc={rows[-1][2]:.4f} fpr95={rows[-1][3]:.4f}; mixed score: "
            f"auroc={rows[-1][4]:.4f} fpr95={rows[-1][5]:.4f}; in_scope_accuracy="
            f"{rows[-1][6]:.4f}; training {seconds:.0f} s",
            flush=True,
        )
    table = np.array(rows, dtype=float)
    mean, spread = table.mean(axis=0), table.std(axis=0)
    names = ("oos_recall", "false_rejection", "oos_auroc", "fpr95", "mixed_auroc",
             "mixed_fpr95", "in_scope_accuracy", "train_seconds")
    for name, m, s in zip(names, mean, spread, strict=True):
        print(f"{name}={m:.4f} (spread {s:.4f} over {args.seeds} seeds)")
    print(f"fpr95 ratio fused/mixed: {mean[3] / mean[5]:.2f}x")


if __name__ == "__main__":
    main()
