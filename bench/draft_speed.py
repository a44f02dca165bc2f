"""Template drafting throughput: mailbot's draft path against a bare baseline, same process.

mailbot: the real draft stage: choose the intent's template, render it in the sandboxed Jinja2
environment with the extracted fields, run the safety checks on the body, and build the
threaded MIME reply. Baseline: a reply text from `str.format` with the same MIME construction.
Parsing, classification and extraction are done once up front and are not timed (they have
their own benches).

    .venv/bin/python bench/draft_speed.py [--rounds 40]

Target: the template path stays above 100 emails/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mailbot.classify.result import Classification, LabelScore  # noqa: E402
from mailbot.compose.mime import build_reply, new_message_id, reply_subject  # noqa: E402
from mailbot.compose.stage import ComposeStage  # noqa: E402
from mailbot.config import (
    FieldSettings,  # noqa: E402
    config_from_dict,  # noqa: E402
)
from mailbot.fields import RuleExtractor, build_schema, extract_message  # noqa: E402
from mailbot.parse.message import Address  # noqa: E402
from mailbot.parse.mime import parse_message  # noqa: E402
from mailbot.pipeline.case import Case  # noqa: E402
from mailbot.resources import data_dir  # noqa: E402

INTENTS = {
    "01_order_status.eml": "order_status", "02_refund_request.eml": "refund",
    "03_cancellation.eml": "cancellation", "04_double_charge.eml": "billing",
    "05_address_change.eml": "shipping", "06_login_problem.eml": "account_access",
    "07_app_crash.eml": "technical_problem", "08_product_question.eml": "product_question",
    "10_feedback_praise.eml": "feedback", "16_spanish_order.eml": "order_status",
}  # fmt: skip

BASELINE = ("Hello {name},\n\nThank you for getting in touch about order {order}. We are "
            "looking into it and will get back to you shortly.\n\n{signature}\n")


def _classification(intent: str) -> Classification:
    def score(label: str) -> LabelScore:
        return LabelScore(label, 0.95, None, 0.0)

    return Classification(intent=score(intent), priority=score("normal"),
                          sentiment=score("neutral"), language="en", out_of_scope_score=0.0,
                          out_of_scope=False, model="bench", model_version="0",
                          head_version="0", truncated=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="passes over the samples")
    args = parser.parse_args()
    schema = build_schema(FieldSettings())
    cases = []
    for name, intent in INTENTS.items():
        message = parse_message((data_dir() / "samples" / name).read_bytes())
        _, extraction = extract_message(message, schema, intent=intent, extractor=RuleExtractor())
        cases.append((message, intent, extraction))
    sender = Address("Support", "support@shop.example.com")
    signature = "Kind regards,\nSupport"
    stage = ComposeStage(config_from_dict({"drafts": {"signature": signature}}))
    items = [Case(message_pk=0, raw=b"", message=message, extraction=extraction,
                  classification=_classification(intent))
             for message, intent, extraction in cases]

    def mailbot_drafts() -> int:
        return sum(stage.run(item).outcome == "ok" for item in items)

    def baseline_drafts() -> int:
        for message, _, extraction in cases:
            order = extraction.fields.get("order_id")
            body = BASELINE.format(name=message.from_addr.name if message.from_addr else "there",
                                   order=order[0].value if order else "-",
                                   signature=signature)
            build_reply(sender=sender, to=message.reply_address or sender,
                        subject=reply_subject(message.subject), body=body,
                        message_id=new_message_id(sender.email),
                        in_reply_to=message.message_id, references=message.references,
                        token="0" * 32)
        return len(cases)

    made = mailbot_drafts()  # also warms the template cache, as a running worker has it
    if made != len(items):
        sys.exit(f"only {made} of {len(items)} samples were drafted")
    timings = {}
    for label, run in (("baseline str.format + MIME", baseline_drafts),
                       ("mailbot  draft stage", mailbot_drafts)):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            count = sum(run() for _ in range(args.rounds))
            best = min(best, time.perf_counter() - started)
        timings[label] = count / best
        print(f"{label}: {count / best:8.0f} emails/s")
    rate = timings["mailbot  draft stage"]
    baseline = timings["baseline str.format + MIME"]
    print(f"ratio    mailbot / baseline:         {rate / baseline:8.2f}")
    print(f"target   >= 100 emails/s: {'met' if rate >= 100 else 'NOT met'}")


if __name__ == "__main__":
    main()
