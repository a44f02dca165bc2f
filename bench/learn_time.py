"""How long training one intent head takes, with and without its character n-gram half.

`mailbot learn` keeps the n-gram half up to `learn.lexical_max_examples` examples; this
prints what that costs. BANKING77 samples of each size (fixed seed), trained as `learn`
trains them: 5-fold calibration, the out-of-scope fusion and the final fit, on one BLAS
thread. Printed per size: seconds with and without the n-gram half, their ratio, and the
cross-validated accuracy of each.
Usage: bench/learn_time.py [--data DIR] [--sizes 2000,5000,10000] [--models DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from mailbot.engine.runtime import cpu_summary as cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from oos_holdout import banking77_encoder  # bench/, beside this script

    from mailbot.classify.classifier import _one_blas_thread
    from mailbot.classify.data import read_labeled_csv
    from mailbot.classify.store import embed_texts
    from mailbot.classify.train import TrainOptions, train_head
    from mailbot.config import LearnSettings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/banking77")
    parser.add_argument("--sizes", default="2000,5000,10000")
    parser.add_argument("--models", type=Path, default=None)
    args = parser.parse_args()
    encoder = banking77_encoder(args.data, args.models)
    train = read_labeled_csv(args.data / "train.csv", "text", "category")
    limit = LearnSettings().lexical_max_examples
    print(f"CPU: {cpu_name()} ({os.cpu_count()} cores); encoder {encoder.name}; "
          f"learn.lexical_max_examples = {limit}")
    vectors = embed_texts(encoder, train.texts, lambda _m: None, "train")
    rng = np.random.default_rng(0)
    for size in (int(s) for s in args.sizes.split(",")):
        rows = rng.choice(len(train.texts), min(size, len(train.texts)), replace=False)
        texts = [train.texts[i] for i in rows]
        labels = [train.labels[i] for i in rows]
        figures = {}
        for lexical in (False, True):
            started = time.monotonic()
            with _one_blas_thread():
                head = train_head("intent", texts, labels, vectors[rows],
                                  options=TrainOptions(lexical=lexical))
            figures[lexical] = (time.monotonic() - started, head.metrics["cv_accuracy"])
        (plain, plain_acc), (full, full_acc) = figures[False], figures[True]
        served = "with" if len(rows) <= limit else "without"
        print(f"{len(rows)} examples: {full:.1f} s with the n-gram half (cv accuracy "
              f"{full_acc:.3f}), {plain:.1f} s without ({plain_acc:.3f}); ratio "
              f"{full / plain:.1f}x; learn trains it {served}", flush=True)


if __name__ == "__main__":
    main()
