"""Intent accuracy per language through the real classifier, for both encoders.

The test set is tests/data/languages/*.jsonl: the same 50 support situations written in
English, German, French, Spanish, Italian, Dutch and Portuguese, labelled with intent. For
each encoder (all-MiniLM-L6-v2, multilingual-e5-small) two sets of seed heads are trained
and each message runs through `Classifier.classify_many` (encoder, lexical + vector heads,
out-of-scope score, language detection):

- all seeds: the packaged seed examples in every language (what a worker serves);
- English seeds: only the English rows, so the other languages measure cross-lingual
  transfer (an encoder that maps "Rücksendung" near "return" needs no German examples).

Printed per language: intent accuracy, its gap to English in the same run, mean intent
confidence, the share that stays on the small model (confidence >= route
min_intent_confidence and in scope), and how often the language is told right. The targets:
every language within 5 points of English with all seeds, and within 10 points with
English seeds only.

    .venv/bin/python bench/languages.py [--encoders all-MiniLM-L6-v2,multilingual-e5-small]
        [--models DIR] [--threads 2]

The encoders are prepared once (offline) in --models, default $MAILBOT_TEST_MODELS or
$TMPDIR/mailbot-bench-models; the seed heads are cached there too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from mailbot.engine.runtime import cpu_summary as cpu_name  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LANGUAGES = ("en", "de", "fr", "es", "it", "nl", "pt")
DATA = ROOT / "tests" / "data" / "languages"
ENCODERS = ("all-MiniLM-L6-v2", "multilingual-e5-small")
TARGET_GAP = 5.0
TARGET_TRANSFER_GAP = 10.0


def load_messages(language: str) -> list[dict[str, str]]:
    """The labelled test messages of one language."""
    path = DATA / f"{language}.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def evaluate(classifier: object, threshold: float) -> dict[str, dict[str, float]]:
    """Accuracy, mean confidence, share kept on the small model and language detection."""
    from mailbot.classify.classifier import message_text

    figures: dict[str, dict[str, float]] = {}
    for language in LANGUAGES:
        messages = load_messages(language)
        texts = [message_text(m["subject"], m["body"]) for m in messages]
        results = []
        for start in range(0, len(texts), 32):
            results.extend(classifier.classify_many(texts[start : start + 32]))  # type: ignore[attr-defined]
        n = len(messages)
        figures[language] = {
            "n": n,
            "accuracy": 100 * sum(r.intent.label == m["intent"]
                                  for r, m in zip(results, messages, strict=True)) / n,
            "confidence": sum(r.intent.confidence for r in results) / n,
            "kept": 100 * sum(r.intent.confidence >= threshold and not r.out_of_scope
                              for r in results) / n,
            "language": 100 * sum(r.language == language for r in results) / n,
        }
    return figures


def run_encoder(name: str, models: Path, threads: int) -> dict[str, dict[str, dict[str, float]]]:
    """Both seed sets for one encoder: {"all": figures, "en": figures}."""
    from mailbot.classify import Classifier, HeadStore
    from mailbot.config import ClassifierSettings, ModelSettings, RouteSettings
    from mailbot.engine import ModelRegistry
    from mailbot.engine.convert import prepare_encoder

    prepare_encoder(models, name)
    encoder = ModelRegistry(ModelSettings(encoder=name, intra_threads=threads), models).encoder()
    threshold = RouteSettings().min_intent_confidence
    out = {}
    for mode, languages in (("all", ()), ("en", ("en",))):
        started = time.perf_counter()
        store = HeadStore(models / "bench-language-heads" / mode, None, seed_languages=languages)
        classifier = Classifier(encoder, store, ClassifierSettings())
        out[mode] = evaluate(classifier, threshold)
        print(f"  {name}, {mode} seeds: {time.perf_counter() - started:.0f} s (training the "
              "seed heads the first time, then classifying)", flush=True)
    return out


def report(name: str, result: dict[str, dict[str, dict[str, float]]]) -> list[str]:
    """Print one encoder's table; return the targets it misses."""
    misses = []
    print(f"\n{name}")
    print(f"{'lang':<5} {'n':>3}  {'acc':>6} {'gap':>6}  {'conf':>5} {'kept':>5}  "
          f"{'acc(en seeds)':>13} {'gap':>6}  {'lang ok':>7}")
    base, base_en = result["all"]["en"]["accuracy"], result["en"]["en"]["accuracy"]
    for language in LANGUAGES:
        row, row_en = result["all"][language], result["en"][language]
        gap, gap_en = row["accuracy"] - base, row_en["accuracy"] - base_en
        print(f"{language:<5} {row['n']:>3.0f}  {row['accuracy']:>5.1f}% {gap:>+6.1f}  "
              f"{row['confidence']:>5.2f} {row['kept']:>4.0f}%  {row_en['accuracy']:>12.1f}% "
              f"{gap_en:>+6.1f}  {row['language']:>6.0f}%")
        if language != "en" and gap < -TARGET_GAP:
            misses.append(f"{name}: {language} is {-gap:.1f} points below English")
        if language != "en" and gap_en < -TARGET_TRANSFER_GAP:
            misses.append(f"{name}: {language} with English seeds is {-gap_en:.1f} points "
                          "below English")
    return misses


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoders", default=",".join(ENCODERS))
    default_models = os.environ.get("MAILBOT_TEST_MODELS") or str(
        Path(tempfile.gettempdir()) / "mailbot-bench-models")
    parser.add_argument("--models", default=default_models)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    models = Path(args.models)
    models.mkdir(parents=True, exist_ok=True)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores, load {load:.1f}; "
          f"{args.threads} encoder threads")
    print("acc: intent accuracy; gap: points against English in the same run; conf: mean "
          "intent confidence; kept: confident and in scope (stays on the small model); "
          "acc(en seeds): heads trained on the English seed rows only")
    misses: list[str] = []
    for name in args.encoders.split(","):
        result = run_encoder(name.strip(), models, args.threads)
        misses += report(name.strip(), result)
    print(f"\ntargets: every language within {TARGET_GAP:.0f} points of English; within "
          f"{TARGET_TRANSFER_GAP:.0f} with English seeds only")
    for miss in misses:
        print("  missed:", miss)
    if not misses:
        print("  all met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
