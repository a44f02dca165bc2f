"""The compose stage: the reply as a threaded MIME message, checked for safety.

On the small model's route the body is the intent's template (or the generator's, when it
passed its gates); on the cloud LLM's route it is the LLM's, inside our layout. Either way
the body passes the safety checks; whether the message then gets its draft or waits for a
person is for `mailbot.route.outcome` to say, not this stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailbot.compose.generator import draft_gates
from mailbot.compose.reply import TEMPLATE_MODEL, DraftOptions, NoDraft, compose_draft
from mailbot.compose.safety import ReplyContext, SafetyChecker
from mailbot.compose.templates import ReplyTemplates
from mailbot.parse.message import Address
from mailbot.pipeline.case import Case, Step
from mailbot.route.decision import LLM, SLM
from mailbot.route.stage import own_addresses

if TYPE_CHECKING:
    from mailbot.config import Config


class ComposeStage:
    """Writes the draft of a message routed to the small model, or answered by the LLM."""

    name = "draft"

    def __init__(self, config: Config) -> None:
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
        self.own_addresses = own_addresses(config)

    def wants(self, case: Case) -> bool:
        """Whether this case is ready for a draft: routed to the small model, or answered by
        the cloud LLM."""
        decision = case.decision
        if decision is None:
            return True  # routing switched off: every classified message gets its draft
        if decision.route == SLM:
            return True
        return decision.route == LLM and case.escalation is not None and case.escalation.answered

    def run(self, case: Case) -> Step:
        if not self.wants(case):
            return Step(case, "not_needed")
        message = case.parsed()
        classification = case.classified()
        written, model, source = self._written_body(case)
        route = case.decision.route if case.decision is not None else SLM
        gates: dict[str, Any] = {}
        if case.generated is not None:
            gates = draft_gates(case.generated, used=source == "generator", route=route)
        intent, language = classification.intent.label, classification.language
        escalation = case.escalation
        if escalation is not None and escalation.classification is not None:
            intent = escalation.classification.intent
            if language == "und":
                language = escalation.classification.language
        sender = Address(self.options.from_name, self.config.reply_address(case.account))
        draft = compose_draft(
            message, intent, language, sender, self.templates, self.options,
            extraction=case.extraction, passages=case.passages, written_body=written,
            model=model or TEMPLATE_MODEL, gates=gates,
        )
        if isinstance(draft, NoDraft):
            return Step(case.with_(no_draft=draft.reason), "skipped",
                        reason=f"no draft: {draft.reason}", details={"reason": draft.reason})
        report = self.safety.check(draft.body, ReplyContext(
            message=message, extraction=case.extraction,
            passages=[p.text for p in case.passages],
            own_addresses=sorted({sender.email.lower(), *self.own_addresses}),
            recipients=[draft.to.email], language=draft.language,
        ))
        version = draft.template_version
        if source == "generator" and case.generated is not None:
            version = case.generated.model_version
        details = {**_summary(draft.summary()), "route": route, "model": draft.model,
                   "safety": {"passed": report.passed,
                              "violations": [v.check for v in report.violations]}}
        facts: dict[str, Any] = {}
        if not report.passed:
            facts["held_draft"] = {"body": draft.body, "safety": report.to_json(),
                                   "template": draft.template, "model": draft.model}
        return Step(case.with_(draft=draft, safety=report), "ok" if report.passed else "unsafe",
                    details=details, facts=facts, model=draft.model, model_version=version)

    def _written_body(self, case: Case) -> tuple[str | None, str | None, str | None]:
        """A model-written body, its model and who wrote it ("llm" or "generator"): the cloud
        LLM's on the LLM route, else the generator's when it passed its quality gates;
        (None, None, None) for the template."""
        escalation = case.escalation
        if escalation is not None and escalation.answered:
            return escalation.body, escalation.model, "llm"
        generated = case.generated
        if generated is not None and generated.passed:
            return generated.body, generated.model, "generator"
        return None, None, None


def _summary(summary: dict[str, Any]) -> dict[str, Any]:
    # The draft's field values are personal data: the drafts table has them, events do not.
    return {**summary, "fields": sorted(summary.get("fields", {}))}
