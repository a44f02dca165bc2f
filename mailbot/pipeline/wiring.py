"""The pipeline's stages: parse, classify, extract, route, escalate and draft.

Each stage takes what earlier stages produced (`item.results[...]`) and returns a
`StageResult`; none opens a connection itself. What a stage needs from outside (the cloud
LLM client, the thread history, the budget) is handed to it when it is built, and what it
wants written (drafts, LLM calls, teacher labels) goes back as records for the runner.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mailbot.audit.cost import cpu_cost
from mailbot.db.models import MessageStatus
from mailbot.errors import ParseError
from mailbot.pipeline.runner import StageResult, WorkItem

if TYPE_CHECKING:
    from mailbot.classify import Classifier
    from mailbot.config import Config


class ParseStage:
    """Raw bytes to `InboundMessage`; auto-replies and unparsable mail stop here."""

    name = "parse"

    def run(self, item: WorkItem) -> StageResult:
        from mailbot.parse.mime import parse_message

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
            "hidden_chars": message.hidden_chars,
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

    def __init__(self, schema: Any, generator_extractor: Any = None) -> None:
        self.schema = schema
        # fields.use_generator: a GeneratorExtractor whose report goes into the audit event.
        self.generator_extractor = generator_extractor

    def run(self, item: WorkItem) -> StageResult:
        from mailbot.fields import extract_message, message_text

        message = item.results["parse"]
        classification = item.results.get("classify")
        intent = classification.intent.label if classification is not None else None
        report = None
        if self.generator_extractor is None:
            _, extraction = extract_message(message, self.schema, intent=intent)
        else:
            names = [message.from_addr.name] if message.from_addr and message.from_addr.name else []
            extraction, report = self.generator_extractor.extract_with_report(
                message_text(message), self.schema, intent=intent, reference=message.date,
                known_names=names)
        details: dict[str, Any] = {
            "fields": {name: [v.to_json() for v in values]
                       for name, values in extraction.fields.items()},
            "missing": list(extraction.missing),
            "rejected": [r.to_json() for r in extraction.rejected],
        }
        if report is None:
            return StageResult("ok", value=extraction, details=details)
        details["generator"] = report.to_json()
        return StageResult("ok", value=extraction, details=details, model=report.model,
                           model_version=report.model_version, tokens_in=report.prompt_tokens,
                           tokens_out=report.generated_tokens)


class DraftStage:
    """The reply: the intent's template on the SLM route, the cloud LLM's body on the LLM
    route; either way the body passes the safety checks before it becomes a draft."""

    name = "draft"

    def __init__(self, config: Config) -> None:
        from pathlib import Path

        from mailbot.compose.reply import DraftOptions
        from mailbot.compose.safety import SafetyChecker
        from mailbot.compose.templates import ReplyTemplates

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
        self.safety = SafetyChecker.from_config(config)

    def run(self, item: WorkItem) -> StageResult:
        from mailbot.compose.reply import TEMPLATE_MODEL, NoDraft, compose_draft
        from mailbot.compose.safety import ReplyContext
        from mailbot.db.drafts import DraftRecord
        from mailbot.parse.message import Address
        from mailbot.route import own_addresses

        message = item.results["parse"]
        classification = item.results["classify"]
        decision = item.results.get("route")
        written, model, source = self._written_body(item)
        route = decision.route if decision is not None else "slm"
        generated = item.results.get("generate")
        gates: dict[str, Any] = {}
        if generated is not None:
            from mailbot.compose.generator import draft_gates

            gates = draft_gates(generated, used=source == "generator", route=route)
        language = classification.language
        escalation = item.results.get("escalate")
        if language == "und" and escalation is not None and escalation.classification:
            language = escalation.classification.language
        sender = Address(self.options.from_name, self.config.reply_address(item.account))
        passages = item.results.get("retrieve") or ()
        draft = compose_draft(
            message, classification.intent.label, language, sender,
            self.templates, self.options, extraction=item.results.get("extract"),
            passages=passages, written_body=written, model=model or TEMPLATE_MODEL,
            gates=gates,
        )
        if isinstance(draft, NoDraft):
            return StageResult("skipped", reason=f"no draft: {draft.reason}", stop=True,
                               details={"reason": draft.reason})
        report = self.safety.check(draft.body, ReplyContext(
            message=message, extraction=item.results.get("extract"),
            passages=[getattr(p, "text", "") for p in passages],
            own_addresses=sorted({sender.email.lower(), *own_addresses(self.config)}),
            recipients=[draft.to.email], language=draft.language,
        ))
        if not report.passed:
            return self._held_back(decision, report, draft)
        version = draft.template_version
        if source == "generator" and generated is not None:
            version = generated.model_version
        record = DraftRecord(
            token=draft.token, reply_message_id=draft.message_id, template=draft.template,
            language=draft.language, subject=draft.subject, body=draft.body, mime=draft.mime,
            fields=dict(draft.fields), passages=[dict(p) for p in draft.passages],
            gates=dict(draft.gates), model=draft.model, model_version=version,
            needs_review=draft.needs_review, review_reasons=list(draft.review_reasons),
        )
        details = {**draft.summary(), "route": route, "model": draft.model,
                   "safety": report.to_json()}
        return StageResult(
            "ok", value=draft, status=MessageStatus.DRAFTED, details=details,
            model=draft.model, model_version=version, records=(record,),
        )

    def _written_body(self, item: WorkItem) -> tuple[str | None, str | None, str | None]:
        """A model-written body, its model and who wrote it ("llm" or "generator"): the cloud
        LLM's on the LLM route, else the generator's when it passed its quality gates;
        (None, None, None) for the template."""
        decision = item.results.get("route")
        escalation = item.results.get("escalate")
        if decision is not None and decision.route == "llm" and escalation is not None:
            return escalation.body, escalation.model, "llm"
        generated = item.results.get("generate")
        if generated is not None and getattr(generated, "passed", False):
            return generated.body, getattr(generated, "model", None), "generator"
        return None, None, None

    def _held_back(self, decision: Any, report: Any, draft: Any) -> StageResult:
        from mailbot.route import HUMAN, RouteDecision, RouteReason

        reason = RouteReason("unsafe_draft", f"draft held back: {report.summary()}", HUMAN,
                             {"violations": [v.to_json() for v in report.violations]})
        human = (decision or RouteDecision("slm")).with_reason(reason, route=HUMAN)
        details = {**human.to_json(), "safety": report.to_json(), "model": draft.model,
                   "template": draft.template, "held_body": draft.body}
        return StageResult("unsafe", value=human, status=MessageStatus.NEEDS_HUMAN,
                           reason=human.summary(), stop=True, details=details,
                           model=draft.model)


def build_stages(config: Config, database: Any = None, *, until: str | None = None
                 ) -> list[Any]:
    """The stages in order, as the configuration asks for them (models load here, once).

    With a database the router sees thread history and the cloud budget; `until` stops
    after the named stage (`mailbot route` stops after "route": no LLM call, no draft).
    """
    stages: list[Any] = [ParseStage()]
    if not config.classifier.enabled:
        return stages
    from mailbot.classify import Classifier
    from mailbot.fields import build_schema

    classifier = Classifier.from_config(config, database)
    stages.append(ClassifyStage(classifier, config.cost.cpu_hour))
    generator = _generator(config)
    extractor = None
    if config.fields.use_generator:
        from mailbot.fields.generator import build_generator_extractor

        extractor = build_generator_extractor(config, generator)
    stages.append(ExtractStage(build_schema(config.fields), extractor))
    if database is not None:
        from mailbot.kb.knowledge import KnowledgeBase
        from mailbot.kb.stage import RetrieveStage

        # The registry shares the loaded encoder with the classifier.
        knowledge_base = KnowledgeBase.from_config(config, database)
        stages.append(RetrieveStage(knowledge_base, config.kb.top_k))
    if config.drafts.enabled and config.drafts.use_generator:
        from mailbot.compose.generator import build_generate_stage

        # Before the router, so that a body failing its gates can be escalated (the
        # generation_failed reason); the draft stage falls back to the template otherwise.
        stages.append(build_generate_stage(config, generator))
    if config.route.enabled:
        stages.extend(_routing_stages(config, database, classifier, until=until))
    if until is not None:
        names = [s.name for s in stages]
        return stages[: names.index(until) + 1] if until in names else stages
    if config.drafts.enabled:
        stages.append(DraftStage(config))
    return stages


def _generator(config: Config) -> Any:
    """The configured generator when drafting or extraction uses it (loaded once), else None."""
    if not (config.fields.use_generator or (config.drafts.enabled and config.drafts.use_generator)):
        return None
    from mailbot.engine import ModelRegistry

    return ModelRegistry(config.models, config.models_path).generator()


def _routing_stages(config: Config, database: Any, classifier: Any, *, until: str | None
                    ) -> list[Any]:
    from mailbot.llm import LLMClient
    from mailbot.route import BudgetGate, EscalateStage, LedgerLookup, RouteStage

    budget = BudgetGate(database, config.cost) if database is not None else None
    ledger = LedgerLookup(database) if database is not None else None
    stages: list[Any] = [RouteStage(config, llm_available=config.llm.enabled, ledger=ledger,
                                    budget=budget)]
    if until == "route" or not config.llm.enabled:
        return stages
    client = LLMClient.from_config(config)
    assert client is not None  # llm.enabled

    def labels() -> list[str]:
        return list(config.classifier.intents) or list(classifier.heads["intent"].labels)

    stages.append(EscalateStage(config, client, labels=labels, budget=budget))
    return stages
