"""Redaction recall: how many emails, phones, cards and IBANs would reach a cloud model.

    .venv/bin/python bench/redact_recall.py [FILE.jsonl ...] [--errors]

Default set: tests/data/privacy/*.jsonl (support messages written for this project in
en, de, fr, es, it, nl and pt; each record lists its `secrets` as written and the order
ids, amounts and dates it `keep`s). A secret counts as leaked when it is still written in
the redacted text, when four of its consecutive digits can be read there, or (emails) when
its local part can. Also counts the kept numbers lost with order ids left unredacted, and
prints the time per redaction against plain extraction of the same texts, and the CPU.
Target: no leak.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailbot.config import config_from_dict  # noqa: E402
from mailbot.privacy import Pseudonymiser  # noqa: E402

NO_ORDER = {"fields": {"redact": ["PERSON", "EMAIL", "PHONE", "IBAN", "CARD", "ADDRESS"]}}


def leaked(secret: dict, redacted: str, keep: list[str]) -> bool:
    """True when any of `secret` can still be read in `redacted`."""
    value = secret["value"]
    if value in redacted:
        return True
    digits = re.sub(r"\D", "", value)
    kept = [re.sub(r"\D", "", k) for k in keep]
    runs = [re.sub(r"\D", "", m.group()) for m in re.finditer(r"\d(?:[ .\-/()]{0,3}\d)*", redacted)]
    for i in range(len(digits) - 3):
        window = digits[i : i + 4]
        if any(window in r for r in runs) and not any(window in k for k in kept):
            return True
    if secret["kind"] == "email":
        local = re.split(r"\s*(?:@|[(\[{]\s*at\s*[)\]}]|\sat\s)\s*", value)[0]
        return local in redacted
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--errors", action="store_true", help="List every leak.")
    args = parser.parse_args()
    files = args.files or sorted((ROOT / "tests" / "data" / "privacy").glob("*.jsonl"))
    records = [json.loads(line) for f in files for line in f.read_text("utf-8").split("\n") if line]
    total: Counter[str] = Counter()
    leaks: Counter[str] = Counter()
    lost = kept = 0
    errors = []
    started = time.perf_counter()
    for record in records:
        redacted = Pseudonymiser().redact(record["text"]).redacted
        for secret in record["secrets"]:
            total[secret["kind"]] += 1
            if leaked(secret, redacted, record["keep"]):
                leaks[secret["kind"]] += 1
                errors.append(f"{record['id']:<28} {secret['kind']:<6} {secret['value']}")
        readable = Pseudonymiser.from_config(config_from_dict(NO_ORDER)).redact(record["text"])
        kept += len(record["keep"])
        lost += sum(value not in readable.redacted for value in record["keep"])
    elapsed = time.perf_counter() - started
    # Baseline in the same run: plain extraction of the same texts, which is what redaction
    # did before it tried every language's regions and the loose recognisers.
    from mailbot.fields import RuleExtractor, build_schema

    schema, extractor = build_schema(), RuleExtractor()
    base_started = time.perf_counter()
    for record in records:
        extractor.extract(record["text"], schema)
    baseline = (time.perf_counter() - base_started) / len(records)
    print(f"{'kind':<8}{'items':>7}{'leaked':>8}")
    for kind in sorted(total):
        print(f"{kind:<8}{total[kind]:>7}{leaks[kind]:>8}")
    print(f"{'ALL':<8}{sum(total.values()):>7}{sum(leaks.values()):>8}")
    print(f"\norder ids, amounts and dates lost with ORDER off: {lost} of {kept}")
    # Two redactions per record (default and ORDER off).
    per_message = 1000 * elapsed / (2 * len(records))
    from mailbot.engine.runtime import cpu_summary

    print(f"{len(records)} messages, {per_message:.1f} ms per redaction, "
          f"{1000 * baseline:.1f} ms per extraction ({per_message / 1000 / baseline:.2f}x)")
    print(cpu_summary())
    if args.errors:
        print("\n".join(errors))
    return 0


if __name__ == "__main__":
    sys.exit(main())
