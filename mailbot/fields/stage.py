"""The extract stage: order numbers, amounts, dates and contacts, and what the intent needs
but the customer did not give."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mailbot.fields.extract import extract_message
from mailbot.pipeline.case import Case, Step

if TYPE_CHECKING:
    from mailbot.fields.generator import GeneratorExtractor
    from mailbot.fields.result import Extraction
    from mailbot.fields.schema import FieldSchema


def extraction_summary(extraction: Extraction) -> dict[str, Any]:
    """What the audit log keeps of an extraction: which fields, where and how sure, but not
    the values (they are personal data, kept in `message_facts`)."""
    return {
        "fields": {name: [{"type": v.type, "span": list(v.span),
                           "confidence": round(v.confidence, 3)} for v in values]
                   for name, values in extraction.fields.items()},
        "missing": list(extraction.missing),
        # A generator's reason may quote the text ("the rules read this as card_number ...").
        "rejected": [{"name": r.name, "span": list(r.span), "reason": r.to_json()["reason"]}
                     for r in extraction.rejected],
    }


class ExtractStage:
    """Extracts the schema's fields with the deterministic recognisers (and, with
    `fields.use_generator`, the generator's validated JSON)."""

    name = "extract"

    def __init__(self, schema: FieldSchema, generator_extractor: GeneratorExtractor | None = None
                 ) -> None:
        self.schema = schema
        self.generator_extractor = generator_extractor

    def run(self, case: Case) -> Step:
        message = case.parsed()
        intent = case.classification.intent.label if case.classification is not None else None
        report = None
        if self.generator_extractor is None:
            _, extraction = extract_message(message, self.schema, intent=intent)
        else:
            names = [message.from_addr.name] if message.from_addr and message.from_addr.name else []
            extraction, report = self.generator_extractor.extract_with_report(
                message.text_with_signature, self.schema, intent=intent, reference=message.date,
                known_names=names)
        details = extraction_summary(extraction)
        facts = {"extraction": extraction.to_json()}
        done = case.with_(extraction=extraction)
        if report is None:
            return Step(done, "ok", details=details, facts=facts)
        details["generator"] = {"model": report.model, "retried": report.retried,
                                "reason": report.reason, "added": len(report.added),
                                "confirmed": len(report.confirmed), "dropped": len(report.dropped)}
        facts["generator_extraction"] = report.to_json()
        return Step(done, "ok", details=details, facts=facts, model=report.model,
                    model_version=report.model_version, tokens_in=report.prompt_tokens,
                    tokens_out=report.generated_tokens)
