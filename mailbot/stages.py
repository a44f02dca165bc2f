"""The pipeline's stages: parse, classify (extract, route and draft plug in after them).

Each stage takes what earlier stages produced (`item.results[...]`) and returns a
`StageResult`; none touches the network or the database itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailbot.cost import cpu_cost
from mailbot.db.models import MessageStatus
from mailbot.errors import ParseError
from mailbot.pipeline import StageResult, WorkItem

if TYPE_CHECKING:
    from mailbot.classify import Classifier
    from mailbot.config import Config


class ParseStage:
    """Raw bytes to `InboundMessage`; auto-replies and unparsable mail stop here."""

    name = "parse"

    def run(self, item: WorkItem) -> StageResult:
        from mailbot.parse import parse_message

        try:
            message = parse_message(item.raw)
        except ParseError as exc:
            return StageResult(
                "error", status=MessageStatus.FAILED, reason=f"parse error: {exc}", stop=True,
                details={"error": str(exc)},
            )
        sender = message.from_addr.email if message.from_addr else None
        updates = {"subject": message.subject, "sender": sender}
        if message.message_id:
            updates["message_id"] = message.message_id
        details: dict[str, Any] = {
            "message_id": message.message_id,
            "body_source": message.body_source,
            "attachments": len(message.attachments),
            "defects": list(message.defects),
        }
        if message.auto_reply:
            return StageResult(
                "skipped", value=message, status=MessageStatus.SKIPPED,
                reason=f"no automatic reply: {message.auto_reply}", stop=True,
                details={**details, "auto_reply": message.auto_reply}, message_updates=updates,
            )
        return StageResult(
            "ok", value=message, status=MessageStatus.PARSED, details=details,
            message_updates=updates,
        )


class ClassifyStage:
    """Intent, priority, sentiment, language and out-of-scope score on the small model."""

    name = "classify"

    def __init__(self, classifier: Classifier, cpu_hour_price: float = 0.0) -> None:
        self.classifier = classifier
        self.cpu_hour_price = cpu_hour_price

    def run(self, item: WorkItem) -> StageResult:
        return self.run_many([item])[0]

    def run_many(self, items: Sequence[WorkItem]) -> list[StageResult]:
        from mailbot.classify import message_text

        self.classifier.refresh()  # picks up a newly promoted head without a restart
        texts = [message_text(m.subject, m.new_text or m.text)
                 for m in (item.results["parse"] for item in items)]
        started = time.process_time()
        results = self.classifier.classify_many(texts)
        cpu_seconds = (time.process_time() - started) / max(1, len(items))
        cost = cpu_cost(cpu_seconds, self.cpu_hour_price)
        out = []
        for classification in results:
            details: dict[str, Any] = classification.to_json()
            details["cpu_seconds"] = round(cpu_seconds, 6)
            out.append(StageResult(
                "ok", value=classification, status=MessageStatus.CLASSIFIED, details=details,
                model=classification.model, model_version=classification.model_version,
                cost=cost,
            ))
        return out


class ExtractStage:
    """Order numbers, amounts, dates and contacts, with what the intent needs but lacks."""

    name = "extract"

    def __init__(self, schema: Any) -> None:
        self.schema = schema

    def run(self, item: WorkItem) -> StageResult:
        from mailbot.fields import extract_message

        message = item.results["parse"]
        classification = item.results.get("classify")
        intent = classification.intent.label if classification is not None else None
        _, extraction = extract_message(message, self.schema, intent=intent)
        details = {
            "fields": {name: [v.to_json() for v in values]
                       for name, values in extraction.fields.items()},
            "missing": list(extraction.missing),
            "rejected": [r.to_json() for r in extraction.rejected],
        }
        return StageResult("ok", value=extraction, details=details)


class DraftStage:
    """The reply from the intent's template, filled with the fields and policy passages."""

    name = "draft"

    def __init__(self, config: Config) -> None:
        from pathlib import Path

        from mailbot.draft.compose import DraftOptions
        from mailbot.draft.templates import ReplyTemplates

        self.config = config
        settings = config.drafts
        extra = [config.base_dir / Path(settings.templates_dir)] if settings.templates_dir else []
        self.templates = ReplyTemplates(extra)
        self.options = DraftOptions(
            company=settings.company, signature=settings.signature,
            signatures=dict(settings.signatures),
            from_name=settings.from_name, min_passage_score=settings.min_passage_score,
            html_alternative=settings.html_alternative,
        )

    def run(self, item: WorkItem) -> StageResult:
        from mailbot.db.drafts import DraftRecord
        from mailbot.draft.compose import NoDraft, compose_draft
        from mailbot.message import Address

        message = item.results["parse"]
        classification = item.results["classify"]
        sender = Address(self.options.from_name, self.config.reply_address(item.account))
        draft = compose_draft(
            message, classification.intent.label, classification.language, sender,
            self.templates, self.options, extraction=item.results.get("extract"),
            passages=item.results.get("retrieve") or (),
        )
        if isinstance(draft, NoDraft):
            return StageResult("skipped", reason=f"no draft: {draft.reason}", stop=True,
                               details={"reason": draft.reason})
        record = DraftRecord(
            token=draft.token, reply_message_id=draft.message_id, template=draft.template,
            language=draft.language, subject=draft.subject, body=draft.body, mime=draft.mime,
            fields=dict(draft.fields), passages=[dict(p) for p in draft.passages],
            gates=dict(draft.gates), model=draft.model, model_version=draft.template_version,
            needs_review=draft.needs_review, review_reasons=list(draft.review_reasons),
        )
        return StageResult(
            "ok", value=draft, status=MessageStatus.DRAFTED, details=draft.summary(),
            model=draft.model, model_version=draft.template_version, records=(record,),
        )


def build_stages(config: Config, database: Any = None) -> list[Any]:
    """The stages in order, as the configuration asks for them (models load here, once)."""
    stages: list[Any] = [ParseStage()]
    if not config.classifier.enabled:
        return stages
    from mailbot.classify import Classifier
    from mailbot.fields import build_schema

    stages.append(ClassifyStage(Classifier.from_config(config, database), config.cost.cpu_hour))
    stages.append(ExtractStage(build_schema(config.fields)))
    if config.drafts.enabled:
        stages.append(DraftStage(config))
    return stages
