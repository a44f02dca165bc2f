"""The pipeline's stages: parse, classify (extract, route and draft plug in after them).

Each stage takes what earlier stages produced (`item.results[...]`) and returns a
`StageResult`; none touches the network or the database itself.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

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

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

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
        out = []
        for classification in results:
            details: dict[str, Any] = classification.to_json()
            details["cpu_seconds"] = round(cpu_seconds, 6)
            out.append(StageResult(
                "ok", value=classification, status=MessageStatus.CLASSIFIED, details=details,
                model=classification.model, model_version=classification.model_version,
            ))
        return out


def build_stages(config: Config, database: Any = None) -> list[Any]:
    """The stages in order, as the configuration asks for them (models load here, once)."""
    stages: list[Any] = [ParseStage()]
    if config.classifier.enabled:
        from mailbot.classify import Classifier

        stages.append(ClassifyStage(Classifier.from_config(config, database)))
    return stages
