"""Field extraction quality: precision and recall per field and overall on a labelled set.

    .venv/bin/python bench/extract_quality.py [FILE.jsonl ...] [--errors] [--json]

Default set: tests/data/extraction/*.jsonl (support emails written for this project, in
English, German, French, Spanish, Italian, Dutch and Portuguese). Each record is
{"id", "text", "date", "intent"?, "gold": {field: [values]}, "rejected"?: [fields]}.
Also prints how many of the values that must be rejected (bad check digits) were, and the
time per message and the CPU. Targets on the default set: precision >= 0.98, recall >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mailbot.fields.evaluate import evaluate, load_records  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="*", type=Path)
    parser.add_argument("--errors", action="store_true", help="List every miss and false find.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    args = parser.parse_args()
    files = args.files or sorted((ROOT / "tests" / "data" / "extraction").glob("*.jsonl"))
    records = [r for f in files for r in load_records(f)]
    started = time.perf_counter()
    report = evaluate(records)
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps({**report.to_json(), "ms_per_record": 1000 * elapsed / len(records)}))
        return 0
    print(f"{'field':<18}{'tp':>5}{'fp':>5}{'fn':>5}{'precision':>11}{'recall':>8}")
    figures = report.to_json()
    for name, row in [*figures["fields"].items(), ("OVERALL", figures["overall"])]:
        print(
            f"{name:<18}{row['tp']:>5}{row['fp']:>5}{row['fn']:>5}"
            f"{row['precision']:>11.3f}{row['recall']:>8.3f}"
        )
    rejected = figures["rejected"]
    print(f"\nrejected as invalid: {rejected['found']} of {rejected['expected']} expected")
    print(f"{len(records)} records, {1000 * elapsed / len(records):.1f} ms per record")
    from mailbot.engine.runtime import cpu_summary

    print(cpu_summary())
    if args.errors:
        for m in report.mismatches:
            print(f"{m.kind} {m.record:<22} {m.field:<16} {m.value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
